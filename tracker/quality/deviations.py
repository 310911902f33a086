"""Deviations (偏差) and CAPA (纠正预防措施): GMP 2010 Art. 247–254.

Workflow ``open → investigating → capa → closed``; each step checks the fields it needs and
says what is missing:

* open: raised by QA from excursions or by hand, classified (Art. 251: QA classifies;
  Art. 249: by nature, scope and impact; the scheme is the facility file's
  ``[quality] deviation_classes``).
* investigating: root cause and an impact assessment for every linked batch (Art. 249).
* → capa: QA approves the investigation report with an e-signature (Art. 250).
* → closed: every corrective action done; critical and major deviations carry at least one
  CAPA action (Art. 250: preventive action stops recurrence), a minor one may close without
  CAPA only with a written justification; QA signs the closure. Effectiveness checks of
  preventive actions may come later (Art. 253) and are reported in the annual review.

Which batches a deviation concerns is decided in ``tracker.quality.batches.linking`` (confirmed
exposure links); this module keeps the impact assessment per linked batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Column, Text, UniqueConstraint, func
from sqlmodel import Field, Session, SQLModel, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.db import UTCDateTime
from tracker.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Reason,
    in_language,
    zh_word,
    zh_words,
)
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Monitor, Room, Site
from tracker.facility.policy import Compliance, compliance_of
from tracker.identity import signatures
from tracker.identity.users import Authenticated, get_user, person_of, require_role
from tracker.monitoring.excursions import Excursion, ExcursionDoc
from tracker.monitoring.excursions import to_json as excursion_json
from tracker.monitoring.viable.models import ViableSample

STATUSES = ("open", "investigating", "capa", "closed")
IMPACTS = ("none", "minor", "significant")
CAPA_KINDS = ("corrective", "preventive")
CAPA_STATUSES = ("open", "done", "effective", "not_effective")


class Deviation(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("number"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    number: str = Field(max_length=20)  # DEV-YYYY-NNNN
    title: str = Field(max_length=200)
    classification: str = Field(max_length=20)
    category: str = Field(max_length=60)
    description: str = Field(sa_column=Column(Text, nullable=False))
    root_cause: str | None = Field(default=None, sa_column=Column(Text))
    root_cause_by: str | None = Field(default=None, max_length=60)
    no_capa_justification: str | None = Field(default=None, sa_column=Column(Text))
    status: str = Field(default="open", max_length=20, index=True)
    opened_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    opened_by: str = Field(max_length=60)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class DeviationExcursion(SQLModel, table=True):
    """An excursion a deviation was raised from."""

    __tablename__ = "deviation_excursion"
    __table_args__ = (UniqueConstraint("deviation_id", "excursion_id"),)

    id: int | None = Field(default=None, primary_key=True)
    deviation_id: int = Field(foreign_key="deviation.id", index=True)
    excursion_id: int = Field(foreign_key="excursion.id", index=True)


class DeviationBatch(SQLModel, table=True):
    """A batch a deviation concerns, with QA's impact assessment for it (Art. 249)."""

    __tablename__ = "deviation_batch"
    __table_args__ = (UniqueConstraint("deviation_id", "batch_id"),)

    id: int | None = Field(default=None, primary_key=True)
    deviation_id: int = Field(foreign_key="deviation.id", index=True)
    batch_id: int = Field(foreign_key="batch.id", index=True)
    linked_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    linked_by: str = Field(max_length=60)
    impact: str | None = Field(default=None, max_length=20)  # none|minor|significant
    assessment: str | None = Field(default=None, sa_column=Column(Text))
    assessed_by: str | None = Field(default=None, max_length=60)
    assessed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DeviationAuthor(SQLModel, table=True):
    """Each person who wrote part of a deviation's investigation (its root cause, an impact
    assessment): every contributor, not only the last writer, so nobody who wrote any of it
    approves or closes it."""

    __tablename__ = "deviation_author"
    __table_args__ = (UniqueConstraint("deviation_id", "part", "username"),)

    id: int | None = Field(default=None, primary_key=True)
    deviation_id: int = Field(foreign_key="deviation.id", index=True)
    part: str = Field(max_length=40)  # root_cause | impact:<batch id>
    username: str = Field(max_length=60)
    person: str = Field(max_length=60)
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class CapaAction(SQLModel, table=True):
    __tablename__ = "capa_action"

    id: int | None = Field(default=None, primary_key=True)
    deviation_id: int = Field(foreign_key="deviation.id", index=True)
    kind: str = Field(max_length=20)  # corrective|preventive
    description: str = Field(sa_column=Column(Text, nullable=False))
    owner: str = Field(max_length=60)
    due: date
    status: str = Field(default="open", max_length=20)
    created_by: str = Field(max_length=60)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    outcome: str | None = Field(default=None, sa_column=Column(Text))
    checked_by: str | None = Field(default=None, max_length=60)
    checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    effectiveness_note: str | None = Field(default=None, sa_column=Column(Text))


