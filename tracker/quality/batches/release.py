"""The sign-off chain and the release gate (GMP 2010 Art. 20, 22, 23, 25, 175, 230).

production head signs the record (``approved``) → QA reviews it (``reviewed``) → the QP
releases it (``released``); QA or the QP may reject it instead (``rejected``). Every step is
an e-signature over the batch record's content, so a later change to a signed field shows
the signatures as broken.

Separation of duties: the production head's and QA's signatures come from different people
(Art. 20); nobody reviews a record they performed a step of; release needs the QP role
(Art. 25) and is not signed by the production head who approved the record.

The gate (Art. 230: all deviations explained or investigated and handled before release)
refuses QA review and release — listing every reason — while a linked deviation is not
closed, a proposed exposure link is undecided, a review-by-exception item is unassessed, a
confirmed exposure to an action excursion has no deviation, or a signature is broken.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.errors import ConflictError, InvalidInputError, PermissionDeniedError, Reason, zh_word
from tracker.core.pseudonyms import is_pseudonym, pseudonym
from tracker.core.timeutil import iso_utc, utcnow
from tracker.facility.models import Room, Site
from tracker.identity import signatures
from tracker.identity.users import Authenticated, User, persons_of, require_role
from tracker.quality.batches.environment import environment_content
from tracker.quality.batches.linking import decision_checks, links_of, sync_links, uncovered_action_exposures
from tracker.quality.batches.models import Batch, PostReleaseAssessment, ProcessStep
from tracker.quality.batches.postrelease import assessment_content, remember_release
from tracker.quality.batches.review import ReviewItem, review_items
from tracker.quality.batches.steps import step_content, steps_of
from tracker.quality.batches.viable import check_review_signature, open_reasons
from tracker.quality.deviations import Deviation, DeviationBatch


class StepDoc(TypedDict):
    id: int
    name: str
    room: str
    start: str
    end: str | None
    open_processing: bool
    operator: str


class BatchContent(TypedDict):
    number: str
    product: str
    donor_id: str
    patient_id: str | None
    steps: list[StepDoc]


def as_signed_before_pseudonyms(signed: dict, record: BatchContent) -> BatchContent:
    """The record with the clear identifiers a signature made before migration 0026 holds, when
    they are exactly the ones the stored pseudonyms stand for (their HMAC under the identity
    key): such a signature still proves the record, it was only signed over the clear value."""
    swapped = dict(record)
    for kind, field in (("donor", "donor_id"), ("patient", "patient_id")):
        value, stored = signed.get(field), record[field]  # type: ignore[literal-required]
        if value is None or value == stored or is_pseudonym(kind, value):
            continue
        if stored is None or pseudonym(kind, value) != stored:
            return record
        swapped[field] = value
    return swapped  # type: ignore[return-value]


def batch_content(session: Session, batch: Batch) -> BatchContent:
    """The batch record as signed: identity, chain of identity (pseudonyms) and every step."""
    return {
        "number": batch.number,
        "product": batch.product,
        "donor_id": batch.donor_id,
        "patient_id": batch.patient_id,
        "steps": [
            {
                "id": s.id,
                "name": s.name,
                "room": session.get(Room, s.room_id).code,
                "start": iso_utc(s.start),
                "end": iso_utc(s.end),
                "open_processing": s.open_processing,
                "operator": s.operator,
            }
            for s in steps_of(session, batch)
        ],
    }


#: the batch signatures whose statement covers environmental monitoring and deviations: they
#: sign the record and the environmental picture (:mod:`tracker.quality.batches.environment`)
ENVIRONMENT_SCOPES = ("qa_review", "release")


def signed_content(session: Session, batch: Batch, *, now: datetime | None = None) -> dict:
    """What QA's review and the QP's release sign: the batch record and its environment."""
    return {**batch_content(session, batch), "environment": environment_content(session, batch, now=now)}


def _check_batch(
    sig: signatures.Signature, record: BatchContent, environment: Callable[[], dict]
) -> signatures.SignatureCheck:
    """Check one of the batch's own signatures. One signed with the environment (QA review and
    release since issue 15; earlier ones signed the record alone) whose record still matches but
    whose picture changed is *outdated* — new facts, not an edit — and shows as ``changed``."""
    signed = json.loads(sig.content)
    record = as_signed_before_pseudonyms(signed, record)
    if sig.scope not in ENVIRONMENT_SCOPES or "environment" not in signed:
        return signatures.check(sig, record)
    result = signatures.check(sig, {**record, "environment": environment()})
    if result.intact or result.problem != "the record changed after it was signed":
        return result
    del signed["environment"]
    if signatures.content_hash(signed) != signatures.content_hash(record):
        return result
    return signatures.SignatureCheck(sig, False, signatures.ENVIRONMENT_CHANGED, outdated=True)


def _check_assessment(session: Session, sig: signatures.Signature) -> signatures.SignatureCheck:
    """A post-release assessment, checked against its assessment and events as stored."""
    row = session.get(PostReleaseAssessment, int(sig.scope.partition(":")[2]))
    return signatures.check(sig, assessment_content(session, row) if row else {"missing": sig.scope})


def signature_checks(session: Session, batch: Batch) -> list[signatures.SignatureCheck]:
    """The batch's own signatures, its steps' ``performed`` signatures and its exposure-link
    decisions, each checked (older ones of a scope — a QA review done again — superseded)."""
    record = batch_content(session, batch)
    env: list[dict] = []

    def environment() -> dict:
        if not env:
            env.append(environment_content(session, batch))
        return env[0]

    own = signatures.signatures_of(session, "batch", batch.number)
    newest = {sig.scope: sig.id for sig in own}
    checks = [
        signatures.sealed_only(sig)
        if newest[sig.scope] != sig.id
        else _check_assessment(session, sig)
        if sig.scope.startswith("post_release:")
        else check_review_signature(session, sig)
        if sig.scope.startswith("viable_review:")
        else _check_batch(sig, record, environment)
        for sig in own
    ]
    for step in steps_of(session, batch):
        checks += signatures.check_all(
            signatures.signatures_of(session, "process_step", str(step.id)),
            lambda _sig, step=step: step_content(session, step),
        )
    for link in links_of(session, batch):
        checks += decision_checks(session, link)
    return checks


#: the signatures a batch status stands on (a status without them was not reached by signing)
DEVIATION_STATUS_ZH = {"open": "已开启", "investigating": "调查中", "capa": "纠正预防措施阶段"}
SIGNATURE_PROBLEM_ZH = signatures.PROBLEMS_ZH

SCOPE_ZH = {"production": "生产负责人批准", "qa_review": "QA 审核", "release": "放行", "rejection": "拒绝"}

REQUIRED_SCOPES = {
    "production_signed": ("production",),
    "qa_reviewed": ("production", "qa_review"),
    "released": ("production", "qa_review", "release"),
    "rejected": ("rejection",),
}


def status_problems(
    session: Session, batch: Batch, checks: list[signatures.SignatureCheck] | None = None
) -> list[str]:
    """A status or an ended step without the signature it needs (e.g. a raw SQL status change);
    ``checks`` are the batch's signature checks when the caller has them already."""
    checks = signature_checks(session, batch) if checks is None else checks
    scopes = {c.signature.scope for c in checks if c.signature.entity == "batch" and (c.intact or c.outdated)}
    problems = [
        Reason(
            f"batch {batch.number} is {batch.status} without its {scope} signature",
            f"批次 {batch.number} 状态为“{zh_word(batch.status)}”，却缺少{SCOPE_ZH.get(scope, scope)}签名",
        )
        for scope in REQUIRED_SCOPES.get(batch.status, ())
        if scope not in scopes
    ]
    for step in steps_of(session, batch):
        if step.end is not None and not signatures.signatures_of(session, "process_step", str(step.id)):
            problems.append(
                Reason(
                    f"step {step.id} of batch {batch.number} ended without its performed signature",
                    f"批次 {batch.number} 的工序 {step.id} 已结束，却没有操作人的执行签名",
                )
            )
    return problems


