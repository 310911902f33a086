"""The viable sample's lifecycle: planned → taken → incubating → read → identified → closed, or
missed / invalid with a reason. Each step is a plain function taking a session, checks the
status it starts from (a conditional update, so two scans of one label cannot both record a
step), records who and when on the row and writes an audit event in the same transaction.

Rules the steps enforce:

* a settle plate is exposed at most 4 h (Annex 1 (2022) §9.x; China Annex 1 第十一条 note 2):
  a longer exposure is refused at ``take`` — record the plate ``invalid`` with that reason;
* the reading is due when the incubation scheme of the plan has run (``read_due``); a sample
  still incubating ``reading_grace_h`` after that is overdue (:func:`overdue`);
* in grade A and B a second person verifies the count: another *person*, not another account of
  the reader (GMP 2010 Art. 163 nobody checks their own entry; docs/quality.md);
* isolates from grade A and B are identified before the sample closes (Annex 1 (2022) §9.30).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, select

from tracker.core import audit
from tracker.core.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Room, Site
from tracker.facility.policy import viable_plan_of
from tracker.facility.viable import SETTLE_REFERENCE_MIN, PlannedSample
from tracker.identity.users import Authenticated, person_of, require_role
from tracker.monitoring.viable.judging import judge_sample, raise_trends
from tracker.monitoring.viable.models import STATUS_ZH, ViableSample

#: who may record sampling and reading steps (the QC microbiology lab is QA's here)
WORKERS = ("operator", "production_head", "qa")


def _refuse_status(sample: ViableSample, *wanted: str) -> ConflictError:
    return ConflictError(
        Reason(
            f"sample {sample.code} is {sample.status}; this step needs it {' or '.join(wanted)}",
            f"样品 {sample.code} 处于“{STATUS_ZH[sample.status]}”；此步骤要求其处于"
            f"“{'”或“'.join(STATUS_ZH[w] for w in wanted)}”",
        )
    )


def _move(
    session: Session,
    sample: ViableSample,
    *,
    frm: tuple[str, ...],
    to: str,
    values: dict,
    actor: str,
    action: str,
    now: datetime,
    reason: str | None = None,
) -> ViableSample:
    """Move the sample from one of ``frm`` to ``to`` with ``values``; audited."""
    if sample.status not in frm:
        raise _refuse_status(sample, *frm)
    before = {"status": sample.status, **{k: _plain(getattr(sample, k)) for k in values}}
    moved = session.execute(
        update(ViableSample)
        .where(ViableSample.id == sample.id, ViableSample.status == sample.status)
        .values(status=to, **values)
    ).rowcount
    if moved != 1:
        raise ConflictError(
            Reason(
                f"sample {sample.code} changed while this was being recorded; scan it again",
                f"记录期间样品 {sample.code} 已被他人更改；请重新扫描",
            )
        )
    session.refresh(sample)
    audit.record(
        session,
        actor=actor,
        action=f"viable.{action}",
        entity="viable_sample",
        entity_key=sample.code,
        before=before,
        after={"status": to, **{k: _plain(v) for k, v in values.items()}},
        reason=reason,
        at=now,
    )
    return sample


def _plain(value: object) -> object:
    return iso_utc(value) if isinstance(value, datetime) else value


def get_sample(session: Session, code: str) -> ViableSample:
    """The sample whose label says ``code`` (what a scanner types, surrounding blanks ignored)."""
    text = (code or "").strip()
    sample = session.exec(select(ViableSample).where(ViableSample.code == text)).first()
    if sample is None:
        raise NotFoundError(Reason(f"no viable sample {text!r}", f"没有样品 {text!r}"))
    return sample


def _next_code(session: Session, site: Site, when: datetime) -> str:
    """``VS-YYYYMMDD-NNNN``: the day (UTC) and a number within it, what the label prints."""
    prefix = f"VS-{when:%Y%m%d}-"
    taken = session.exec(select(ViableSample.code).where(ViableSample.code.startswith(prefix))).all()
    return f"{prefix}{len(taken) + 1:04d}"


def plan_samples(
    session: Session,
    *,
    site: Site,
    planned: list[PlannedSample],
    planned_for: datetime,
    session_key: str,
    actor: str,
    batch_id: int | None = None,
    step_id: int | None = None,
    now: datetime | None = None,
) -> list[ViableSample]:
    """Create the planned samples (the label codes they will carry); audited one by one."""
    now = now or utcnow()
    rooms = {r.code: r for r in session.exec(select(Room).where(Room.site_id == site.id))}
    out = []
    for p in planned:
        room = rooms[p.room]
        sample = ViableSample(
            code=_next_code(session, site, planned_for),
            site_id=site.id,
            room_id=room.id,
            location=p.location,
            grade=room.grade,
            method=p.method,
            frequency=p.frequency,
            revision=site.revision,
            batch_id=batch_id,
            step_id=step_id,
            session_key=session_key,
            planned_for=planned_for,
            planned_by=actor,
            planned_at=now,
            air_volume_l=p.air_volume_l,
            exposure_min=p.exposure_min,
        )
        session.add(sample)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="viable.plan",
            entity="viable_sample",
            entity_key=sample.code,
            after={
                "location": p.location,
                "method": p.method,
                "grade": room.grade,
                "batch": batch_id,
                "step": step_id,
                "planned_for": iso_utc(planned_for),
            },
            at=now,
        )
        out.append(sample)
    return out


def plan_calendar(
    session: Session, *, site: Site, frequency: str, day: datetime, actor: str, now: datetime | None = None
) -> list[ViableSample]:
    """The samples of the locations sampled by calendar (daily, weekly, monthly) for ``day``."""
    if frequency not in ("daily", "weekly", "monthly"):
        raise InvalidInputError(
            Reason("frequency must be daily, weekly or monthly", "频次须为 daily、weekly 或 monthly")
        )
    plan = viable_plan_of(session, site)
    planned = [
        PlannedSample(
            location=loc.code,
            room=loc.room,
            method=m,
            frequency=frequency,
            air_volume_l=loc.air_volume_l if m == "air" else None,
            exposure_min=loc.exposure_min if m == "settle" else None,
        )
        for loc in plan.locations
        if loc.frequency == frequency
        for m in loc.methods
    ]
    return plan_samples(
        session,
        site=site,
        planned=planned,
        planned_for=day,
        session_key=f"{frequency}:{day:%Y-%m-%d}",
        actor=actor,
        now=now,
    )


def take(
    session: Session,
    *,
    actor: Authenticated,
    sample: ViableSample,
    media_lot: str,
    taken_at: datetime | None = None,
    exposure_start: datetime | None = None,
    exposure_end: datetime | None = None,
    now: datetime | None = None,
) -> ViableSample:
    """Record the sample taken: by whom, when, the media lot and, for a settle plate, its exposure."""
    require_role(actor, *WORKERS, action=Reason("recording a viable sample", "记录微生物采样"))
    now = now or utcnow()
    if not (media_lot or "").strip():
        raise InvalidInputError(Reason("the media lot is required", "须填写培养基批号"))
    taken_at = taken_at or now
    if taken_at > now + timedelta(minutes=5):
        raise InvalidInputError(Reason("a sample cannot be taken in the future", "采样时间不能晚于现在"))
    values: dict = {"taken_by": actor.username, "taken_at": taken_at, "media_lot": media_lot.strip()}
    if sample.method == "settle":
        if exposure_start is None:
            exposure_start = taken_at - timedelta(minutes=sample.exposure_min or SETTLE_REFERENCE_MIN)
        exposure_end = exposure_end or taken_at
        minutes = (exposure_end - exposure_start).total_seconds() / 60
        if minutes <= 0:
            raise InvalidInputError(
                Reason("the exposure must end after it starts", "暴露结束时间须晚于开始时间")
            )
        if minutes > SETTLE_REFERENCE_MIN:
            raise InvalidInputError(
                Reason(
                    f"settle plate {sample.code} was exposed {minutes:.0f} min, more than 4 h (Annex 1 "
                    "第十一条): record it as invalid with that reason",
                    f"沉降碟 {sample.code} 暴露了 {minutes:.0f} 分钟，超过 4 小时（附录1 第十一条）：请记录为无效并注明原因",
                )
            )
        values |= {"exposure_start": exposure_start, "exposure_end": exposure_end}
    return _move(
        session,
        sample,
        frm=("planned",),
        to="taken",
        values=values,
        actor=actor.username,
        action="take",
        now=now,
    )


def incubate(
    session: Session,
    *,
    actor: Authenticated,
    sample: ViableSample,
    incubator: str,
    start: datetime | None = None,
    now: datetime | None = None,
) -> ViableSample:
    """The plate goes into the incubator; the reading falls due when the plan's scheme has run."""
    require_role(actor, *WORKERS, action=Reason("recording incubation", "记录培养"))
    now = now or utcnow()
    if not (incubator or "").strip():
        raise InvalidInputError(Reason("the incubator is required", "须填写培养箱"))
    start = start or now
    plan = viable_plan_of(session, session.get(Site, sample.site_id), sample.revision)
    due = start + timedelta(hours=plan.incubation_h or 120.0)
    return _move(
        session,
        sample,
        frm=("taken",),
        to="incubating",
        values={
            "incubator": incubator.strip(),
            "incubation_by": actor.username,
            "incubation_start": start,
            "read_due": due,
        },
        actor=actor.username,
        action="incubate",
        now=now,
    )


