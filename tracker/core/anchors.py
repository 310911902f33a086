"""Checkpoints of the audit chain kept outside the database (``tracker audit anchor``).

The keyed chain stops someone who can write the database but lacks the key. Someone who holds
both could still edit a record and re-seal everything after it. An anchor is a small signed
file (head event, its hash, the number of events, the time) written where the database owner
cannot rewrite history: another host, write-once storage, a printed copy. ``tracker audit
verify`` checks the database against every anchor: any rewrite before the newest one changes
a hash an anchor holds (21 CFR 11.10(c); 计算机化系统附录 on protecting records; DESIGN §10).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func
from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.keys import keyring
from tracker.core.timeutil import iso_utc, utcnow

FORMAT = "gmp-tracker-anchor/1"


@dataclass(frozen=True)
class Anchor:
    head_id: int
    head_hash: str
    count: int
    at: str
    key_id: str
    mac: str
    format: str = FORMAT

    def signed_body(self) -> bytes:
        body = {
            "format": self.format,
            "head_id": self.head_id,
            "head_hash": self.head_hash,
            "count": self.count,
            "at": self.at,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @property
    def file_name(self) -> str:
        return f"anchor-{self.count:09d}-{self.at.replace(':', '').replace('-', '')}.json"

    def write(self, directory: Path) -> Path:
        """Write the anchor as a new read-only file (never over an existing one)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self.file_name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(self), out, sort_keys=True, indent=2)
            out.write("\n")
        return path


@dataclass(frozen=True)
class AnchorCheck:
    source: str
    anchor: Anchor | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def take_anchor(session: Session, *, actor: str, now: datetime | None = None) -> Anchor:
    """Record the anchoring in the trail, then seal the head that includes that event.

    The caller writes the file after its unit of work has committed (a file naming a head
    that was rolled back would fail every later verification)."""
    now = now or utcnow()
    event = audit.record(
        session, actor=actor, action="audit.anchor", entity="audit", entity_key="chain", at=now
    )
    count = session.exec(select(func.count()).select_from(audit.AuditEvent)).one()
    unsigned = Anchor(head_id=event.id, head_hash=event.hash, count=count, at=iso_utc(now), key_id="", mac="")
    key_id, mac = keyring().mac(unsigned.signed_body())
    return Anchor(event.id, event.hash, count, unsigned.at, key_id, mac)


def read_anchors(directory: Path) -> list[AnchorCheck]:
    """Every anchor file of ``directory``, oldest first; unreadable ones as problems."""
    found: list[AnchorCheck] = []
    for path in sorted(directory.glob("anchor-*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            anchor = Anchor(**data)
        except (OSError, ValueError, TypeError) as exc:
            found.append(AnchorCheck(path.name, None, f"unreadable: {exc}"))
            continue
        found.append(AnchorCheck(path.name, anchor, None))
    return found


def check_anchor(session: Session, source: str, anchor: Anchor) -> AnchorCheck:
    """The anchor is genuine and the database still holds exactly the history it sealed."""
    if anchor.format != FORMAT or not keyring().check(anchor.key_id, anchor.signed_body(), anchor.mac):
        return AnchorCheck(source, anchor, "its signature does not match (forged, or another site's key)")
    stored = session.get(audit.AuditEvent, anchor.head_id)
    if stored is None:
        return AnchorCheck(source, anchor, f"event {anchor.head_id} is gone")
    if stored.hash != anchor.head_hash:
        return AnchorCheck(
            source, anchor, f"event {anchor.head_id} has another hash: history before it was rewritten"
        )
    count = session.exec(
        select(func.count()).select_from(audit.AuditEvent).where(audit.AuditEvent.id <= anchor.head_id)
    ).one()
    if count != anchor.count:
        return AnchorCheck(
            source, anchor, f"{count} events up to {anchor.head_id}, the anchor sealed {anchor.count}"
        )
    return AnchorCheck(source, anchor, None)


def check_anchors(session: Session, directory: Path) -> list[AnchorCheck]:
    return [check_anchor(session, c.source, c.anchor) if c.anchor else c for c in read_anchors(directory)]