def _signer_of(session: Session, batch: Batch, scope: str) -> str | None:
    """The person who signed ``scope`` last (a person, not an account: two accounts of one
    person are one person)."""
    sigs = [s for s in signatures.signatures_of(session, "batch", batch.number) if s.scope == scope]
    if not sigs:
        return None
    user = session.get(User, sigs[-1].user_id)
    return user.person if user is not None else sigs[-1].username


def _operators(session: Session, batch: Batch) -> set[str]:
    """The persons who performed the batch's steps."""
    return persons_of(
        session,
        {s.operator for s in session.exec(select(ProcessStep).where(ProcessStep.batch_id == batch.id))},
    )


def _own_entry(signer: Authenticated, batch: Batch) -> PermissionDeniedError:
    return PermissionDeniedError(
        Reason(
            f"{signer.username} performed steps of {batch.number}; nobody reviews their own entry",
            f"{signer.username} 执行过批次 {batch.number} 的工序；任何人不得审核自己的记录",
        )
    )


def open_deviations(session: Session, batch: Batch) -> list[Deviation]:
    return list(
        session.exec(
            select(Deviation)
            .join(DeviationBatch, DeviationBatch.deviation_id == Deviation.id)
            .where(DeviationBatch.batch_id == batch.id, Deviation.status != "closed")
            .order_by(Deviation.number)
        )
    )