def read(
    session: Session, *, actor: Authenticated, sample: ViableSample, count: int, now: datetime | None = None
) -> ViableSample:
    """Record the colony count and judge it (an excursion opens at once; a grade A/B count still
    needs a second person's verification before the sample can move on)."""
    require_role(actor, *WORKERS, action=Reason("reading a viable sample", "读取微生物样品"))
    now = now or utcnow()
    if isinstance(count, bool) or not isinstance(count, int) or count < 0 or count > 10_000:
        raise InvalidInputError(
            Reason(
                "the count must be a whole number from 0 to 10000 cfu", "计数须为 0 到 10000 之间的整数 cfu"
            )
        )
    sample = _move(
        session,
        sample,
        frm=("incubating",),
        to="read",
        values={"count": count, "read_by": actor.username, "read_at": now},
        actor=actor.username,
        action="read",
        now=now,
    )
    judge_sample(session, sample, now=now)
    if count > 0:
        raise_trends(session, sample, now=now)
    if sample.method == "settle":  # a later plate of the session may change the sum of earlier ones
        for other in session.exec(
            select(ViableSample).where(
                ViableSample.session_key == sample.session_key,
                ViableSample.location == sample.location,
                ViableSample.method == "settle",
                ViableSample.id != sample.id,
                ViableSample.count.is_not(None),
            )
        ):
            judge_sample(session, other, now=now)
    return sample


