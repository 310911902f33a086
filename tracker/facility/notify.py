"""``[[notify]]`` rules: who is alarmed about which excursions (issue 16, DESIGN §10).

The rules live in the facility file so a change of who is alarmed is versioned and approved
by QA like any evaluation setting. Targets are Apprise URLs; a secret in one is written as a
``${TRACKER_…}`` placeholder and filled from the environment only when a message is sent, so
neither the file, the database nor the delivery log holds it.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from tracker.core.errors import FacilityFileError, Reason

#: the excursion vocabulary of docs/limits.md: what a rule without ``types`` is about
EXCURSION_TYPES = ("limit", "data_gap", "recurrence", "adverse_trend", "recovery")
#: system alarms (``tracker.monitoring.health``): only rules that name ``system`` receive them, so a
#: rule written before they existed does not start paging people about the ingester
SYSTEM = "system"
#: a forecast warning (docs/trending.md) is not a breach: a rule announces it only when it names it
PREDICTED = "predicted"
#: viable results (``tracker.monitoring.viable``, docs/viable.md): like system alarms, only rules
#: that name them receive them, so an existing file's rules (and digest) stay as they were
VIABLE_TYPES = ("viable", "viable_trend")
#: every type a rule may name; a rule naming another type is refused
RULE_TYPES = (*EXCURSION_TYPES, *VIABLE_TYPES, SYSTEM, PREDICTED)
LEVELS = ("alert", "action")
GRADES = ("A", "B", "C", "D", "CNC")
LANGUAGES = ("zh-CN", "en")
NOTIFY_KEYS = (
    "name",
    "types",
    "levels",
    "grades",
    "rooms",
    "targets",
    "escalate_after_s",
    "escalate_to",
    "repeat_every_s",
    "also",
)
#: what else a rule may tell its targets of, once the alarm is over (``also``)
ALSO = ("acknowledged", "closed")
ROTA_KEYS = ("name", "duty", "otherwise")
DUTY_KEYS = ("who", "days", "hours", "targets")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: a target that names a rota: ``rota:QA on call``, resolved to whoever is on duty when queued
ROTA_PREFIX = "rota:"
#: a placeholder names a TRACKER_ variable: nothing else of the environment can leak into a URL
PLACEHOLDER = re.compile(r"\$\{(TRACKER_[A-Z0-9_]+)\}")
#: a day: a reminder or escalation later than that is not an alarm
MAX_DELAY_S = 86_400.0


@dataclass(frozen=True)
class NotifyRule:
    name: str
    targets: tuple[str, ...]
    types: tuple[str, ...] = EXCURSION_TYPES
    levels: tuple[str, ...] = LEVELS
    grades: tuple[str, ...] = ()
    rooms: tuple[str, ...] = ()
    escalate_after_s: float = 0.0
    escalate_to: tuple[str, ...] = ()
    repeat_every_s: float = 0.0
    #: also tell the targets when the excursion is acknowledged and/or closed (``ALSO``)
    also: tuple[str, ...] = ()

    def matches(self, *, type: str, level: str, grade: str, room: str) -> bool:
        """Whether an excursion of this type, level and place is this rule's business.

        A system alarm of no room (the ingester, the broker, the database, a target) concerns
        every room, so the place filter lets it through."""
        if type not in self.types or level not in self.levels:
            return False
        if (not self.grades and not self.rooms) or (type == SYSTEM and not room):
            return True
        return grade in self.grades or room in self.rooms

    def as_dict(self) -> dict:
        """Stored with the revision; ``also`` only when set, so a rule written before it existed
        reads (and digests) as it did."""
        stored = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not self.also:
            stored.pop("also")
        return stored

    @classmethod
    def from_dict(cls, d: dict) -> NotifyRule:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _refuse(where: str, en: str, zh: str) -> FacilityFileError:
    return FacilityFileError(Reason(f"{where}: {en}", f"{where}：{zh}"))


def _words(entry: dict, key: str, where: str, allowed: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """A list of strings, each from ``allowed`` when given; None when the key is absent."""
    if key not in entry:
        return None
    value = entry[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _refuse(where, f"{key} must be a non-empty list of strings", f"{key} 须为非空字符串列表")
    bad = [v for v in value if allowed is not None and v not in allowed]
    if bad:
        raise _refuse(
            where,
            f"{key}: unknown {', '.join(bad)} (allowed: {', '.join(allowed or ())})",
            f"{key}：未知的 {', '.join(bad)}（可选：{', '.join(allowed or ())}）",
        )
    return tuple(value)


def _target(url: str, where: str) -> str:
    """Refuse a target that holds a secret in clear text or names no scheme."""
    if url.startswith(ROTA_PREFIX) and url[len(ROTA_PREFIX) :].strip():
        return url  # checked against the [[rota]] names by parse_rules
    if "://" not in url:
        raise _refuse(where, f"target '{url}' is not an Apprise URL", f"目标 '{url}' 不是 Apprise URL")
    stripped = PLACEHOLDER.sub("", url)
    if "${" in stripped:
        raise _refuse(
            where,
            "a placeholder must name a TRACKER_ variable: ${TRACKER_…}",
            "占位符须为 TRACKER_ 开头的环境变量：${TRACKER_…}",
        )
    if urlsplit(stripped).password:
        raise _refuse(
            where,
            "a password in a target URL must come from the environment (${TRACKER_…})",
            "目标 URL 中的密码须来自环境变量（${TRACKER_…}），不得写在文件中",
        )
    return url


def _delay(entry: dict, key: str, where: str) -> float:
    value = entry.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_DELAY_S:
        raise _refuse(where, f"{key} must be 0 … {MAX_DELAY_S:g} s", f"{key} 须在 0 … {MAX_DELAY_S:g} 秒之间")
    return float(value)


def parse_rule(i: int, entry: dict, rooms: set[str]) -> NotifyRule:
    """One ``[[notify]]`` entry, checked: names, vocabularies, rooms, targets and delays."""
    where = f"notify[{i}]"
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _refuse(where, "name is required", "须填写 name")
    targets = _words(entry, "targets", where, None)
    if not targets:
        raise _refuse(where, "targets is required", "须填写 targets")
    room_codes = _words(entry, "rooms", where, tuple(sorted(rooms))) or ()
    escalate_to = tuple(_target(u, where) for u in (_words(entry, "escalate_to", where, None) or ()))
    escalate_after = _delay(entry, "escalate_after_s", where)
    if bool(escalate_to) != bool(escalate_after):
        raise _refuse(
            where,
            "escalate_after_s and escalate_to go together",
            "escalate_after_s 与 escalate_to 须同时填写",
        )
    return NotifyRule(
        name=name.strip(),
        targets=tuple(_target(u, where) for u in targets),
        types=_words(entry, "types", where, RULE_TYPES) or EXCURSION_TYPES,
        levels=_words(entry, "levels", where, LEVELS) or LEVELS,
        grades=_words(entry, "grades", where, GRADES) or (),
        rooms=room_codes,
        escalate_after_s=escalate_after,
        escalate_to=escalate_to,
        repeat_every_s=_delay(entry, "repeat_every_s", where),
        also=_words(entry, "also", where, ALSO) or (),
    )


def parse_rules(entries: list[dict], rooms: set[str], rotas: tuple[Rota, ...] = ()) -> tuple[NotifyRule, ...]:
    rules = tuple(parse_rule(i, e, rooms) for i, e in enumerate(entries))
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _refuse(
            "[[notify]]", f"duplicate rule names: {', '.join(dup)}", f"规则名称重复：{', '.join(dup)}"
        )
    known = {r.name for r in rotas}
    for i, rule in enumerate(rules):
        for t in (*rule.targets, *rule.escalate_to):
            if t.startswith(ROTA_PREFIX) and t[len(ROTA_PREFIX) :] not in known:
                raise _refuse(
                    f"notify[{i}]",
                    f"target '{t}' names no [[rota]] (known: {', '.join(sorted(known)) or 'none'})",
                    f"目标 '{t}' 未对应任何 [[rota]]（已定义：{', '.join(sorted(known)) or '无'}）",
                )
    return rules


# --------------------------------------------------------------------------- on-call rota


@dataclass(frozen=True)
class Duty:
    """Who is on duty on which days (site-local) between which hours; ``end`` before ``start``
    wraps past midnight (a night shift belongs to the day it starts on)."""

    who: str
    targets: tuple[str, ...]
    start: str = "00:00"
    end: str = "24:00"
    days: tuple[str, ...] = DAYS

    def covers(self, local: datetime) -> bool:
        """Whether this duty holds at ``local`` (an aware time in the site's zone)."""
        minute = local.hour * 60 + local.minute
        start, end = _minutes(self.start), _minutes(self.end)
        today = DAYS[local.weekday()]
        yesterday = DAYS[(local.weekday() - 1) % 7]
        if start < end:
            return today in self.days and start <= minute < end
        return (today in self.days and minute >= start) or (yesterday in self.days and minute < end)


@dataclass(frozen=True)
class Rota:
    """An on-call rota: a rule's target ``rota:NAME`` goes to whoever is on duty when the
    message is queued; ``otherwise`` when nobody is (a rota with holes still reaches someone)."""

    name: str
    duties: tuple[Duty, ...]
    otherwise: tuple[str, ...] = ()

    def on_duty(self, at: datetime, timezone: str) -> tuple[Duty, ...]:
        local = at.astimezone(ZoneInfo(timezone))
        return tuple(d for d in self.duties if d.covers(local))

    def targets_at(self, at: datetime, timezone: str) -> tuple[str, ...]:
        """The targets to call at ``at``: every duty holding then, else ``otherwise``."""
        duties = self.on_duty(at, timezone)
        return tuple(t for d in duties for t in d.targets) if duties else self.otherwise

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "duties": [
                {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(d).items()} for d in self.duties
            ],
            "otherwise": list(self.otherwise),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Rota:
        duties = tuple(
            Duty(**{k: tuple(v) if isinstance(v, list) else v for k, v in x.items()}) for x in d["duties"]
        )
        return cls(name=d["name"], duties=duties, otherwise=tuple(d.get("otherwise", ())))


def _minutes(hhmm: str) -> int:
    hours, _, minutes = hhmm.partition(":")
    return int(hours) * 60 + int(minutes)


HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$")


def _duty(where: str, entry: object) -> Duty:
    if not isinstance(entry, dict):
        raise _refuse(
            where, "a duty is a table {who, days, hours, targets}", "值班项须为表 {who, days, hours, targets}"
        )
    unknown = sorted(set(entry) - set(DUTY_KEYS))
    if unknown:
        raise _refuse(
            where, f"unknown key '{unknown[0]}' (allowed: {', '.join(DUTY_KEYS)})", f"未知的键 '{unknown[0]}'"
        )
    who = entry.get("who")
    if not isinstance(who, str) or not who.strip():
        raise _refuse(where, "who is required", "须填写 who")
    hours = entry.get("hours", "00:00-24:00")
    if not isinstance(hours, str) or not HOURS.match(hours) or hours[:5] == hours[6:]:
        raise _refuse(
            where,
            f"hours must read HH:MM-HH:MM (e.g. 20:00-08:00), not {hours!r}",
            f"hours 须写作 HH:MM-HH:MM（如 20:00-08:00），而非 {hours!r}",
        )
    targets = _words(entry, "targets", where, None)
    if not targets:
        raise _refuse(where, "targets is required", "须填写 targets")
    return Duty(
        who=who.strip(),
        targets=tuple(_target(t, where) for t in targets),
        start=hours[:5],
        end=hours[6:],
        days=_words(entry, "days", where, DAYS) or DAYS,
    )


def parse_rotas(entries: list[dict]) -> tuple[Rota, ...]:
    """``[[rota]]`` entries: each a name, its duties and whom to call when nobody is on duty."""
    rotas = []
    for i, entry in enumerate(entries):
        where = f"rota[{i}]"
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _refuse(where, "name is required", "须填写 name")
        duties = entry.get("duty", [])
        if not isinstance(duties, list) or not duties:
            raise _refuse(where, "at least one [[rota.duty]] is required", "须至少有一个 [[rota.duty]]")
        rotas.append(
            Rota(
                name=name.strip(),
                duties=tuple(_duty(f"{where}.duty[{j}]", d) for j, d in enumerate(duties)),
                otherwise=tuple(_target(u, where) for u in (_words(entry, "otherwise", where, None) or ())),
            )
        )
    names = [r.name for r in rotas]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _refuse(
            "[[rota]]", f"duplicate rota names: {', '.join(dup)}", f"值班表名称重复：{', '.join(dup)}"
        )
    return tuple(rotas)


def expand_targets(
    targets: tuple[str, ...], rotas: dict[str, Rota], at: datetime, timezone: str
) -> list[tuple[str, str]]:
    """``(index, url)`` per target: a rota target becomes the targets on duty at ``at``
    (indices ``i.j``, so the outbox key stays one per person called)."""
    out: list[tuple[str, str]] = []
    for i, t in enumerate(targets):
        if t.startswith(ROTA_PREFIX):
            rota = rotas.get(t[len(ROTA_PREFIX) :])
            on_duty = rota.targets_at(at, timezone) if rota else ()
            out += [(f"{i}.{j}", u) for j, u in enumerate(on_duty)]
        else:
            out.append((str(i), t))
    return out


def fill_secrets(url: str, environ: dict[str, str] | None = None) -> str:
    """The URL with each ``${TRACKER_…}`` filled from the environment; refused when one is unset."""
    env = os.environ if environ is None else environ

    def one(m: re.Match) -> str:
        if m.group(1) not in env:
            raise KeyError(m.group(1))
        return env[m.group(1)]

    return PLACEHOLDER.sub(one, url)


def redact(url: str) -> str:
    """The URL as the delivery log shows it: placeholders kept, any user info's password hidden."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head, slash, tail = rest.partition("/")
    if "@" in head:
        user, _, host = head.rpartition("@")
        head = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else head
    return f"{scheme}://{head}{slash}{tail}"