def gate_reasons(
    session: Session,
    batch: Batch,
    *,
    now: datetime | None = None,
    items: list[ReviewItem] | None = None,
    checks: list[signatures.SignatureCheck] | None = None,
    redoing: str | None = None,
) -> list[str]:
    """Why the batch cannot be QA-reviewed or released now (empty when the gate is open).
    ``items`` and ``checks`` are the review items and signature checks when the caller has
    them already (:func:`tracker.quality.batches.views.batch_report`, which reads the links as
    stored); without ``items`` the exposure proposals are brought up to date first (a write).
    ``redoing``: the scope being signed again (QA's review after its picture changed), whose
    outdated signature is then no reason."""
    # a step still running: its environment is not known to its end (issue 17: never "open" meanwhile)
    reasons = [
        Reason(
            f"step {step.id} ({step.name}) is still running",
            f"工序 {step.id}（{step.name}）仍在进行中",
        )
        for step in steps_of(session, batch)
        if step.end is None
    ]
    reasons += [
        Reason(
            f"deviation {d.number} is {d.status}, not closed",
            f"偏差 {d.number} 处于“{DEVIATION_STATUS_ZH.get(d.status, d.status)}”，尚未关闭",
        )
        for d in open_deviations(session, batch)
    ]
    if items is None:
        sync_links(session, batch=batch, now=now)
        items = review_items(session, batch, now=now)
    for link in links_of(session, batch):
        if link.status == "proposed":
            reasons.append(
                Reason(
                    f"exposure link {link.id} (excursion {link.excursion_id}, step {link.step_id}) is undecided",
                    f"关联建议 {link.id}（超标 {link.excursion_id}，工序 {link.step_id}）尚未确认或否定",
                )
            )
    for item in items:
        if item.kind == "coverage_gap" and item.exposed == "unassessed":
            reasons.append(_coverage_reason(item))
        elif item.kind != "excursion" and item.exposed == "unassessed":
            reasons.append(
                Reason(
                    f"review item {item.key} ({item.detail.get('invalid_reasons')}) is unassessed",
                    f"例外审核项 {item.key}（{item.detail.get('invalid_reasons')}）尚未评估",
                )
            )
    for link in uncovered_action_exposures(session, batch):
        reasons.append(
            Reason(
                f"confirmed exposure to action excursion {link.excursion_id} has no deviation "
                "linked to this batch",
                f"已确认受纠偏超标 {link.excursion_id} 影响，但没有与本批关联的偏差",
            )
        )
    checks = signature_checks(session, batch) if checks is None else checks
    reasons += _signature_reasons(checks, redoing)
    return reasons + status_problems(session, batch, checks)


