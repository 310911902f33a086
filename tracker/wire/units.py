"""The application's only pint registry, and cached conversions to canonical units.

Canonical units: particles/m³, Pa, °C, %RH (DESIGN §5). A pint conversion costs tens of
microseconds, so each (quantity, unit text) pair is resolved once into a linear
``value * scale + offset`` and reused for every reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pint

ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
Q_ = ureg.Quantity

#: Canonical unit per physical quantity the wire carries.
CANONICAL = {
    "pressure": "Pa",
    "temperature": "degC",
    "humidity": "percent",
    "volume": "m**3",
}
_DIMENSION = {
    "pressure": "[pressure]",
    "temperature": "[temperature]",
    "humidity": "[]",
    "volume": "[length] ** 3",
}
#: Spellings monitors use that pint does not know.
_ALIASES = {
    "%rh": "percent",
    "rh": "percent",
    "%": "percent",
    "°c": "degC",
    "°f": "degF",
    "ft3": "ft**3",
    "m3": "m**3",
    "inwc": "inH2O",
    "in_wc": "inH2O",
    "mmwc": "mmH2O",
}


class UnitProblem(ValueError):
    """A unit pint does not know, or one of the wrong dimension for its quantity."""


@dataclass(frozen=True, slots=True)
class Converter:
    """Linear map from a source unit to the canonical one (offset for temperatures)."""

    scale: float
    offset: float = 0.0

    def __call__(self, value: float) -> float:
        return value * self.scale + self.offset


@lru_cache(maxsize=1024)
def converter(quantity: str, unit: str) -> Converter:
    """Resolve ``unit`` for ``quantity`` once; raise :class:`UnitProblem` with a clear reason."""
    target = CANONICAL[quantity]
    text = _ALIASES.get(unit.strip().lower(), unit.strip())
    if not text:
        raise UnitProblem(f"empty unit for {quantity}")
    try:
        parsed = ureg.parse_units(text)
    except (
        pint.UndefinedUnitError,
        pint.errors.DefinitionSyntaxError,
        AttributeError,
        ValueError,
        TypeError,
        AssertionError,
    ) as exc:
        raise UnitProblem(f"unknown unit {unit!r} for {quantity}: {exc}") from None
    if not parsed.dimensionality == ureg.get_dimensionality(_DIMENSION[quantity]):
        raise UnitProblem(
            f"unit {unit!r} is not a {quantity} unit "
            f"(dimension {parsed.dimensionality}, expected {_DIMENSION[quantity]})"
        )
    if quantity == "humidity" and text != "percent":
        # dimensionless covers angles and counts too: only percent means %RH
        raise UnitProblem(f"unit {unit!r} is not a relative-humidity unit (use percent)")
    try:
        zero = Q_(0.0, parsed).to(target).magnitude
        one = Q_(1.0, parsed).to(target).magnitude
    except pint.PintError as exc:  # e.g. delta_degC: a temperature *difference*
        raise UnitProblem(f"unit {unit!r} cannot be converted to {target}: {exc}") from None
    return Converter(scale=float(one - zero), offset=float(zero))