def verify(
    session: Session, *, actor: Authenticated, sample: ViableSample, count: int, now: datetime | None = None
) -> ViableSample:
    """A second person counts the plate again (grade A and B): another person than the reader,
    and the same count (a different count is refused: the plate is recounted together)."""
    require_role(actor, *WORKERS, action=Reason("verifying a viable count", "复核微生物计数"))
    now = now or utcnow()
    if sample.status != "read":
        raise _refuse_status(sample, "read")
    if sample.verified_by is not None:
        raise ConflictError(Reason(f"sample {sample.code} is verified already", f"样品 {sample.code} 已复核"))
    if actor.who == person_of(session, sample.read_by or ""):
        raise PermissionDeniedError(
            Reason(
                f"{actor.username} read sample {sample.code}: the count is verified by another person "
                "(GMP 2010 Art. 163)",
                f"{actor.username} 读取了样品 {sample.code}：计数须由另一人复核（GMP（2010）第一百六十三条）",
            )
        )
    if count != sample.count:
        raise InvalidInputError(
            Reason(
                f"your count {count} differs from the reading {sample.count}: count the plate again together",
                f"复核计数 {count} 与读数 {sample.count} 不一致：请共同重新计数",
            )
        )
    session.execute(
        update(ViableSample)
        .where(ViableSample.id == sample.id, ViableSample.verified_by.is_(None))
        .values(verified_by=actor.username, verified_at=now)
    )
    session.refresh(sample)
    audit.record(
        session,
        actor=actor.username,
        action="viable.verify",
        entity="viable_sample",
        entity_key=sample.code,
        after={"count": count, "verified_by": actor.username},
        at=now,
    )
    return sample


def identify(
    session: Session,
    *,
    actor: Authenticated,
    sample: ViableSample,
    organism: str,
    method: str,
    now: datetime | None = None,
) -> ViableSample:
    """Record the isolate's organism and the identification method (required for A/B isolates)."""
    require_role(actor, *WORKERS, action=Reason("identifying an isolate", "鉴定菌种"))
    now = now or utcnow()
    if not (organism or "").strip() or not (method or "").strip():
        raise InvalidInputError(
            Reason("give the organism and the identification method", "须填写菌种和鉴定方法")
        )
    if sample.needs_verification:
        raise ConflictError(
            Reason(
                f"sample {sample.code}: the count is not verified yet", f"样品 {sample.code}：计数尚未复核"
            )
        )
    if not sample.count:
        raise ConflictError(
            Reason(f"sample {sample.code} has no growth to identify", f"样品 {sample.code} 无菌落可鉴定")
        )
    sample = _move(
        session,
        sample,
        frm=("read",),
        to="identified",
        values={
            "organism": organism.strip(),
            "id_method": method.strip(),
            "identified_by": actor.username,
            "identified_at": now,
        },
        actor=actor.username,
        action="identify",
        now=now,
    )
    judge_sample(session, sample, now=now)  # the excursion names the organism now
    raise_trends(session, sample, now=now)
    return sample