def classes(session: Session | None = None, site: Site | None = None) -> tuple[str, ...]:
    """The site's deviation classes, most severe first (``[quality] deviation_classes``)."""
    if session is None or site is None:
        return Compliance().deviation_classes
    return compliance_of(session, site).deviation_classes


def major_incident_classes(session: Session, site: Site, *, revision: int | None = None) -> tuple[str, ...]:
    """The deviation classes that count as possible major quality or safety incidents of ``site``
    (Nanning measures Art. 16, regulatory.md §10.2): the annual report counts and lists these for
    QA's assessment. Every reader goes through here. The mapping is the facility file's
    ``[quality] major_incident_classes`` (``tracker.facility.policy``; validated there as a subset of
    the site's classes); ``revision``: of a facility revision other than the current one (the
    annual report reads the revision in force at its cut-off)."""
    return compliance_of(session, site, revision).major_incident_classes


def _check_class(session: Session, site: Site, classification: str) -> None:
    known = classes(session, site)
    if classification not in known:
        raise InvalidInputError(
            Reason(
                f"classification must be one of {', '.join(known)}",
                f"分类须为以下之一：{zh_words(known)}",
            )
        )


def get_deviation(session: Session, number: str) -> Deviation:
    dev = session.exec(select(Deviation).where(Deviation.number == number)).first()
    if dev is None:
        raise NotFoundError(Reason(f"no deviation {number!r}", f"没有偏差 {number!r}"))
    return dev


def _snapshot(dev: Deviation) -> dict:
    return {
        "number": dev.number,
        "title": dev.title,
        "classification": dev.classification,
        "category": dev.category,
        "description": dev.description,
        "root_cause": dev.root_cause,
        "status": dev.status,
        "no_capa_justification": dev.no_capa_justification,
    }


def _next_number(session: Session, site: Site, now: datetime) -> str:
    """DEV-YYYY-NNNN, numbered per calendar year in the facility's time zone."""
    year = now.astimezone(ZoneInfo(site.timezone)).year
    prefix = f"DEV-{year}-"
    last = session.exec(select(func.max(Deviation.number)).where(Deviation.number.like(f"{prefix}%"))).one()
    return f"{prefix}{(int(last[len(prefix) :]) if last else 0) + 1:04d}"


def open_deviation(
    session: Session,
    *,
    actor: Authenticated,
    site: Site,
    title: str,
    classification: str,
    category: str,
    description: str,
    excursion_ids: list[int] | tuple[int, ...] = (),
    now: datetime | None = None,
) -> Deviation:
    """Raise a deviation (from excursions, or by hand when the list is empty). QA only (Art. 251)."""
    require_role(actor, "qa", action=Reason("raising a deviation", "开启偏差"))
    _check_class(session, site, classification)
    for name, zh, value in (
        ("title", "标题", title),
        ("category", "类别", category),
        ("description", "描述", description),
    ):
        if not value or not value.strip():
            raise InvalidInputError(
                Reason(
                    f"a deviation needs a {name} (Art. 250: a clear description)",
                    f"偏差须填写{zh}（第二百五十条：清楚说明偏差）",
                )
            )
    now = now or utcnow()
    dev = Deviation(
        site_id=site.id,
        number=_next_number(session, site, now),
        title=title.strip(),
        classification=classification,
        category=category.strip(),
        description=description.strip(),
        opened_at=now,
        opened_by=actor.username,
        updated_at=now,
    )
    session.add(dev)
    session.flush()
    for excursion_id in excursion_ids:
        ex = session.get(Excursion, excursion_id)
        if ex is None:
            raise NotFoundError(Reason(f"no excursion {excursion_id}", f"没有超标记录 {excursion_id}"))
        if ex.status == "superseded":
            raise ConflictError(
                Reason(
                    f"excursion {excursion_id} was superseded by re-evaluation; "
                    "raise the deviation from the excursion that replaced it",
                    f"超标 {excursion_id} 已因重新评价被取代；请从取代它的超标记录开启偏差",
                )
            )
        session.add(DeviationExcursion(deviation_id=dev.id, excursion_id=excursion_id))
    audit.record(
        session,
        actor=actor.username,
        action="deviation.open",
        entity="deviation",
        entity_key=dev.number,
        after={**_snapshot(dev), "excursions": list(excursion_ids)},
        at=now,
    )
    return dev