def _coverage_reason(item: ReviewItem) -> Reason:
    """A step of a grade A/B room that ran without particle monitoring, in words."""
    when = f"{iso_utc(item.start)} – {iso_utc(item.end) if item.end else '…'}"
    if not item.monitor:
        return Reason(
            f"step {item.step_id} in room {item.room} (grade A/B) has no particle monitor: assess {item.key}",
            f"工序 {item.step_id} 所在房间 {item.room}（A/B 级）没有悬浮粒子监测点：请评估 {item.key}",
        )
    return Reason(
        f"particle monitor {item.monitor} in room {item.room} sent nothing during step {item.step_id} "
        f"({when}): assess {item.key}",
        f"工序 {item.step_id} 期间（{when}）房间 {item.room} 的悬浮粒子监测点 {item.monitor} 无数据："
        f"请评估 {item.key}",
    )


def _signature_reasons(checks: list[signatures.SignatureCheck], redoing: str | None) -> list[Reason]:
    """Broken signatures, and a QA review whose environmental picture changed since."""
    reasons = []
    for check in checks:
        sig = check.signature
        if check.outdated and sig.scope == redoing:
            continue  # the signature being given again
        if check.outdated:
            reasons.append(
                Reason(
                    f"the {sig.scope} signature {sig.id} by {sig.username} was given over an environmental "
                    "picture that has changed since: QA reviews the batch again",
                    f"{sig.username} 的{SCOPE_ZH.get(sig.scope, sig.scope)}签名 {sig.id} 所依据的环境监测情况"
                    "此后已发生变化：须由 QA 重新审核该批次",
                )
            )
        elif not check.intact:
            reasons.append(
                Reason(
                    f"signature {sig.id} ({sig.meaning} by {sig.username}) is broken: {check.problem}",
                    f"电子签名 {sig.id}（{sig.username}）已失效："
                    f"{SIGNATURE_PROBLEM_ZH.get(check.problem, check.problem)}",
                )
            )
    return reasons


def _refuse_if_gate_closed(
    session: Session, batch: Batch, action: Reason, now: datetime, *, redoing: str | None = None
) -> None:
    reasons = gate_reasons(session, batch, now=now, redoing=redoing)
    if reasons:
        raise ConflictError(
            Reason(f"{action} of batch {batch.number} refused", f"批次 {batch.number} 的{action.zh}被拒绝"),
            reasons,
        )


def _transition(
    session: Session,
    *,
    signer: Authenticated,
    batch: Batch,
    to: str,
    meaning: str,
    scope: str,
    statement: str,
    comment: str | None,
    now: datetime,
) -> Batch:
    sig = signatures.sign(
        session,
        signer=signer,
        meaning=meaning,
        entity="batch",
        entity_key=batch.number,
        scope=scope,
        statement=statement,
        content=signed_content(session, batch, now=now)
        if scope in ENVIRONMENT_SCOPES
        else batch_content(session, batch),
        comment=comment,
        now=now,
    )
    before = batch.status
    # only from the status checked above: a concurrent transition makes this one fail, not both pass
    moved = session.execute(
        update(Batch).where(Batch.id == batch.id, Batch.status == before).values(status=to, updated_at=now)
    ).rowcount
    if moved != 1:
        raise ConflictError(
            Reason(
                f"batch {batch.number} changed while this was being signed; look again",
                f"签名期间批次 {batch.number} 已被他人更改；请重新查看",
            )
        )
    session.refresh(batch)
    audit.record(
        session,
        actor=signer.username,
        action=f"batch.{to}",
        entity="batch",
        entity_key=batch.number,
        before={"status": before},
        after={"status": to, "signature": sig.seal},
        reason=comment,
        at=now,
    )
    return batch


