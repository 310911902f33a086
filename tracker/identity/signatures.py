"""Electronic signatures bound to the exact content signed (21 CFR 11.50, 11.70, 11.200;
China GMP 2010 Art. 163 and the 计算机化系统附录).

A signature stores the printed name, the UTC time, the meaning, and the canonical JSON of the
record as signed with its SHA-256. Checking a signature recomputes the record's content
from the database: any later change to a signed field — through the application or behind
its back with raw SQL — shows the signature as broken. The signature row carries a seal over
its own fields too, so editing the row itself is detected as well, and every signing is an
audit event carrying the seal, so a deleted signature row is found by ``tracker audit verify``.

When a record is legitimately signed again for the same purpose (an investigation report
re-approved after a new batch was linked), the earlier signature is *superseded*: it still
proves what was signed then, and only the newest is compared with the record as it stands.

Every signing needs a fresh re-authentication (:func:`tracker.identity.users.require_fresh`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text
from sqlmodel import Field, Session, SQLModel, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.classification import classified
from tracker.core.db import UTCDateTime
from tracker.core.errors import InvalidInputError, Reason, zh_words
from tracker.core.keys import keyring
from tracker.core.timeutil import iso_utc, local_display, utcnow
from tracker.identity.users import Authenticated, require_fresh

#: what a signature means (21 CFR 11.50(a)(3)); ``rejected`` records a signed refusal
MEANINGS = ("performed", "reviewed", "approved", "released", "rejected")

#: the statements the services sign with (stored in English, part of the seal) as zh-CN pages
#: show them: (pattern over the stored text, Chinese with the pattern's groups)
STATEMENTS_ZH: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(p), zh)
    for p, zh in (
        (
            r"production head approves the batch record \(GMP 2010 Art\. 22\)",
            "生产负责人批准批生产记录（GMP（2010）第二十二条）",
        ),
        (
            r"QA batch-record review incl\. environmental monitoring and deviations \(GMP 2010 Art\. 23, 230\)",
            "QA 审核批生产记录，包括环境监测和偏差（GMP（2010）第二十三条、第二百三十条）",
        ),
        (
            r"qualified person releases the batch \(GMP 2010 Art\. 25, 230; 产品放行审核记录\)",
            "质量受权人放行该批次（GMP（2010）第二十五条、第二百三十条；产品放行审核记录）",
        ),
        (r"batch rejected", "拒绝该批次"),
        (
            r"QA confirms that step (\d+) of batch (\S+) was exposed to excursion (\d+)",
            r"QA 确认批次 \2 的工序 \1 受超标 \3 影响",
        ),
        (
            r"QA confirms that step (\d+) of batch (\S+) was not exposed to excursion (\d+)",
            r"QA 确认批次 \2 的工序 \1 未受超标 \3 影响",
        ),
        (
            r"QA assesses the environmental facts that reached batch (\S+) after its release: no impact",
            r"QA 评估批次 \1 放行后新增的环境监测情况：无影响",
        ),
        (
            r"QA assesses the environmental facts that reached batch (\S+) after its release: deviation (\S+)",
            r"QA 评估批次 \1 放行后新增的环境监测情况：已开启偏差 \2",
        ),
        (
            r"QA approves the roles (\S+) for (\S+) \(person (.+)\)",
            r"QA 批准授予 \2（人员 \3）角色 \1",
        ),
        (
            r"operator confirms the step as performed \(GMP 2010 Art\. 174\)",
            "操作人确认工序已按记录执行（GMP（2010）第一百七十四条）",
        ),
        (
            r"production head ends the step of (\S+), who could not \(their own performed signature is missing\)",
            r"生产负责人代 \1 结束工序（其本人无法签署执行签名）",
        ),
        (
            r"QA approval of the investigation report \(GMP 2010 Art\. 250\)",
            "QA 批准偏差调查报告（GMP（2010）第二百五十条）",
        ),
        (r"QA closure of the deviation", "QA 关闭偏差"),
        (r"QA approves the change of facility limits \(revision (\d+)\)", r"QA 批准设施限度变更（版本 \1）"),
        (
            r"QA approves data-driven levels of proposal (\d+) \(facility revision (\d+)\)",
            r"QA 批准基于数据的限度建议 \1（设施版本 \2）",
        ),
        (r"QA prepared the annual evaluation report (\S+)", r"QA 编制年度评估报告 \1"),
        (
            r"head of quality approves the annual evaluation report (\S+)",
            r"质量管理负责人批准年度评估报告 \1",
        ),
        (
            r"QA confirms the statement on major quality or safety incidents of the annual evaluation report (\S+)",
            r"QA 确认年度评估报告 \1 的重大质量、安全事故声明",
        ),
        (
            r"QA reviewed the alert and action levels of (\S+) against the data of (\S+)",
            r"QA 依据 \2 期间的数据审核了 \1 的警戒和纠偏限度",
        ),
    )
)
#: a signature over a batch's environmental picture (QA review, release) whose picture changed
#: since: not tampering, but no longer what the signer saw (``SignatureCheck.outdated``)
ENVIRONMENT_CHANGED = "the environmental picture changed after it was signed"
PROBLEMS_ZH = {
    "the record changed after it was signed": "签名后记录被修改",
    "the signature record itself was altered": "签名记录本身被篡改",
    ENVIRONMENT_CHANGED: "签名后环境监测情况发生了变化",
}


def statement_said(statement: str) -> Reason:
    """A stored statement with its Chinese wording (the statement itself stays as signed)."""
    for pattern, zh in STATEMENTS_ZH:
        if pattern.fullmatch(statement):
            return Reason(statement, pattern.sub(zh, statement))
    return Reason(statement, statement)


class Signature(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    entity: str = Field(max_length=40, index=True)
    entity_key: str = Field(max_length=200, index=True)
    meaning: str = Field(max_length=20)
    #: which content view of the entity was signed (e.g. ``batch_record``, ``investigation``)
    scope: str = Field(max_length=40)
    #: what was signed, in words (e.g. "production review of the batch record")
    statement: str = Field(max_length=200)
    user_id: int = Field(foreign_key="app_user.id")
    username: str = Field(max_length=60)
    printed_name: str = Field(max_length=200)
    signed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    comment: str | None = Field(default=None, sa_column=Column(Text))
    #: the canonical JSON of exactly what was signed, kept so the signed record can be shown
    content: str = Field(
        sa_column=Column(
            Text,
            nullable=False,
            info=classified(
                "sensitive",
                export="omitted",
                clear_roles=("qa", "qp", "admin", "viewer"),
                why="what was signed; before migration 0026 a batch's clear donor/patient ID (exports carry the hash)",
            ),
        )
    )
    content_hash: str = Field(max_length=64)
    #: HMAC of the manifest and the content hash under the site key (``key_id``); empty
    #: ``key_id``: sealed with plain SHA-256 before the key existed
    seal: str = Field(max_length=64)
    key_id: str = Field(default="", max_length=16)


def canonical(content: Any) -> str:
    return json.dumps(content, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def content_hash(content: Any) -> str:
    return hashlib.sha256(canonical(content).encode("utf-8")).hexdigest()


def _manifest(sig: Signature) -> bytes:
    return json.dumps(
        [
            sig.entity,
            sig.entity_key,
            sig.meaning,
            sig.scope,
            sig.statement,
            sig.user_id,
            sig.username,
            sig.printed_name,
            iso_utc(sig.signed_at),
            sig.comment,
            sig.content_hash,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


def _seal_ok(sig: Signature) -> bool:
    if sig.key_id:
        return keyring().check(sig.key_id, _manifest(sig), sig.seal)
    return hashlib.sha256(_manifest(sig)).hexdigest() == sig.seal


def sign(
    session: Session,
    *,
    signer: Authenticated,
    meaning: str,
    entity: str,
    entity_key: str,
    scope: str,
    statement: str,
    content: Any,
    comment: str | None = None,
    now: datetime | None = None,
) -> Signature:
    """Sign ``content`` (the record as it stands) with a fresh re-authentication; audited."""
    if meaning not in MEANINGS:
        raise InvalidInputError(
            Reason(
                f"meaning must be one of {', '.join(MEANINGS)}", f"签名含义须为以下之一：{zh_words(MEANINGS)}"
            )
        )
    now = now or utcnow()
    user = require_fresh(session, signer, now=now)
    text = canonical(content)
    sig = Signature(
        entity=entity,
        entity_key=entity_key,
        meaning=meaning,
        scope=scope,
        statement=statement,
        content=text,
        user_id=user.id,
        username=user.username,
        printed_name=user.full_name,
        signed_at=now,
        comment=comment,
        content_hash=content_hash(content),
        seal="",
    )
    sig.key_id, sig.seal = keyring().mac(_manifest(sig))
    session.add(sig)
    audit.record(
        session,
        actor=user.username,
        action=f"signature.{meaning}",
        entity=entity,
        entity_key=entity_key,
        after={
            "scope": scope,
            "statement": statement,
            "printed_name": user.full_name,
            "content_hash": sig.content_hash,
            "seal": sig.seal,
        },
        reason=comment,
        at=now,
    )
    return sig


class SignatureManifest(TypedDict):
    """One signature as every human-readable form shows it (21 CFR 11.50)."""

    id: int
    printed_name: str
    username: str
    meaning: str
    scope: str
    statement: str
    signed_at: str
    signed_at_local: str
    comment: str | None
    intact: bool
    status: str  # intact | superseded | broken | changed
    problem: str | None


@dataclass(frozen=True)
class SignatureCheck:
    signature: Signature
    intact: bool
    problem: str | None
    superseded: bool = False
    #: the signed record is unchanged but the environmental picture it also bound has changed
    #: since (new facts, not an edit): ``changed``, no longer matching, not broken
    outdated: bool = False

    @property
    def status(self) -> str:
        if self.outdated:
            return "changed"
        return "broken" if not self.intact else ("superseded" if self.superseded else "intact")

    @property
    def broken(self) -> bool:
        return not self.intact and not self.outdated

    def manifest(self, tz: str) -> SignatureManifest:
        """What every human-readable form shows (21 CFR 11.50): name, time, meaning, status."""
        s = self.signature
        problem = Reason(self.problem, PROBLEMS_ZH.get(self.problem, self.problem)) if self.problem else None
        return {
            "id": s.id,
            "printed_name": s.printed_name,
            "username": s.username,
            "meaning": s.meaning,
            "scope": s.scope,
            "statement": statement_said(s.statement),
            "signed_at": iso_utc(s.signed_at),
            "signed_at_local": local_display(s.signed_at, tz),
            "comment": s.comment,
            "intact": self.intact,
            "status": self.status,
            "problem": problem,
        }


def _sealed(sig: Signature) -> str | None:
    if not _seal_ok(sig) or sig.content_hash != hashlib.sha256(sig.content.encode("utf-8")).hexdigest():
        return "the signature record itself was altered"
    return None


def check(sig: Signature, content: Any) -> SignatureCheck:
    """Is ``sig`` still valid for the record as it stands now?"""
    problem = _sealed(sig)
    if problem is None and sig.content_hash != content_hash(content):
        problem = "the record changed after it was signed"
    return SignatureCheck(sig, problem is None, problem)


def sealed_only(sig: Signature) -> SignatureCheck:
    """A superseded signature: only its own integrity is checked (it proves what was signed then)."""
    problem = _sealed(sig)
    return SignatureCheck(sig, problem is None, problem, superseded=True)


def check_all(sigs: list[Signature], content_of: Callable[[Signature], Any]) -> list[SignatureCheck]:
    """Check a record's signatures: the newest of each scope against the record as it stands,
    older ones of the same scope only for their own integrity (superseded)."""
    newest = {sig.scope: sig.id for sig in sigs}  # sigs come in signing order
    checks = []
    for sig in sigs:
        if newest[sig.scope] == sig.id:
            checks.append(check(sig, content_of(sig)))
        else:
            problem = _sealed(sig)
            checks.append(SignatureCheck(sig, problem is None, problem, superseded=True))
    return checks


def signatures_of(session: Session, entity: str, entity_key: str) -> list[Signature]:
    return list(
        session.exec(
            select(Signature)
            .where(Signature.entity == entity, Signature.entity_key == entity_key)
            .order_by(Signature.signed_at, Signature.id)
        )
    )