def excursion_ids(session: Session, dev: Deviation) -> list[int]:
    return list(
        session.exec(
            select(DeviationExcursion.excursion_id)
            .where(DeviationExcursion.deviation_id == dev.id)
            .order_by(DeviationExcursion.excursion_id)
        )
    )


def batch_links(session: Session, dev: Deviation) -> list[DeviationBatch]:
    return list(
        session.exec(
            select(DeviationBatch)
            .where(DeviationBatch.deviation_id == dev.id)
            .order_by(DeviationBatch.batch_id)
        )
    )


def capa_actions(session: Session, dev: Deviation) -> list[CapaAction]:
    return list(
        session.exec(select(CapaAction).where(CapaAction.deviation_id == dev.id).order_by(CapaAction.id))
    )


def _require_status(dev: Deviation, *allowed: str, action: str) -> None:
    if dev.status not in allowed:
        raise ConflictError(
            Reason(
                f"{dev.number} is {dev.status}; {action} needs it {' or '.join(allowed)}",
                f"偏差 {dev.number} 处于“{zh_word(dev.status)}”；{in_language(action, 'zh-CN')}"
                f"要求其处于“{zh_words(allowed, '”或“')}”",
            )
        )


def attach_batch(
    session: Session,
    *,
    dev: Deviation,
    batch_id: int,
    actor: str,
    batch_number: str,
    now: datetime | None = None,
) -> DeviationBatch | None:
    """Link a batch to the deviation (idempotent); its impact is then to be assessed."""
    existing = session.exec(
        select(DeviationBatch).where(
            DeviationBatch.deviation_id == dev.id, DeviationBatch.batch_id == batch_id
        )
    ).first()
    if existing:
        return None
    if dev.status == "closed":
        raise ConflictError(
            Reason(
                f"{dev.number} is closed; open a new deviation for batch {batch_number}",
                f"偏差 {dev.number} 已关闭；请为批次 {batch_number} 开启新的偏差",
            )
        )
    now = now or utcnow()
    link = DeviationBatch(deviation_id=dev.id, batch_id=batch_id, linked_at=now, linked_by=actor)
    session.add(link)
    if dev.status == "capa":  # a new batch needs an assessment: the approved report is incomplete
        dev.status, dev.updated_at = "investigating", now
        session.add(dev)
    audit.record(
        session,
        actor=actor,
        action="deviation.link_batch",
        entity="deviation",
        entity_key=dev.number,
        after={"batch": batch_number, "status": dev.status},
        at=now,
    )
    return link


def update_deviation(
    session: Session,
    *,
    actor: Authenticated,
    dev: Deviation,
    reason: str,
    now: datetime | None = None,
    **fields: str,
) -> Deviation:
    """Change title, classification, category, description or root cause before approval;
    every change is audited with before, after and the reason (Art. 161)."""
    require_role(actor, "qa", action=Reason("editing a deviation", "修改偏差"))
    _require_status(dev, "open", "investigating", action=Reason("editing", "修改"))
    allowed = {"title", "classification", "category", "description", "root_cause"}
    unknown = set(fields) - allowed
    if unknown:
        raise InvalidInputError(
            Reason(f"cannot edit {', '.join(sorted(unknown))}", f"不能修改 {', '.join(sorted(unknown))}")
        )
    if not reason or not reason.strip():
        raise InvalidInputError(
            Reason(
                "a change to a deviation needs a reason (GMP 2010 Art. 161)",
                "修改偏差须说明理由（GMP（2010）第一百六十一条）",
            )
        )
    if "classification" in fields:
        _check_class(session, session.get(Site, dev.site_id), fields["classification"])
    now = now or utcnow()
    before = _snapshot(dev)
    for name, value in fields.items():
        setattr(dev, name, value.strip() if isinstance(value, str) else value)
    if "root_cause" in fields:
        dev.root_cause_by = actor.username
        _authored(session, dev, "root_cause", actor, now)
    dev.updated_at = now
    session.add(dev)
    audit.record(
        session,
        actor=actor.username,
        action="deviation.update",
        entity="deviation",
        entity_key=dev.number,
        before=before,
        after=_snapshot(dev),
        reason=reason,
        at=now,
    )
    return dev