def sign_production(
    session: Session,
    *,
    signer: Authenticated,
    batch: Batch,
    comment: str | None = None,
    now: datetime | None = None,
) -> Batch:
    """The production head approves the completed record (Art. 22)."""
    require_role(signer, "production_head", action=Reason("the production sign-off", "生产负责人签名批准"))
    if batch.status != "completed":
        raise ConflictError(
            Reason(
                f"batch {batch.number} is {batch.status}; production signs a completed record",
                f"批次 {batch.number} 处于“{zh_word(batch.status)}”；生产负责人只签名批准已完成的批记录",
            )
        )
    if signer.who in _operators(session, batch):
        raise _own_entry(signer, batch)
    now = now or utcnow()
    broken = [c for c in signature_checks(session, batch) if c.broken]
    if broken:
        raise ConflictError(
            Reason(f"batch {batch.number} cannot be signed", f"批次 {batch.number} 尚不能签名"),
            [
                Reason(
                    f"signature {c.signature.id} is broken: {c.problem}",
                    f"电子签名 {c.signature.id} 已失效：{SIGNATURE_PROBLEM_ZH.get(c.problem, c.problem)}",
                )
                for c in broken
            ],
        )
    return _transition(
        session,
        signer=signer,
        batch=batch,
        to="production_signed",
        meaning="approved",
        scope="production",
        statement="production head approves the batch record (GMP 2010 Art. 22)",
        comment=comment,
        now=now,
    )


def _review_outdated(session: Session, batch: Batch) -> bool:
    """Is the batch QA-reviewed over an environmental picture that has changed since?"""
    checks = [c for c in signature_checks(session, batch) if c.signature.scope == "qa_review"]
    return bool(checks) and checks[-1].outdated


def qa_review(
    session: Session,
    *,
    signer: Authenticated,
    batch: Batch,
    comment: str | None = None,
    now: datetime | None = None,
) -> Batch:
    """QA reviews the record, environment and deviations included (Art. 23), behind the gate.
    A review whose environmental picture changed before release (a late reading, a new
    excursion) is done again: the new signature supersedes the old one."""
    require_role(signer, "qa", action=Reason("QA batch-record review", "QA 审核批记录"))
    again = batch.status == "qa_reviewed" and _review_outdated(session, batch)
    if batch.status != "production_signed" and not again:
        raise ConflictError(
            Reason(
                f"batch {batch.number} is {batch.status}; QA reviews a record the production head has signed",
                f"批次 {batch.number} 处于“{zh_word(batch.status)}”；QA 只审核生产负责人已签名的批记录",
            )
        )
    if signer.who == _signer_of(session, batch, "production"):
        raise PermissionDeniedError(
            Reason(
                "the production head's and QA's signatures must come from different people (GMP 2010 Art. 20)",
                "生产负责人和 QA 的签名必须来自不同的人（GMP（2010）第二十条）",
            )
        )
    if signer.who in _operators(session, batch):
        raise _own_entry(signer, batch)
    now = now or utcnow()
    _refuse_if_gate_closed(
        session, batch, Reason("QA review", "QA 审核"), now, redoing="qa_review" if again else None
    )
    return _transition(
        session,
        signer=signer,
        batch=batch,
        to="qa_reviewed",
        meaning="reviewed",
        scope="qa_review",
        statement="QA batch-record review incl. environmental monitoring "
        "and deviations (GMP 2010 Art. 23, 230)",
        comment=comment,
        now=now,
    )


