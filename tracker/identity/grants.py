"""Signing roles take two people: an admin asks, another person from QA approves with an
e-signature (DESIGN §10 "Persons, not accounts"; GMP 2010 Art. 16–17: QA takes part in all
quality-related activities; 21 CFR 11.200(a)(2), 11.300).

An admin's request is a :class:`~tracker.identity.users.RoleGrant`; the roles come into force
only here. The approver is neither the person who asked nor the person who receives the role.
The one exception is the site's installation: while no account holding QA has ever been
enrolled there is nobody to approve, so the first QA account's role is approved by an admin
(another person than its owner), audited as ``user.bootstrap``; that door closes for good with
the first QA enrolment.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select
from typing_extensions import TypedDict

from tracker.core import audit
from tracker.core.errors import ConflictError, NotFoundError, PermissionDeniedError, Reason
from tracker.core.timeutil import iso_utc, utcnow
from tracker.identity import signatures
from tracker.identity.users import (
    Authenticated,
    RoleGrant,
    User,
    account_json,
    check_person_roles,
    qa_ever_enrolled,
    require_role,
)

SCOPE = "role_grant"


class GrantDoc(TypedDict):
    """A signing-role request as QA sees it before approving."""

    id: int
    username: str
    full_name: str
    person: str
    roles: str
    in_force: str
    requested_by: str
    requested_at: str
    reason: str
    status: str  # pending | approved | withdrawn


def _grant(session: Session, grant_id: int) -> tuple[RoleGrant, User]:
    grant = session.get(RoleGrant, grant_id)
    if grant is None:
        raise NotFoundError(Reason(f"no role request {grant_id}", f"没有角色申请 {grant_id}"))
    if grant.status != "pending":
        raise ConflictError(
            Reason(
                f"role request {grant_id} is {grant.status}, not pending",
                f"角色申请 {grant_id} 已不是待批准状态（{grant.status}）",
            )
        )
    return grant, session.get(User, grant.user_id)


def grant_content(session: Session, grant: RoleGrant) -> dict:
    """What the approver signs: who receives which roles, asked by whom and why."""
    user = session.get(User, grant.user_id)
    return {
        "grant": grant.id,
        "username": user.username,
        "full_name": user.full_name,
        "person": user.person,
        "roles": grant.roles,
        "requested_by": grant.requested_by,
        "requested_at": iso_utc(grant.requested_at),
        "reason": grant.reason,
    }


def _apply(session: Session, grant: RoleGrant, user: User, *, by: str, action: str, now: datetime) -> None:
    """Put the roles in force (the person's other accounts checked again) and audit it."""
    check_person_roles(session, person=user.person, roles=grant.roles.split(","), besides=user.id)
    before = account_json(user)
    user.roles = grant.roles
    grant.status, grant.decided_by, grant.decided_at = "approved", by, now
    session.add(user)
    session.add(grant)
    audit.record(
        session,
        actor=by,
        action="user.roles",
        entity="user",
        entity_key=user.username,
        before=before,
        after=account_json(user),
        reason=f"{action} of role request {grant.id}: {grant.reason}",
        at=now,
    )


def approve_roles(
    session: Session,
    *,
    signer: Authenticated,
    grant_id: int,
    comment: str | None = None,
    now: datetime | None = None,
) -> User:
    """QA approves a role request with an e-signature; the approver is another person than the
    one who asked and the one who receives the roles."""
    require_role(signer, "qa", action=Reason("approving a signing role", "批准签名角色"))
    grant, user = _grant(session, grant_id)
    if signer.who in (grant.requested_by_person, user.person):
        raise PermissionDeniedError(
            Reason(
                "a role request is approved by another person than the one who asked for it "
                "and the one who receives it",
                "角色申请须由申请人和被授予人以外的另一人批准",
            )
        )
    now = now or utcnow()
    signatures.sign(
        session,
        signer=signer,
        meaning="approved",
        entity="user",
        entity_key=user.username,
        scope=f"{SCOPE}:{grant.id}",
        statement=f"QA approves the roles {grant.roles} for {user.username} (person {user.person})",
        content=grant_content(session, grant),
        comment=comment,
        now=now,
    )
    _apply(session, grant, user, by=signer.username, action="approval", now=now)
    return user


def bootstrap_roles(
    session: Session, *, admin: Authenticated, grant_id: int, now: datetime | None = None
) -> User:
    """At installation only: an admin approves the first QA account's roles (nobody from QA
    exists to approve them). Refused once any QA account has been enrolled."""
    require_role(admin, "admin", action=Reason("approving the first QA account", "批准第一个 QA 账户"))
    grant, user = _grant(session, grant_id)
    if qa_ever_enrolled(session) or "qa" not in grant.roles.split(","):
        raise PermissionDeniedError(
            Reason(
                "only the site's first QA account is approved by an admin; every other signing role "
                "is approved by QA (tracker user approve-roles)",
                "只有本站第一个 QA 账户可由系统管理员批准；其他签名角色均须由 QA 批准（tracker user approve-roles）",
            )
        )
    if admin.who == user.person:
        raise PermissionDeniedError(Reason("nobody approves their own roles", "任何人不得批准授予自己的角色"))
    now = now or utcnow()
    audit.record(
        session,
        actor=admin.username,
        action="user.bootstrap",
        entity="user",
        entity_key=user.username,
        after=grant_content(session, grant),
        reason="the site's first QA account, approved at installation",
        at=now,
    )
    _apply(session, grant, user, by=admin.username, action="installation", now=now)
    return user


def grant_checks(session: Session, user: User) -> list[signatures.SignatureCheck]:
    """The approvals signed for an account, each checked against its request as stored."""

    def content(sig: signatures.Signature) -> dict:
        grant = session.get(RoleGrant, int(sig.scope.partition(":")[2]))
        return grant_content(session, grant) if grant is not None else {"missing": sig.scope}

    return signatures.check_all(signatures.signatures_of(session, "user", user.username), content)


def role_requests(session: Session, *, pending_only: bool = True) -> list[GrantDoc]:
    query = select(RoleGrant, User).join(User, User.id == RoleGrant.user_id).order_by(RoleGrant.id)
    if pending_only:
        query = query.where(RoleGrant.status == "pending")
    return [
        {
            "id": g.id,
            "username": u.username,
            "full_name": u.full_name,
            "person": u.person,
            "roles": g.roles,
            "in_force": u.roles,
            "requested_by": g.requested_by,
            "requested_at": iso_utc(g.requested_at),
            "reason": g.reason,
            "status": g.status,
        }
        for g, u in session.exec(query).all()
    ]