def start_investigation(
    session: Session, *, actor: Authenticated, dev: Deviation, now: datetime | None = None
) -> Deviation:
    require_role(actor, "qa", action=Reason("starting an investigation", "开始调查"))
    _require_status(dev, "open", action=Reason("starting the investigation", "开始调查"))
    now = now or utcnow()
    dev.status, dev.updated_at = "investigating", now
    session.add(dev)
    audit.record(
        session,
        actor=actor.username,
        action="deviation.investigate",
        entity="deviation",
        entity_key=dev.number,
        before={"status": "open"},
        after={"status": dev.status},
        at=now,
    )
    return dev


def assess_impact(
    session: Session,
    *,
    actor: Authenticated,
    dev: Deviation,
    batch_id: int,
    batch_number: str,
    impact: str,
    assessment: str,
    now: datetime | None = None,
) -> DeviationBatch:
    """QA's assessment of what the deviation means for one linked batch (Art. 249)."""
    require_role(actor, "qa", action=Reason("assessing batch impact", "评估对批次的影响"))
    _require_status(dev, "open", "investigating", action=Reason("assessing impact", "影响评估"))
    if impact not in IMPACTS:
        raise InvalidInputError(
            Reason(f"impact must be one of {', '.join(IMPACTS)}", f"影响须为以下之一：{zh_words(IMPACTS)}")
        )
    if not assessment or not assessment.strip():
        raise InvalidInputError(
            Reason("an impact assessment needs its reasoning in words", "影响评估须以文字说明理由")
        )
    link = session.exec(
        select(DeviationBatch).where(
            DeviationBatch.deviation_id == dev.id, DeviationBatch.batch_id == batch_id
        )
    ).first()
    if link is None:
        raise NotFoundError(
            Reason(
                f"batch {batch_number} is not linked to {dev.number}",
                f"批次 {batch_number} 未与偏差 {dev.number} 关联",
            )
        )
    now = now or utcnow()
    before = {"impact": link.impact, "assessment": link.assessment}
    link.impact, link.assessment = impact, assessment.strip()
    link.assessed_by, link.assessed_at = actor.username, now
    session.add(link)
    _authored(session, dev, f"impact:{batch_id}", actor, now)
    audit.record(
        session,
        actor=actor.username,
        action="deviation.assess_impact",
        entity="deviation",
        entity_key=dev.number,
        before=before,
        after={"batch": batch_number, "impact": impact, "assessment": link.assessment},
        at=now,
    )
    return link


def _authored(session: Session, dev: Deviation, part: str, actor: Authenticated, now: datetime) -> None:
    """Remember that ``actor`` wrote ``part`` (once per person and part)."""
    known = session.exec(
        select(DeviationAuthor.id).where(
            DeviationAuthor.deviation_id == dev.id,
            DeviationAuthor.part == part,
            DeviationAuthor.username == actor.username,
        )
    ).first()
    if known is None:
        session.add(
            DeviationAuthor(deviation_id=dev.id, part=part, username=actor.username, person=actor.who, at=now)
        )
        session.flush()


def authors(session: Session, dev: Deviation) -> dict[str, set[str]]:
    """Person → the parts of the investigation they wrote (the stored last writers included, for
    records from before every contributor was kept)."""
    found: dict[str, set[str]] = {}
    for row in session.exec(select(DeviationAuthor).where(DeviationAuthor.deviation_id == dev.id)):
        found.setdefault(row.person, set()).add(row.part)
    if dev.root_cause_by:
        found.setdefault(person_of(session, dev.root_cause_by), set()).add("root_cause")
    for link in batch_links(session, dev):
        if link.assessed_by:
            found.setdefault(person_of(session, link.assessed_by), set()).add(f"impact:{link.batch_id}")
    return found