def close(
    session: Session, *, actor: Authenticated, sample: ViableSample, now: datetime | None = None
) -> ViableSample:
    """Close a result once it is complete: verified (A/B) and identified (A/B isolates)."""
    require_role(actor, *WORKERS, action=Reason("closing a viable sample", "关闭微生物样品"))
    now = now or utcnow()
    if sample.needs_verification:
        raise ConflictError(
            Reason(
                f"sample {sample.code}: the count is not verified by a second person yet",
                f"样品 {sample.code}：计数尚未经第二人复核",
            )
        )
    if sample.needs_identification:
        raise ConflictError(
            Reason(
                f"sample {sample.code}: a grade {sample.grade} isolate is identified before closing",
                f"样品 {sample.code}：{sample.grade} 级的分离菌须鉴定后才能关闭",
            )
        )
    return _move(
        session,
        sample,
        frm=("read", "identified"),
        to="closed",
        values={"closed_by": actor.username, "closed_at": now},
        actor=actor.username,
        action="close",
        now=now,
    )


VOID_STATUSES = ("missed", "invalid")


def void(
    session: Session,
    *,
    actor: Authenticated,
    sample: ViableSample,
    status: str,
    reason: str,
    now: datetime | None = None,
) -> ViableSample:
    """A missed or invalid sample (dropped plate, exposure over 4 h, media expired), with its
    reason: never deleted, counted as a finding."""
    require_role(actor, *WORKERS, action=Reason("recording a missed or invalid sample", "记录漏采或无效样品"))
    now = now or utcnow()
    if status not in VOID_STATUSES:
        raise InvalidInputError(Reason("status must be missed or invalid", "状态须为 missed 或 invalid"))
    if not (reason or "").strip():
        raise InvalidInputError(
            Reason("a missed or invalid sample needs its reason", "漏采或无效样品须说明原因")
        )
    return _move(
        session,
        sample,
        frm=("planned", "taken", "incubating", "read"),
        to=status,
        values={"closed_by": actor.username, "closed_at": now, "void_reason": reason.strip()},
        actor=actor.username,
        action=status,
        now=now,
        reason=reason.strip(),
    )


def overdue(session: Session, *, now: datetime | None = None) -> list[ViableSample]:
    """Samples still incubating past their reading's due time plus the plan's grace."""
    now = now or utcnow()
    out = []
    for sample in session.exec(
        select(ViableSample).where(ViableSample.status == "incubating", ViableSample.read_due < now)
    ):
        plan = viable_plan_of(session, session.get(Site, sample.site_id), sample.revision)
        if sample.read_due + timedelta(hours=plan.reading_grace_h) < now:
            out.append(sample)
    return out


def sample_json(sample: ViableSample, *, room: str = "", overdue: bool = False) -> dict:
    """A sample as the API and the pages show it (times ISO 8601 UTC); ``overdue`` from :func:`overdue`."""
    return {
        "code": sample.code,
        "location": sample.location,
        "room": room,
        "grade": sample.grade,
        "method": sample.method,
        "status": sample.status,
        "batch_id": sample.batch_id,
        "step_id": sample.step_id,
        "planned_for": iso_utc(sample.planned_for),
        "taken_by": sample.taken_by,
        "taken_at": iso_utc(sample.taken_at),
        "media_lot": sample.media_lot,
        "exposure_start": iso_utc(sample.exposure_start),
        "exposure_end": iso_utc(sample.exposure_end),
        "incubator": sample.incubator,
        "incubation_start": iso_utc(sample.incubation_start),
        "read_due": iso_utc(sample.read_due),
        "overdue": overdue,
        "count": sample.count,
        "read_by": sample.read_by,
        "verified_by": sample.verified_by,
        "judged_value": sample.judged_value,
        "limit": sample.limit_value,
        "verdict": sample.verdict,
        "organism": sample.organism,
        "void_reason": sample.void_reason,
    }