def release(
    session: Session,
    *,
    signer: Authenticated,
    batch: Batch,
    comment: str | None = None,
    conditional_reason: str | None = None,
    now: datetime | None = None,
) -> Batch:
    """The qualified person releases the batch (Art. 25, 230), behind the gate.

    While viable results are open (a culture incubates longer than a cell product keeps) only a
    **conditional release** is possible: the QP gives ``conditional_reason`` (shelf life, clinical
    need), signs over the open samples, and a signed viable review follows when the last result
    arrives (``tracker.quality.batches.viable``; regulatory.md §6.5)."""
    require_role(signer, "qp", action=Reason("release", "放行"))
    if batch.status != "qa_reviewed":
        raise ConflictError(
            Reason(
                f"batch {batch.number} is {batch.status}; the QP releases a QA-reviewed batch",
                f"批次 {batch.number} 处于“{zh_word(batch.status)}”；质量受权人只放行 QA 已审核的批次",
            )
        )
    _releaser_is_independent(session, batch, signer)
    now = now or utcnow()
    _refuse_if_gate_closed(session, batch, Reason("release", "放行"), now)
    still_open = open_reasons(session, batch)
    conditional = (conditional_reason or "").strip()
    if still_open and not conditional:
        raise ConflictError(
            Reason(
                f"release of batch {batch.number} refused: viable results are still open; the QP may "
                "release it conditionally, giving the reason (shelf life, clinical need)",
                f"批次 {batch.number} 的放行被拒绝：微生物结果尚未全部出来；质量受权人可附理由（有效期、临床需要）有条件放行",
            ),
            still_open,
        )
    if conditional and not still_open:
        raise ConflictError(
            Reason(
                f"batch {batch.number} has no open viable results: release it without conditions",
                f"批次 {batch.number} 没有未出的微生物结果：请正常放行",
            )
        )
    if conditional:
        batch.conditional_release, batch.conditional_reason = True, conditional
        session.add(batch)
        session.flush()
    batch = _transition(
        session,
        signer=signer,
        batch=batch,
        to="released",
        meaning="released",
        scope="release",
        statement=(
            "qualified person conditionally releases the batch with viable results open "
            f"({len(still_open)} sample(s)); reason: {conditional} (GMP 2010 Art. 25, 230; regulatory.md §6.5)"
            if conditional
            else "qualified person releases the batch (GMP 2010 Art. 25, 230; 产品放行审核记录)"
        ),
        comment=comment or (conditional or None),
        now=now,
    )
    remember_release(session, batch, now=now)  # from now on the batch keeps listening
    return batch


def _releaser_is_independent(session: Session, batch: Batch, signer: Authenticated) -> None:
    """The QP is another person than production's signer and the operators (Art. 20, 25) and,
    unless the facility file allows it (``[separation] qa_reviewer_may_release``), than QA's
    reviewer."""
    if signer.who == _signer_of(session, batch, "production") or signer.who in _operators(session, batch):
        raise PermissionDeniedError(
            Reason(
                "the QP who releases must be independent of the batch's production (GMP 2010 Art. 20, 25)",
                "放行的质量受权人必须独立于该批次的生产（GMP（2010）第二十条、第二十五条）",
            )
        )
    site = session.get(Site, batch.site_id)
    if signer.who == _signer_of(session, batch, "qa_review") and not site.qa_reviewer_may_release:
        raise PermissionDeniedError(
            Reason(
                f"{signer.username} signed the QA review of {batch.number}: the QP who releases is another "
                "person (a site whose QA head is also the QP sets [separation] qa_reviewer_may_release = true "
                "in its facility file; GMP 2010 Art. 20)",
                f"{signer.username} 已签署批次 {batch.number} 的 QA 审核：放行的质量受权人须为另一人"
                "（质量管理负责人兼任质量受权人的企业，须在设施文件中设置 [separation] "
                "qa_reviewer_may_release = true；GMP（2010）第二十条）",
            )
        )


def reject(
    session: Session, *, signer: Authenticated, batch: Batch, reason: str, now: datetime | None = None
) -> Batch:
    """QA or the QP rejects the batch: a signed decision with its reason."""
    require_role(signer, "qa", "qp", action=Reason("rejecting a batch", "拒绝批次"))
    if batch.status in ("released", "rejected"):
        raise ConflictError(
            Reason(
                f"batch {batch.number} is {batch.status} already",
                f"批次 {batch.number} 已是“{zh_word(batch.status)}”",
            )
        )
    if not reason or not reason.strip():
        raise InvalidInputError(Reason("a rejection needs its reason", "拒绝须说明理由"))
    running = [s.id for s in steps_of(session, batch) if s.end is None]
    if running:
        raise ConflictError(
            Reason(
                f"batch {batch.number} still has running steps; end them first "
                "(their rooms stay in operation until then)",
                f"批次 {batch.number} 仍有进行中的工序；请先结束（结束前其房间保持动态）",
            ),
            [Reason(f"step {i}", f"工序 {i}") for i in running],
        )
    return _transition(
        session,
        signer=signer,
        batch=batch,
        to="rejected",
        meaning="rejected",
        scope="rejection",
        statement="batch rejected",
        comment=reason.strip(),
        now=now or utcnow(),
    )