def investigation_content(session: Session, dev: Deviation) -> dict:
    """What QA signs when approving the investigation report (Art. 250)."""
    return {
        "number": dev.number,
        "title": dev.title,
        "classification": dev.classification,
        "category": dev.category,
        "description": dev.description,
        "root_cause": dev.root_cause,
        "excursions": excursion_ids(session, dev),
        "batches": [
            {"batch_id": b.batch_id, "impact": b.impact, "assessment": b.assessment}
            for b in batch_links(session, dev)
        ],
    }


def closure_content(session: Session, dev: Deviation) -> dict:
    """What QA signs when closing: the investigation, the CAPA plan and the corrections done.
    Preventive actions' progress and effectiveness checks come later and are not part of it."""
    return {
        **investigation_content(session, dev),
        "no_capa_justification": dev.no_capa_justification,
        "capa": [
            {
                "id": c.id,
                "kind": c.kind,
                "description": c.description,
                "owner": c.owner,
                "due": c.due.isoformat(),
                **({"outcome": c.outcome} if c.kind == "corrective" else {}),
            }
            for c in capa_actions(session, dev)
        ],
    }


def investigation_gaps(session: Session, dev: Deviation) -> list[str]:
    """What still stops the investigation report from being approved (each a :class:`Reason`)."""
    missing = []
    if not dev.root_cause:
        missing.append(Reason("root cause not recorded", "尚未记录根本原因"))
    for link in batch_links(session, dev):
        if link.impact is None:
            missing.append(
                Reason(
                    f"impact on batch id {link.batch_id} not assessed",
                    f"尚未评估对批次（内部编号 {link.batch_id}）的影响",
                )
            )
    return missing


def approve_investigation(
    session: Session,
    *,
    signer: Authenticated,
    dev: Deviation,
    comment: str | None = None,
    now: datetime | None = None,
) -> Deviation:
    """QA approves the investigation report with an e-signature (Art. 250) → ``capa``."""
    require_role(signer, "qa", action=Reason("approving an investigation report", "批准调查报告"))
    _require_status(dev, "investigating", action=Reason("approving the investigation", "批准调查"))
    missing = investigation_gaps(session, dev)
    if missing:
        raise ConflictError(
            Reason(
                f"{dev.number}: the investigation cannot be approved",
                f"偏差 {dev.number} 的调查报告尚不能批准",
            ),
            missing,
        )
    if signer.who in authors(session, dev):
        raise PermissionDeniedError(
            Reason(
                f"{signer.username} wrote part of the investigation of {dev.number}; "
                "another QA person approves it (nobody checks their own entry)",
                f"{signer.username} 撰写了偏差 {dev.number} 的部分调查内容；"
                "须由另一位 QA 人员批准（任何人不得审核自己的记录）",
            )
        )
    now = now or utcnow()
    signatures.sign(
        session,
        signer=signer,
        meaning="approved",
        entity="deviation",
        entity_key=dev.number,
        scope="investigation",
        statement="QA approval of the investigation report (GMP 2010 Art. 250)",
        content=investigation_content(session, dev),
        comment=comment,
        now=now,
    )
    dev.status, dev.updated_at = "capa", now
    session.add(dev)
    audit.record(
        session,
        actor=signer.username,
        action="deviation.approve_investigation",
        entity="deviation",
        entity_key=dev.number,
        before={"status": "investigating"},
        after={"status": "capa"},
        at=now,
    )
    return dev


