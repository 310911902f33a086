"""Data classes of stored fields (数据分类分级): who sees a field and how it leaves the site.

Xiamen's cell-industry regulation Art. 10 asks for cell and medical data to be classified and
graded; GB/T 39725-2020 §5 grades health data by the harm its disclosure does. A field that
holds personal or sensitive data carries its class in the column's ``info`` (``classified``
below); the class and the per-field export rule decide

* which roles see it in clear (``clear_roles``; everyone else sees the pseudonym or nothing),
* whether an exchange package carries it in clear, pseudonymised, or leaves it out.

``docs/data-protection.md`` lists every tagged field; its table is generated from these tags
(:func:`classified_fields`) and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData

#: least to most protected
CLASSES = ("public", "internal", "sensitive", "personal")
EXPORT_MODES = ("clear", "pseudonymised", "omitted")
#: the permission (a role) that shows personal fields in clear: never implied by another role
REVEAL_ROLE = "identity_reveal"


@dataclass(frozen=True)
class FieldClass:
    """How one stored field is protected."""

    table: str
    column: str
    level: str
    export: str
    #: roles that see the field in clear ("*": every logged-in role)
    clear_roles: tuple[str, ...]
    why: str


def classified(
    level: str, *, export: str = "clear", clear_roles: tuple[str, ...] = ("*",), why: str
) -> dict[str, Any]:
    """The ``info`` of a classified column (``sa_column_kwargs={"info": classified(...)}``)."""
    if level not in CLASSES or export not in EXPORT_MODES:
        raise ValueError(f"unknown class {level!r} or export mode {export!r}")
    return {"data_class": level, "export": export, "clear_roles": clear_roles, "why": why}


def classified_fields(metadata: MetaData) -> list[FieldClass]:
    """Every tagged column of the schema, by table and column name."""
    found = []
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        for column in table.columns:
            info = column.info
            if "data_class" in info:
                found.append(
                    FieldClass(
                        table.name,
                        column.name,
                        info["data_class"],
                        info["export"],
                        tuple(info["clear_roles"]),
                        info["why"],
                    )
                )
    return found


def markdown_table(fields: list[FieldClass]) -> str:
    """The table of docs/data-protection.md, generated from the tags."""
    lines = [
        "| table | field | class | export | seen in clear by | why |",
        "|---|---|---|---|---|---|",
    ]
    for f in fields:
        roles = "every role" if f.clear_roles == ("*",) else ", ".join(f.clear_roles) or "nobody"
        lines.append(f"| `{f.table}` | `{f.column}` | {f.level} | {f.export} | {roles} | {f.why} |")
    return "\n".join(lines) + "\n"
