"""The records of an exchange package, one JSON document per record, read from the database.

Each record type has a JSON Schema in ``tracker/exchange/schema`` (``docs/exchange.md``). What
a window holds: workflow records (batches, deviations with CAPA, excursions with their links)
created or changed in ``[start, end)`` (a batch also when a step of it started or was recorded
in the window, even if the record was opened later, e.g. a step entered late), so a record changed after one package was cut comes
again, whole, in the next; signatures made in the window; hourly rollups and (optionally) raw
readings whose hour or event time falls in it; the facility revision in force at ``end`` and
the revisions loaded in the window with the limit set that judged them.

Personal fields follow their class (``tracker.core.classification``): donor and patient
identifiers are pseudonyms unless the receiver is authorised for clear values; encrypted
columns, signature contents and audit states are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlmodel import Session, select

from tracker.core.pseudonyms import identity_key
from tracker.core.timeutil import iso_utc
from tracker.facility.basis import EvaluationBasis
from tracker.facility.limits import LIMIT_SET_FILES, load_limit_set
from tracker.facility.models import FacilityLimit, FacilityRevision, Monitor, Room, Site
from tracker.identity.signatures import Signature
from tracker.monitoring.excursions import Excursion, source_code
from tracker.monitoring.readings import Reading
from tracker.monitoring.rollups import RollupHourly
from tracker.quality.batches.models import Batch, ExcursionLink, ProcessStep
from tracker.quality.deviations import CapaAction, Deviation, DeviationBatch, DeviationExcursion

#: record types in the order the package lists them (file ``records/<type>.jsonl``)
TYPES = ("facility", "batch", "signature", "deviation", "excursion", "rollup", "reading")


def _f(value: float | None) -> float | None:
    return None if value is None else float(value)


class Reader:
    """Reads one site's records of one window; ``clear``: donor/patient identifiers in clear."""

    def __init__(self, session: Session, site: Site, start: datetime, end: datetime, *, clear: bool) -> None:
        self.session, self.site, self.start, self.end, self.clear = session, site, start, end, clear
        self._rooms = {r.id: r.code for r in session.exec(select(Room).where(Room.site_id == site.id))}
        self._monitors = {
            m.id: m.code for m in session.exec(select(Monitor).where(Monitor.site_id == site.id))
        }
        self.batches: list[Batch] = []

    def _in(self, column) -> Any:
        return and_(column >= self.start, column < self.end)

    # --- facility -------------------------------------------------------------------------
    def facility(self) -> Iterator[dict]:
        revisions = list(
            self.session.exec(
                select(FacilityRevision)
                .where(FacilityRevision.site_id == self.site.id, FacilityRevision.loaded_at < self.end)
                .order_by(FacilityRevision.revision)
            )
        )
        in_force = revisions[-1].revision if revisions else None
        for rev in revisions:
            if rev.revision != in_force and not (self.start <= rev.loaded_at < self.end):
                continue
            limits = self.session.exec(
                select(FacilityLimit)
                .where(FacilityLimit.site_id == self.site.id, FacilityLimit.revision == rev.revision)
                .order_by(FacilityLimit.position)
            ).all()
            basis = self.session.exec(
                select(EvaluationBasis)
                .where(
                    EvaluationBasis.site_id == self.site.id, EvaluationBasis.facility_revision == rev.revision
                )
                .order_by(EvaluationBasis.id)
            ).first()
            code = basis.limit_set_code if basis else self.site.limit_set
            limit_set = load_limit_set(code)
            yield {
                "site": self.site.code,
                "revision": rev.revision,
                "in_force_at_end": rev.revision == in_force,
                "file_sha256": rev.file_sha256,
                "loaded_at": iso_utc(rev.loaded_at),
                "loaded_by": rev.loaded_by,
                "settings": json.loads(rev.settings),
                "limit_set": {
                    "code": limit_set.code,
                    "version": limit_set.version,
                    "sha256": limit_set.sha256,
                    "file": f"limitsets/{LIMIT_SET_FILES[limit_set.code]}",
                },
                "limits": [
                    {
                        "kind": row.kind,
                        "state": row.state,
                        "monitor": row.monitor_code,
                        "room": row.room_code,
                        "grade": row.grade,
                        "channel": row.channel,
                        "alert_low": _f(row.alert_low),
                        "alert_high": _f(row.alert_high),
                        "action_low": _f(row.action_low),
                        "action_high": _f(row.action_high),
                    }
                    for row in limits
                ],
            }

    # --- batches ----------------------------------------------------------------------------
    def batch(self) -> Iterator[dict]:
        stepped = select(ProcessStep.batch_id).where(
            or_(self._in(ProcessStep.recorded_at), self._in(ProcessStep.start))
        )
        self.batches = list(
            self.session.exec(
                select(Batch)
                .where(
                    Batch.site_id == self.site.id,
                    or_(self._in(Batch.created_at), self._in(Batch.updated_at), Batch.id.in_(stepped)),
                )
                .order_by(Batch.number)
            )
        )
        key = identity_key() if self.clear else None
        for batch in self.batches:
            steps = self.session.exec(
                select(ProcessStep)
                .where(ProcessStep.batch_id == batch.id)
                .order_by(ProcessStep.start, ProcessStep.id)
            ).all()
            deviations = self.session.exec(
                select(Deviation.number)
                .join(DeviationBatch, DeviationBatch.deviation_id == Deviation.id)
                .where(DeviationBatch.batch_id == batch.id)
                .order_by(Deviation.number)
            ).all()
            if key is not None and batch.donor_enc:
                donor = key.decrypt(batch.donor_enc)
                patient = key.decrypt(batch.patient_enc) if batch.patient_enc else None
            else:
                donor, patient = batch.donor_id, batch.patient_id
            yield {
                "number": batch.number,
                "product": batch.product,
                "status": batch.status,
                "identifiers": "clear" if key is not None else "pseudonym",
                "donor": donor,
                "patient": patient,
                "created_at": iso_utc(batch.created_at),
                "created_by": batch.created_by,
                "completed_at": iso_utc(batch.completed_at),
                "updated_at": iso_utc(batch.updated_at),
                "steps": [
                    {
                        "id": s.id,
                        "name": s.name,
                        "room": self._rooms.get(s.room_id, str(s.room_id)),
                        "start": iso_utc(s.start),
                        "end": iso_utc(s.end),
                        "open_processing": s.open_processing,
                        "operator": s.operator,
                        "recorded_at": iso_utc(s.recorded_at),
                    }
                    for s in steps
                ],
                "deviations": list(deviations),
            }

    # --- signatures -------------------------------------------------------------------------
    def signature(self) -> Iterator[dict]:
        for sig in self.session.exec(
            select(Signature).where(self._in(Signature.signed_at)).order_by(Signature.id)
        ):
            yield {
                "id": sig.id,
                "entity": sig.entity,
                "entity_key": sig.entity_key,
                "meaning": sig.meaning,
                "scope": sig.scope,
                "statement": sig.statement,
                "username": sig.username,
                "printed_name": sig.printed_name,
                "signed_at": iso_utc(sig.signed_at),
                "comment": sig.comment,
                # the content itself may hold clear identifiers (before migration 0026): its hash
                # lets a receiver holding the record check it, without carrying it
                "content_sha256": sig.content_hash,
                "seal": sig.seal,
                "key_id": sig.key_id,
            }

    # --- deviations and CAPA ----------------------------------------------------------------
    def deviation(self) -> Iterator[dict]:
        query = (
            select(Deviation)
            .where(
                Deviation.site_id == self.site.id,
                Deviation.opened_at < self.end,
                or_(self._in(Deviation.opened_at), self._in(Deviation.updated_at)),
            )
            .order_by(Deviation.number)
        )
        for dev in self.session.exec(query):
            excursions = self.session.exec(
                select(DeviationExcursion.excursion_id)
                .where(DeviationExcursion.deviation_id == dev.id)
                .order_by(DeviationExcursion.excursion_id)
            ).all()
            batches = self.session.exec(
                select(DeviationBatch, Batch.number)
                .join(Batch, Batch.id == DeviationBatch.batch_id)
                .where(DeviationBatch.deviation_id == dev.id)
                .order_by(Batch.number)
            ).all()
            capa = self.session.exec(
                select(CapaAction).where(CapaAction.deviation_id == dev.id).order_by(CapaAction.id)
            ).all()
            yield {
                "number": dev.number,
                "title": dev.title,
                "classification": dev.classification,
                "category": dev.category,
                "description": dev.description,
                "root_cause": dev.root_cause,
                "no_capa_justification": dev.no_capa_justification,
                "status": dev.status,
                "opened_at": iso_utc(dev.opened_at),
                "opened_by": dev.opened_by,
                "closed_at": iso_utc(dev.closed_at),
                "updated_at": iso_utc(dev.updated_at),
                "excursions": list(excursions),
                "batches": [
                    {"batch": number, "impact": link.impact, "assessment": link.assessment}
                    for link, number in batches
                ],
                "capa": [
                    {
                        "id": a.id,
                        "kind": a.kind,
                        "description": a.description,
                        "owner": a.owner,
                        "due": a.due.isoformat(),
                        "status": a.status,
                        "created_at": iso_utc(a.created_at),
                        "done_at": iso_utc(a.done_at),
                        "outcome": a.outcome,
                        "checked_by": a.checked_by,
                        "checked_at": iso_utc(a.checked_at),
                        "effectiveness_note": a.effectiveness_note,
                    }
                    for a in capa
                ],
            }

    # --- excursions with their links ---------------------------------------------------------
    def excursion(self) -> Iterator[dict]:
        query = (
            select(Excursion, EvaluationBasis)
            .join(EvaluationBasis, EvaluationBasis.id == Excursion.basis_id)
            .where(
                Excursion.site_id == self.site.id,
                Excursion.started_at < self.end,
                or_(
                    self._in(Excursion.started_at),
                    self._in(Excursion.updated_at),
                    Excursion.ended_at.is_(None),
                    Excursion.ended_at >= self.start,
                ),
            )
            .order_by(Excursion.id)
        )
        for exc, basis in self.session.exec(query):
            links = self.session.exec(
                select(ExcursionLink, Batch.number)
                .join(Batch, Batch.id == ExcursionLink.batch_id)
                .where(ExcursionLink.excursion_id == exc.id)
                .order_by(ExcursionLink.id)
            ).all()
            deviations = self.session.exec(
                select(Deviation.number)
                .join(DeviationExcursion, DeviationExcursion.deviation_id == Deviation.id)
                .where(DeviationExcursion.excursion_id == exc.id)
                .order_by(Deviation.number)
            ).all()
            yield {
                "id": exc.id,
                "type": exc.type,
                # a viable result has no monitor: its sampling location stands in its place
                "monitor": self._monitors.get(exc.monitor_id) or source_code(self.session, exc),
                "room": self._rooms.get(exc.room_id, str(exc.room_id)),
                "kind": exc.kind,
                "channel": exc.channel,
                "level": exc.level,
                "state": exc.state,
                "status": exc.status,
                "direction": exc.direction,
                "started_at": iso_utc(exc.started_at),
                "ended_at": iso_utc(exc.ended_at),
                "peak": float(exc.peak),
                "limit": _f(exc.limit_value),
                "readings": exc.readings,
                "basis": {
                    "limit_set": basis.limit_set_code,
                    "version": basis.limit_set_version,
                    "sha256": basis.limit_set_sha256,
                    "facility_revision": basis.facility_revision,
                },
                "acknowledged_by": exc.acknowledged_by,
                "acknowledged_at": iso_utc(exc.acknowledged_at),
                "superseded_reason": exc.superseded_reason,
                "updated_at": iso_utc(exc.updated_at),
                "links": [
                    {
                        "batch": number,
                        "step": link.step_id,
                        "status": link.status,
                        "decided_by": link.decided_by,
                        "decided_at": iso_utc(link.decided_at),
                        "reason": link.reason,
                    }
                    for link, number in links
                ],
                "deviations": list(deviations),
            }

    # --- environmental summaries -------------------------------------------------------------
    def rollup(self) -> Iterator[dict]:
        query = (
            select(RollupHourly)
            .where(RollupHourly.monitor_id.in_(list(self._monitors)), self._in(RollupHourly.hour))
            .order_by(RollupHourly.hour, RollupHourly.monitor_id, RollupHourly.channel, RollupHourly.state)
        )
        for r in self.session.exec(query):
            yield {
                "monitor": self._monitors[r.monitor_id],
                "channel": r.channel,
                "hour": iso_utc(r.hour),
                "state": r.state,
                "count": r.count,
                "invalid": r.invalid,
                "alert": r.n_alert,
                "action": r.n_action,
                "not_evaluated": r.n_not_evaluated,
                "min": _f(r.vmin),
                "max": _f(r.vmax),
                "sum": float(r.vsum),
            }

    def reading(self) -> Iterator[dict]:
        query = (
            select(Reading)
            .where(Reading.monitor_id.in_(list(self._monitors)), self._in(Reading.event_time))
            .order_by(Reading.event_time, Reading.monitor_id, Reading.seq, Reading.channel)
            .execution_options(yield_per=5000)
        )
        for r in self.session.exec(query):
            yield {
                "monitor": self._monitors[r.monitor_id],
                "seq": r.seq,
                "channel": r.channel,
                "event_time": iso_utc(r.event_time),
                "value": float(r.value),
                "level": r.level,
                "state": r.state,
                "status": r.status,
                "invalid_reason": r.invalid_reason,
            }