def add_capa(
    session: Session,
    *,
    actor: Authenticated,
    dev: Deviation,
    kind: str,
    description: str,
    owner: str,
    due: date,
    now: datetime | None = None,
) -> CapaAction:
    require_role(actor, "qa", action=Reason("adding a CAPA action", "添加纠正预防措施"))
    _require_status(dev, "investigating", "capa", action=Reason("adding CAPA", "添加纠正预防措施"))
    if kind not in CAPA_KINDS:
        raise InvalidInputError(
            Reason(
                f"kind must be one of {', '.join(CAPA_KINDS)}",
                f"措施类型须为以下之一：{zh_words(CAPA_KINDS)}",
            )
        )
    if not description or not description.strip():
        raise InvalidInputError(Reason("a CAPA action needs a description", "纠正预防措施须填写描述"))
    owner_user = get_user(session, owner)
    if not owner_user.active:
        raise InvalidInputError(Reason(f"owner {owner!r} is deactivated", f"负责人 {owner!r} 的账户已停用"))
    now = now or utcnow()
    action = CapaAction(
        deviation_id=dev.id,
        kind=kind,
        description=description.strip(),
        owner=owner,
        due=due,
        created_by=actor.username,
        created_at=now,
    )
    session.add(action)
    session.flush()
    audit.record(
        session,
        actor=actor.username,
        action="capa.add",
        entity="deviation",
        entity_key=dev.number,
        after={
            "capa": action.id,
            "kind": kind,
            "owner": owner,
            "due": due.isoformat(),
            "description": action.description,
        },
        at=now,
    )
    return action


def _capa(session: Session, capa_id: int) -> tuple[CapaAction, Deviation]:
    action = session.get(CapaAction, capa_id)
    if action is None:
        raise NotFoundError(Reason(f"no CAPA action {capa_id}", f"没有纠正预防措施 {capa_id}"))
    return action, session.get(Deviation, action.deviation_id)


def complete_capa(
    session: Session, *, actor: Authenticated, capa_id: int, outcome: str, now: datetime | None = None
) -> CapaAction:
    """The owner (or QA) records that the action was carried out, and what was done."""
    action, dev = _capa(session, capa_id)
    if actor.username != action.owner and not actor.has("qa"):
        raise PermissionDeniedError(
            Reason(
                f"CAPA {capa_id} belongs to {action.owner}; only they or QA may record it done",
                f"纠正预防措施 {capa_id} 的负责人是 {action.owner}；只有负责人或 QA 可以记录其完成",
            )
        )
    if action.status != "open":
        raise ConflictError(
            Reason(
                f"CAPA {capa_id} is {action.status}, not open",
                f"纠正预防措施 {capa_id} 处于“{zh_word(action.status)}”，不是未关闭状态",
            )
        )
    if not outcome or not outcome.strip():
        raise InvalidInputError(Reason("say what was done", "请说明完成了什么"))
    now = now or utcnow()
    action.status, action.done_at, action.outcome = "done", now, outcome.strip()
    session.add(action)
    audit.record(
        session,
        actor=actor.username,
        action="capa.done",
        entity="deviation",
        entity_key=dev.number,
        after={"capa": capa_id, "outcome": action.outcome},
        at=now,
    )
    return action


def check_effectiveness(
    session: Session,
    *,
    actor: Authenticated,
    capa_id: int,
    effective: bool,
    note: str,
    now: datetime | None = None,
) -> CapaAction:
    """QA's effectiveness check (Art. 253), never by the action's owner (nobody checks their own
    work). An ineffective action stays on record; a new action follows it."""
    require_role(actor, "qa", action=Reason("checking CAPA effectiveness", "检查纠正预防措施的有效性"))
    action, dev = _capa(session, capa_id)
    if actor.who == person_of(session, action.owner):
        raise PermissionDeniedError(
            Reason(
                "the owner of a CAPA action cannot check its effectiveness",
                "纠正预防措施的负责人不能检查其有效性",
            )
        )
    if action.status != "done":
        raise ConflictError(
            Reason(
                f"CAPA {capa_id} is {action.status}; only a done action can be checked",
                f"纠正预防措施 {capa_id} 处于“{zh_word(action.status)}”；只能检查已完成的措施",
            )
        )
    if not note or not note.strip():
        raise InvalidInputError(
            Reason("an effectiveness check needs its evidence in words", "有效性检查须以文字说明依据")
        )
    now = now or utcnow()
    action.status = "effective" if effective else "not_effective"
    action.checked_by, action.checked_at, action.effectiveness_note = actor.username, now, note.strip()
    session.add(action)
    audit.record(
        session,
        actor=actor.username,
        action="capa.effectiveness",
        entity="deviation",
        entity_key=dev.number,
        after={"capa": capa_id, "status": action.status, "note": action.effectiveness_note},
        at=now,
    )
    return action


