"""Donor and patient identities: audited reads, the reveal permission, search, the read report.

GB/T 39725-2020 §8 (access control and logging of health data), PIPL Art. 51 and Xiamen's
cell-industry regulation Art. 10 (data used only as authorised, traceable through the whole
process) ask three things of a batch record that holds a donor's or patient's identifier:

* every read of it is logged — :func:`record_read`, called by each entry point that shows
  batch records (page, API, CLI, exchange package), one ``personal.read`` audit event per
  read naming the batches and the donor pseudonyms shown;
* everyone sees the pseudonym; the clear identifier is shown only by :func:`reveal`, which
  needs the ``identity_reveal`` permission and a reason and is itself an audit event;
* QA can list who read which donor's records in a period (:func:`read_report`).

Reads go into the hash-chained audit trail rather than a log of their own, so a deleted or
altered read is found by ``tracker audit verify`` like any other event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import or_
from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.classification import REVEAL_ROLE
from tracker.core.errors import InvalidInputError, Reason
from tracker.core.pseudonyms import identity_key
from tracker.core.timeutil import iso_utc, utcnow
from tracker.identity.users import Authenticated, require_role
from tracker.quality.batches.models import Batch

READ = "personal.read"
REVEAL = "identity.reveal"
#: where a read came from (the report shows it)
CHANNELS = ("page", "api", "cli", "export")
MIN_REASON = 10


def record_read(session: Session, *, actor: str, via: str, batches: Iterable[Batch]) -> None:
    """Log that ``actor`` was shown these batch records (nothing shown: nothing logged)."""
    shown = [b for b in batches if b.donor_id or b.patient_id]
    if not shown:
        return
    audit.record(
        session,
        actor=actor,
        action=READ,
        entity="batch",
        entity_key=shown[0].number if len(shown) == 1 else f"{len(shown)} batches",
        after={
            "via": via,
            "batches": [b.number for b in shown],
            "donors": sorted({b.donor_id for b in shown if b.donor_id}),
        },
    )


class Revealed(TypedDict):
    batch: str
    donor_id: str
    patient_id: str | None
    donor_pseudonym: str
    patient_pseudonym: str | None


def reveal(
    session: Session,
    *,
    actor: Authenticated,
    batch: Batch,
    reason: str,
    via: str,
    now: datetime | None = None,
) -> Revealed:
    """The clear identifiers of one batch, for a holder of ``identity_reveal`` who says why.

    The reveal is recorded (who, when, which record, why) before anything is decrypted, in the
    caller's transaction: a reveal that is not recorded is not shown."""
    require_role(actor, REVEAL_ROLE, action=Reason("showing a donor's identifier", "查看供者明文编号"))
    reason = (reason or "").strip()
    if len(reason) < MIN_REASON:
        raise InvalidInputError(
            Reason(
                f"a reveal needs a reason of at least {MIN_REASON} characters (GB/T 39725-2020 §8: "
                "access to personal health data is justified and logged)",
                f"查看明文编号须填写至少 {MIN_REASON} 个字符的理由（GB/T 39725-2020 第8章：个人健康信息的访问须有依据并留痕）",
            )
        )
    if batch.donor_enc is None:
        raise InvalidInputError(
            Reason(
                f"batch {batch.number} holds no encrypted identifier to reveal",
                f"批次 {batch.number} 没有可查看的加密标识",
            )
        )
    audit.record(
        session,
        actor=actor.username,
        action=REVEAL,
        entity="batch",
        entity_key=batch.number,
        after={"via": via, "donors": [batch.donor_id], "patient": batch.patient_id},
        reason=reason,
        at=now or utcnow(),
    )
    key = identity_key()
    return {
        "batch": batch.number,
        "donor_id": key.decrypt(batch.donor_enc),
        "patient_id": key.decrypt(batch.patient_enc) if batch.patient_enc else None,
        "donor_pseudonym": batch.donor_id,
        "patient_pseudonym": batch.patient_id,
    }


def donor_pseudonym(clear: str) -> str:
    """What a user typed as a donor identifier, as the database holds it."""
    clear = (clear or "").strip()
    if not clear:
        raise InvalidInputError(Reason("type a donor identifier to search for", "请输入要查找的供者编号"))
    return identity_key().pseudonym("donor", clear)


def batches_of_donor(session: Session, clear: str) -> list[Batch]:
    """The batches of a donor, found by the pseudonym of the identifier typed."""
    ref = donor_pseudonym(clear)
    return list(session.exec(select(Batch).where(Batch.donor_id == ref).order_by(Batch.number)))


class ReadRow(TypedDict):
    """One read or reveal of donor records."""

    at: str
    actor: str
    action: str  # personal.read | identity.reveal
    via: str
    batches: list[str]
    donors: list[str]
    reason: str | None


def read_report(
    session: Session, *, start: datetime, end: datetime, donor: str | None = None
) -> list[ReadRow]:
    """Who read or revealed which donors' records in ``[start, end)``, oldest first; ``donor``:
    only that donor (typed in clear, matched by its pseudonym)."""
    if end <= start:
        raise InvalidInputError(Reason("the period ends before it starts", "时间段的结束早于开始"))
    ref = donor_pseudonym(donor) if donor is not None else None
    query = (
        select(audit.AuditEvent)
        .where(
            or_(audit.AuditEvent.action == READ, audit.AuditEvent.action == REVEAL),
            audit.AuditEvent.at >= start,
            audit.AuditEvent.at < end,
        )
        .order_by(audit.AuditEvent.id)
    )
    if ref is not None:
        query = query.where(audit.AuditEvent.after.contains(ref, autoescape=True))
    rows: list[ReadRow] = []
    for event in session.exec(query):
        after = json.loads(event.after or "{}")
        donors = after.get("donors", [])
        if ref is not None and ref not in donors:
            continue
        rows.append(
            {
                "at": iso_utc(event.at),
                "actor": event.actor,
                "action": event.action,
                "via": after.get("via", ""),
                "batches": after.get("batches", [event.entity_key]),
                "donors": donors,
                "reason": event.reason,
            }
        )
    return rows
