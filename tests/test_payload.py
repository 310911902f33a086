"""Wire contract v1: the pure parser, unit normalisation and every reason code."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.factories import T0, iso, particles, scalar, topic
from tracker.wire.payload import KnownMonitor, PayloadRejected, QuarantineCode, parse_reading, parse_status
from tracker.wire.units import converter

MONITORS = {
    ("T-SITE", "T-B1-PC"): KnownMonitor("T-SITE", "T-B1", "T-B1-PC", "particles", ("0.5", "5.0")),
    ("T-SITE", "T-B1-DP"): KnownMonitor("T-SITE", "T-B1", "T-B1-DP", "pressure"),
    ("T-SITE", "T-B1-T"): KnownMonitor("T-SITE", "T-B1", "T-B1-T", "temperature"),
    ("T-SITE", "T-B1-H"): KnownMonitor("T-SITE", "T-B1", "T-B1-H", "humidity"),
}


class Directory:
    def lookup(self, site: str, code: str) -> KnownMonitor | None:
        return MONITORS.get((site, code))


def parse(payload: bytes, *, t: str = topic("T-B1", "T-B1-PC")):
    return parse_reading(t, payload, T0 + timedelta(seconds=5), Directory())


def rejected(payload: bytes, **kw) -> PayloadRejected:
    with pytest.raises(PayloadRejected) as info:
        parse(payload, **kw)
    return info.value


def test_particles_normalised_to_per_cubic_metre() -> None:
    r = parse(particles(seq=7, ts=T0, c05=17, c50=2, volume=28.3, unit="L"))
    assert r.values == {"0.5": pytest.approx(600.707, abs=1e-3), "5.0": pytest.approx(70.671, abs=1e-3)}
    assert r.seq == 7
    assert r.event_time == T0
    assert r.status == "ok"


@pytest.mark.parametrize(
    ("volume", "unit", "per_m3_for_100"),
    [
        (1.0, "ft^3", 100 * 35.3147),
        (1.0, "ft3", 100 * 35.3147),
        (0.1, "m^3", 1000.0),
        (100.0, "L", 1000.0),
        (28.316846592, "liter", 100 * 35.3147),
    ],
)
def test_sample_volume_units(volume: float, unit: str, per_m3_for_100: float) -> None:
    r = parse(particles(seq=1, ts=T0, c05=100, c50=0, volume=volume, unit=unit))
    assert r.values["0.5"] == pytest.approx(per_m3_for_100, rel=1e-5)


@pytest.mark.parametrize(
    ("kind", "monitor", "value", "unit", "canonical"),
    [
        ("pressure", "T-B1-DP", 15.0, "Pa", 15.0),
        ("pressure", "T-B1-DP", 0.052, "inH2O", 12.9526),  # 1 inH2O = 249.089 Pa
        ("pressure", "T-B1-DP", 1.5, "mmH2O", 14.7100),  # 1 mmH2O = 9.80665 Pa
        ("pressure", "T-B1-DP", 0.15, "hPa", 15.0),
        ("pressure", "T-B1-DP", 0.15, "mbar", 15.0),
        ("temperature", "T-B1-T", 71.6, "degF", 22.0),
        ("temperature", "T-B1-T", 295.15, "K", 22.0),
        ("temperature", "T-B1-T", 22.0, "degC", 22.0),
        ("humidity", "T-B1-H", 52.0, "percent", 52.0),
        ("humidity", "T-B1-H", 52.0, "%RH", 52.0),
    ],
)
def test_scalar_units(kind: str, monitor: str, value: float, unit: str, canonical: float) -> None:
    r = parse(
        scalar(monitor=monitor, kind=kind, seq=1, ts=T0, value=value, unit=unit), t=topic("T-B1", monitor)
    )
    assert r.values[""] == pytest.approx(canonical, abs=1e-4)


def test_conversion_factor_is_computed_once() -> None:
    converter.cache_clear()
    for _ in range(100):
        converter("pressure", "inH2O")
    assert converter.cache_info().misses == 1


def test_offset_timestamp_normalised_to_utc() -> None:
    payload = json.loads(particles(seq=1, ts=T0, c05=1))
    payload["ts"] = "2026-11-20T08:00:00+08:00"
    assert parse(json.dumps(payload).encode()).event_time == T0


@pytest.mark.parametrize(
    ("payload", "reason", "fragment"),
    [
        (b'{"schema": "gmp.reading/1", "monitor": ', QuarantineCode.BAD_JSON, "JSON"),
        (b"\xff\xfe\x00garbage", QuarantineCode.BAD_JSON, "JSON"),
        (b"[1, 2, 3]", QuarantineCode.SCHEMA, ""),
        (
            json.dumps(
                {
                    "schema": "gmp.reading/1",
                    "monitor": "T-B1-PC",
                    "ts": iso(T0),
                    "kind": "particles",
                    "sample": {"volume": 28.3, "unit": "L"},
                    "counts": {"0.5": 1, "5.0": 0},
                }
            ).encode(),
            QuarantineCode.SCHEMA,
            "seq",
        ),
        (
            json.dumps(
                {
                    "schema": "gmp.reading/2",
                    "monitor": "T-B1-PC",
                    "seq": 1,
                    "ts": iso(T0),
                    "kind": "particles",
                }
            ).encode(),
            QuarantineCode.SCHEMA,
            "schema",
        ),
        (particles(seq=1, ts=T0, c05=1).replace(b'Z"', b'"'), QuarantineCode.SCHEMA, "offset"),
        (particles(seq=1, ts=T0, c05=1, unit="furlong"), QuarantineCode.BAD_UNIT, "furlong"),
        (particles(seq=1, ts=T0, c05=1, unit="kg"), QuarantineCode.BAD_UNIT, "not a volume"),
        (particles(seq=1, ts=T0, c05=-4), QuarantineCode.OUT_OF_RANGE, "negative"),
        (particles(seq=1, ts=T0, c05=3, c50=5), QuarantineCode.OUT_OF_RANGE, "cumulative"),
        (particles(seq=1, ts=T0, c05=3, volume=0), QuarantineCode.OUT_OF_RANGE, "not positive"),
        (particles(seq=1, ts=T0 + timedelta(days=1), c05=1), QuarantineCode.FUTURE_TIMESTAMP, "ahead"),
        (b" " * 20000, QuarantineCode.TOO_LARGE, "20000 bytes"),
    ],
)
def test_rejections_carry_stable_reason(payload: bytes, reason: QuarantineCode, fragment: str) -> None:
    err = rejected(payload)
    assert err.reason is reason
    assert fragment in err.detail


def test_unknown_monitor() -> None:
    err = rejected(particles(monitor="ZZ-GHOST", seq=1, ts=T0, c05=1), t=topic("T-B1", "ZZ-GHOST"))
    assert err.reason is QuarantineCode.UNKNOWN_MONITOR
    assert "ZZ-GHOST" in err.detail


def test_room_mismatch_registry_decides() -> None:
    err = rejected(particles(seq=1, ts=T0, c05=1), t=topic("T-C1", "T-B1-PC"))
    assert err.reason is QuarantineCode.ROOM_MISMATCH
    assert "registered in room T-B1" in err.detail
    assert "T-C1" in err.detail


def test_kind_and_monitor_disagreements_are_schema_errors() -> None:
    wrong_kind = scalar(monitor="T-B1-PC", kind="pressure", seq=1, ts=T0, value=1, unit="Pa")
    assert rejected(wrong_kind).reason is QuarantineCode.SCHEMA
    other_monitor = particles(monitor="T-B1-PC", seq=1, ts=T0, c05=1)
    assert rejected(other_monitor, t=topic("T-B1", "T-B1-DP")).reason is QuarantineCode.SCHEMA


def test_impossible_humidity_and_pressure_units() -> None:
    humid = scalar(monitor="T-B1-H", kind="humidity", seq=1, ts=T0, value=140, unit="percent")
    assert rejected(humid, t=topic("T-B1", "T-B1-H")).reason is QuarantineCode.OUT_OF_RANGE
    dp = scalar(monitor="T-B1-DP", kind="pressure", seq=1, ts=T0, value=15, unit="degC")
    assert rejected(dp, t=topic("T-B1", "T-B1-DP")).reason is QuarantineCode.BAD_UNIT


def test_non_ok_status_is_kept() -> None:
    r = parse(particles(seq=3, ts=T0, c05=99999, status="maintenance"))
    assert r.status == "maintenance"


def test_digest_tells_duplicates_from_reused_seq() -> None:
    a = parse(particles(seq=5, ts=T0, c05=10))
    b = parse(particles(seq=5, ts=T0, c05=10))
    c = parse(particles(seq=5, ts=T0 + timedelta(minutes=1), c05=10))
    assert a.digest == b.digest != c.digest


def test_status_messages() -> None:
    s = parse_status(topic("T-B1", "T-B1-PC") + "/status", b"offline", Directory())
    assert s.online is False
    assert s.monitor.code == "T-B1-PC"
    with pytest.raises(PayloadRejected) as info:
        parse_status(topic("T-B1", "T-B1-PC") + "/status", b"sleepy", Directory())
    assert info.value.reason is QuarantineCode.SCHEMA


@pytest.mark.parametrize(
    ("payload", "topic_monitor", "reason", "fragment"),
    [
        (
            scalar(monitor="T-B1-T", kind="temperature", seq=1, ts=T0, value=2, unit="delta_degC"),
            "T-B1-T",
            QuarantineCode.BAD_UNIT,
            "cannot be converted",
        ),
        (
            scalar(monitor="T-B1-H", kind="humidity", seq=1, ts=T0, value=38, unit="degree"),
            "T-B1-H",
            QuarantineCode.BAD_UNIT,
            "relative-humidity",
        ),
        (
            particles(seq=1, ts=T0, c05=1).replace(b'"5.0": 0', b'"0.50": 0'),
            "T-B1-PC",
            QuarantineCode.SCHEMA,
            "twice",
        ),
        (
            particles(seq=1, ts=T0, c05=1, volume=1e-320),
            "T-B1-PC",
            QuarantineCode.OUT_OF_RANGE,
            "not positive",
        ),
        (particles(seq=1, ts=T0.replace(year=1970), c05=1), "T-B1-PC", QuarantineCode.SCHEMA, "clock"),
        (
            particles(monitor="T-B1-PC\u0000", seq=1, ts=T0, c05=1),
            "T-B1-PC",
            QuarantineCode.SCHEMA,
            "monitor",
        ),
    ],
)
def test_review_findings_are_refused(
    payload: bytes, topic_monitor: str, reason: QuarantineCode, fragment: str
) -> None:
    err = rejected(payload, t=topic("T-B1", topic_monitor))
    assert err.reason is reason
    assert fragment in err.detail
    assert "\x00" not in err.detail


def test_extra_particle_channels_stay_in_the_raw_payload_only() -> None:
    payload = json.loads(particles(seq=1, ts=T0, c05=10, c50=1))
    payload["counts"]["1.0"] = 4
    r = parse(json.dumps(payload).encode())
    assert set(r.values) == {"0.5", "5.0"}