def closure_gaps(session: Session, dev: Deviation) -> list[str]:
    """What still stops the deviation from closing."""
    missing = investigation_gaps(session, dev)
    actions = capa_actions(session, dev)
    severe = set(compliance_of(session, session.get(Site, dev.site_id)).capa_required)
    if not actions:
        if dev.classification in severe:
            missing.append(
                Reason(
                    f"a {dev.classification} deviation needs at least one CAPA action (GMP 2010 Art. 250)",
                    f"{zh_word(dev.classification)}偏差至少需要一项纠正预防措施（GMP（2010）第二百五十条）",
                )
            )
        elif not dev.no_capa_justification:
            missing.append(
                Reason(
                    "no CAPA action and no written justification for none",
                    "既无纠正预防措施，也无不采取措施的书面理由",
                )
            )
    for action in actions:
        if action.kind == "corrective" and action.status == "open":
            missing.append(
                Reason(f"corrective action {action.id} not done", f"纠正措施 {action.id} 尚未完成")
            )
    return missing


def justify_no_capa(
    session: Session, *, actor: Authenticated, dev: Deviation, justification: str, now: datetime | None = None
) -> Deviation:
    require_role(
        actor, "qa", action=Reason("justifying a deviation without CAPA", "说明不采取纠正预防措施的理由")
    )
    _require_status(dev, "investigating", "capa", action=Reason("justifying no CAPA", "说明不采取措施的理由"))
    if not justification or not justification.strip():
        raise InvalidInputError(Reason("the justification cannot be empty", "理由不能为空"))
    now = now or utcnow()
    before = dev.no_capa_justification
    dev.no_capa_justification, dev.updated_at = justification.strip(), now
    session.add(dev)
    audit.record(
        session,
        actor=actor.username,
        action="deviation.no_capa",
        entity="deviation",
        entity_key=dev.number,
        before={"no_capa_justification": before},
        after={"no_capa_justification": dev.no_capa_justification},
        at=now,
    )
    return dev


def close_deviation(
    session: Session,
    *,
    signer: Authenticated,
    dev: Deviation,
    comment: str | None = None,
    now: datetime | None = None,
) -> Deviation:
    """QA closes the deviation with an e-signature over the investigation and CAPA."""
    require_role(signer, "qa", action=Reason("closing a deviation", "关闭偏差"))
    _require_status(dev, "capa", action=Reason("closing", "关闭"))
    missing = closure_gaps(session, dev)
    if missing:
        raise ConflictError(
            Reason(f"{dev.number} cannot be closed", f"偏差 {dev.number} 尚不能关闭"), missing
        )
    _closer_is_independent(session, dev, signer)
    now = now or utcnow()
    signatures.sign(
        session,
        signer=signer,
        meaning="approved",
        entity="deviation",
        entity_key=dev.number,
        scope="closure",
        statement="QA closure of the deviation",
        comment=comment,
        content=closure_content(session, dev),
        now=now,
    )
    dev.status, dev.closed_at, dev.updated_at = "closed", now, now
    session.add(dev)
    audit.record(
        session,
        actor=signer.username,
        action="deviation.close",
        entity="deviation",
        entity_key=dev.number,
        before={"status": "capa"},
        after={"status": "closed"},
        at=now,
    )
    return dev


def _closer_is_independent(session: Session, dev: Deviation, signer: Authenticated) -> None:
    """The closer wrote no part of the investigation and owns no CAPA action of it (compared
    by person: a second account of the same person is the same person)."""
    written = authors(session, dev).get(signer.who, set())
    owned = [c.id for c in capa_actions(session, dev) if person_of(session, c.owner) == signer.who]
    if not written and not owned:
        return
    parts = sorted(written) + [f"CAPA {i}" for i in owned]
    raise PermissionDeniedError(
        Reason(
            f"{signer.username} wrote or owns part of {dev.number} ({', '.join(parts)}); another QA person "
            "closes it (nobody checks their own entry)",
            f"{signer.username} 撰写或负责了偏差 {dev.number} 的部分内容（{', '.join(parts)}）；"
            "须由另一位 QA 人员关闭（任何人不得审核自己的记录）",
        )
    )


def signature_checks(session: Session, dev: Deviation) -> list[signatures.SignatureCheck]:
    """Each signature of the deviation checked against the content it signed."""
    views = {"investigation": investigation_content, "closure": closure_content}
    return signatures.check_all(
        signatures.signatures_of(session, "deviation", dev.number), lambda sig: views[sig.scope](session, dev)
    )


class DeviationBatchDoc(TypedDict):
    """A batch the deviation concerns, with QA's impact assessment for it (Art. 249)."""

    batch: str
    impact: str | None  # none | minor | significant; None while unassessed
    assessment: str | None
    assessed_by: str | None


class CapaDoc(TypedDict):
    id: int
    kind: str  # corrective | preventive
    description: str
    owner: str
    due: str
    status: str  # open | done | effective | not_effective
    outcome: str | None
    checked_by: str | None
    effectiveness_note: str | None


class CapaActionDoc(CapaDoc):
    """A CAPA action on its own, naming its deviation."""

    deviation: str


class DeviationDoc(TypedDict):
    """The deviation as the CLI, the API and the pages show it, with its signatures checked."""

    number: str
    title: str
    classification: str
    category: str
    description: str
    root_cause: str | None
    status: str
    no_capa_justification: str | None
    opened_at: str
    opened_by: str
    closed_at: str | None
    excursions: list[int]
    batches: list[DeviationBatchDoc]
    capa: list[CapaDoc]
    signatures: list[signatures.SignatureManifest]


def capa_doc(action: CapaAction) -> CapaDoc:
    return {
        "id": action.id,
        "kind": action.kind,
        "description": action.description,
        "owner": action.owner,
        "due": action.due.isoformat(),
        "status": action.status,
        "outcome": action.outcome,
        "checked_by": action.checked_by,
        "effectiveness_note": action.effectiveness_note,
    }


def capa_view(session: Session, action: CapaAction) -> CapaActionDoc:
    """One CAPA action with its deviation's number (what the CAPA actions answer)."""
    return {**capa_doc(action), "deviation": session.get(Deviation, action.deviation_id).number}


def deviation_document(session: Session, dev: Deviation, *, batch_numbers: Mapping[int, str]) -> DeviationDoc:
    """The deviation's read view; ``batch_numbers`` (batch id → number) comes from the batch
    records, which this module does not import (:mod:`tracker.quality.views` supplies it)."""
    tz = session.get(Site, dev.site_id).timezone
    return {
        **_snapshot(dev),
        "opened_at": iso_utc(dev.opened_at),
        "opened_by": dev.opened_by,
        "closed_at": iso_utc(dev.closed_at),
        "excursions": excursion_ids(session, dev),
        "batches": [
            {
                "batch": batch_numbers.get(b.batch_id, b.batch_id),
                "impact": b.impact,
                "assessment": b.assessment,
                "assessed_by": b.assessed_by,
            }
            for b in batch_links(session, dev)
        ],
        "capa": [capa_doc(c) for c in capa_actions(session, dev)],
        "signatures": [c.manifest(tz) for c in signature_checks(session, dev)],
    }


def state_gaps(session: Session, dev: Deviation) -> list[str]:
    """What the current state still lacks: before the investigation report can be approved
    (``investigating``) or before closure (``capa``); nothing in the other states."""
    if dev.status == "investigating":
        return investigation_gaps(session, dev)
    if dev.status == "capa":
        return closure_gaps(session, dev)
    return []


def source_excursions(session: Session, dev: Deviation) -> list[ExcursionDoc]:
    """The excursions the deviation was raised from, superseded ones included (the record keeps
    what it was raised from)."""
    return [
        excursion_json(ex, monitor, room)
        for ex, monitor, room in session.exec(
            select(Excursion, func.coalesce(Monitor.code, ViableSample.location), Room.code)
            .join(DeviationExcursion, DeviationExcursion.excursion_id == Excursion.id)
            .outerjoin(Monitor, Monitor.id == Excursion.monitor_id)
            .outerjoin(ViableSample, ViableSample.id == Excursion.viable_sample_id)
            .join(Room, Room.id == Excursion.room_id)
            .where(DeviationExcursion.deviation_id == dev.id)
            .order_by(Excursion.id)
        ).all()
    ]


def list_deviations(session: Session, *, status: str | None = None) -> list[Deviation]:
    query = select(Deviation).order_by(Deviation.number)
    if status == "not_closed":
        query = query.where(Deviation.status != "closed")
    elif status:
        query = query.where(Deviation.status == status)
    return list(session.exec(query))
