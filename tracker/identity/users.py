"""Users, roles and authentication (GMP 2010 Art. 20, 163; 21 CFR 11.10(d), 11.300).

Passwords are stored as argon2id hashes and must not be easy to guess (zxcvbn: common
passwords, names, patterns). Every failed password check — at login or at a signature's
re-authentication — is audited, and repeated ones are reported to the administrators; nothing
locks an account (a lock anyone could trigger would keep the QP out).
Accounts are deactivated, never deleted, so every past signature keeps its printed name.

An account belongs to a person (``person_id``, e.g. an employee number, fixed at creation):
separation of duties compares persons, not accounts, so one person holding two accounts is
still one person. Enforced on the roles a person holds across their active accounts: the
production head and the QA head are never the same person (Art. 20: 不得互相兼任; QA and QP
may be combined), and system administrators hold no GMP signing role (administering the
system that keeps the records must not also mean signing them).

Two people, never one (21 CFR 11.200(a)(2): misuse needs the collusion of two or more):

* a signing role asked for by an admin is a pending :class:`RoleGrant` until another person
  from QA approves it with an e-signature (:mod:`tracker.identity.grants`);
* GMP work and signatures need a password *enrolled* by its owner before a witness from QA
  (:func:`enrol`). An admin's reset ends the enrolment, so the admin who knows the temporary
  password can log in as the owner, even change it, but neither sign nor record GMP work.

Authentication happens in its own unit of work (so a failure is counted even though the
operation it guarded is refused) and yields an :class:`Authenticated` proof that signing
functions accept only while it is fresh.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import argon2.profiles
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Column, Text, UniqueConstraint, update
from sqlmodel import Field, Session, SQLModel, select
from typing_extensions import TypedDict
from zxcvbn import zxcvbn

from tracker.core import audit
from tracker.core.classification import REVEAL_ROLE, classified
from tracker.core.db import UTCDateTime
from tracker.core.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    Reason,
    in_language,
    zh_word,
    zh_words,
)
from tracker.core.settings import get_settings
from tracker.core.timeutil import utcnow

log = logging.getLogger(__name__)
#: ``identity_reveal`` (issue 20) is a permission rather than a job: it shows donor and patient
#: identifiers in clear, one audited reveal at a time, with a reason
ROLES = ("operator", "production_head", "qa", "qp", "admin", "viewer", REVEAL_ROLE)
SIGNING_ROLES = frozenset({"operator", "production_head", "qa", "qp"})
#: pairs no single account may hold (GMP 2010 Art. 20; admin separation, see module doc)
EXCLUSIVE_ROLES = (
    ("production_head", "qa"),
    ("production_head", "qp"),
    *tuple(("admin", r) for r in sorted(SIGNING_ROLES)),
    # the administrator who grants roles does not read identities (GB/T 39725-2020 §8.1)
    ("admin", REVEAL_ROLE),
)


@lru_cache(maxsize=4)
def _hasher_for(profile: str) -> tuple[PasswordHasher, str]:
    """argon2id with the RFC 9106 parameters (a cheap profile only for the test suite), and a real
    hash to verify against when the user does not exist, so timing does not reveal names."""
    hasher = PasswordHasher.from_parameters(getattr(argon2.profiles, profile))
    return hasher, hasher.hash("not a password of anyone")


def _hasher() -> PasswordHasher:
    return _hasher_for(get_settings().password_hash_profile)[0]


class User(SQLModel, table=True):
    __tablename__ = "app_user"  # "user" is reserved in PostgreSQL
    __table_args__ = (UniqueConstraint("username"),)

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=60)
    full_name: str = Field(
        max_length=200,
        sa_column_kwargs={
            "info": classified(
                "sensitive", why="staff member's printed name: signatures carry it (Part 11.50)"
            )
        },
    )
    roles: str = Field(max_length=200)  # comma-separated, sorted
    password_hash: str = Field(
        max_length=300,
        sa_column_kwargs={
            "info": classified("sensitive", export="omitted", clear_roles=(), why="argon2 hash, never shown")
        },
    )
    active: bool = True
    failed_attempts: int = 0
    #: set when an admin chose the password: its owner must change it before signing anything
    #: (21 CFR 11.200(a)(2): only the genuine owner can use a signature)
    must_change_password: bool = False
    #: unused since accounts no longer lock (issue 15): kept so the schema needs no migration
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    password_changed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    created_by: str = Field(max_length=60)
    #: the person the account belongs to (employee number): separation of duties compares these
    person_id: str = Field(
        default="",
        max_length=60,
        index=True,
        sa_column_kwargs={
            "info": classified(
                "sensitive",
                export="omitted",
                clear_roles=("admin", "qa"),
                why="employee number: separation of duties compares it",
            )
        },
    )
    #: when the owner set the current password before a witness (:func:`enrol`); ``None``: the
    #: account may log in and read, but neither sign nor record GMP work
    enrolled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    enrolled_witness: str | None = Field(default=None, max_length=60)

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r for r in self.roles.split(",") if r)

    @property
    def person(self) -> str:
        return self.person_id or self.username


#: the witness recorded for accounts whose owner had replaced the admin's password before
#: enrolment existed (migration 0020); ``tracker audit verify`` accepts no other unrecorded one
MIGRATED_ENROLMENT = "migration 0020"
GRANT_STATUSES = ("pending", "approved", "withdrawn")


class RoleGrant(SQLModel, table=True):
    """A signing role an admin asked for: not in force until another person from QA approves it
    with an e-signature (:func:`tracker.identity.grants.approve_roles`)."""

    __tablename__ = "role_grant"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    #: the account's whole role set once approved (comma-separated, sorted)
    roles: str = Field(max_length=200)
    requested_by: str = Field(max_length=60)
    requested_by_person: str = Field(max_length=60)
    requested_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="pending", max_length=20)
    decided_by: str | None = Field(default=None, max_length=60)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


@dataclass(frozen=True)
class Authenticated:
    """Proof that a user has just given their password (a login or a signature re-auth)."""

    user_id: int
    username: str
    full_name: str
    roles: frozenset[str]
    at: datetime
    #: the person behind the account (separation of duties compares persons)
    person: str = ""
    #: the account's password was enrolled by its owner before a witness (GMP work needs it)
    enrolled: bool = False
    #: ``password``: typed just now (a login or re-authentication); ``session``: a web request
    #: authenticated by its session or token, which never signs
    method: str = "password"

    def has(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))

    @property
    def who(self) -> str:
        """The person, for separation of duties."""
        return self.person or self.username


def _known_roles(roles: list[str] | tuple[str, ...] | frozenset[str]) -> str:
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise InvalidInputError(
            Reason(
                f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}",
                f"未知角色 {', '.join(unknown)}；可用角色：{zh_words(ROLES)}",
            )
        )
    if not roles:
        raise InvalidInputError(Reason("a user needs at least one role", "用户至少需要一个角色"))
    return ",".join(sorted(set(roles)))


def _exclusive(roles: set[str] | frozenset[str], whose: Reason | None = None) -> None:
    """Refuse a role set one person may not hold (``whose``: where the other roles come from)."""
    for a, b in EXCLUSIVE_ROLES:
        if a in roles and b in roles:
            why = (
                Reason(
                    "GMP 2010 Art. 20: the production head and the QA head must not be the same person",
                    "GMP（2010）第二十条：生产管理负责人和质量管理负责人不得互相兼任",
                )
                if {a, b} == {"production_head", "qa"}
                else Reason(
                    "system administrators hold no GMP signing role (separation of duties)",
                    "系统管理员不担任任何 GMP 签名角色（职责分离）",
                )
            )
            extra = Reason(f" ({whose})", f"（{whose.zh}）") if whose else Reason("", "")
            raise PermissionDeniedError(
                Reason(
                    f"roles {a} and {b} cannot be held together ({why}){extra}",
                    f"{zh_word(a)}与{zh_word(b)}角色不能由同一人兼任（{why.zh}）{extra.zh}",
                )
            )


def person_roles(session: Session, person: str, *, besides: int | None = None) -> dict[str, frozenset[str]]:
    """The roles, in force or asked for, of every other active account of ``person``."""
    held: dict[str, frozenset[str]] = {}
    for user in session.exec(select(User).where(User.person_id == person, User.active)):
        if user.id == besides:
            continue
        asked = session.exec(
            select(RoleGrant.roles).where(RoleGrant.user_id == user.id, RoleGrant.status == "pending")
        ).all()
        held[user.username] = user.role_set | {r for text in asked for r in text.split(",") if r}
    return held


def check_person_roles(
    session: Session, *, person: str, roles: list[str] | frozenset[str], besides: int | None
) -> str:
    """The role text for one account, refused if the person would then hold a forbidden pair
    across their accounts (separation compares persons, not accounts)."""
    text = _known_roles(list(roles))
    _exclusive(set(roles))
    for username, other in person_roles(session, person, besides=besides).items():
        _exclusive(
            set(roles) | other,
            Reason(
                f"person {person} also holds {', '.join(sorted(other))} as {username}",
                f"人员 {person} 另以账户 {username} 担任{zh_words(sorted(other))}",
            ),
        )
    return text


def _check_password(password: str, username: str, full_name: str = "") -> None:
    settings = get_settings()
    minimum = settings.password_min_length
    if len(password) < minimum:
        raise InvalidInputError(
            Reason(f"the password must have at least {minimum} characters", f"密码至少需要 {minimum} 个字符")
        )
    if username.lower() in password.lower():
        raise InvalidInputError(Reason("the password must not contain the user name", "密码不得包含用户名"))
    # zxcvbn: common passwords and words, names, keyboard walks, repeats, dates, l33t (its own
    # maintained lists); only the first 100 characters, which bounds its cost
    strength = zxcvbn(password[:100], user_inputs=[username, *full_name.split()])
    if strength["score"] < settings.password_min_score:
        raise InvalidInputError(
            Reason(
                "the password is too easy to guess (a common password, a word, a name, a repeated "
                "or keyboard pattern): choose a longer passphrase of unrelated words",
                "密码太容易被猜到（常见密码、单词、姓名、重复或键盘顺序）：请使用由几个不相关的词组成的更长的密码短语",
            )
        )


def account_json(user: User) -> dict:
    return {
        "username": user.username,
        "full_name": user.full_name,
        "person": user.person,
        "roles": user.roles,
        "active": user.active,
    }


def get_user(session: Session, username: str) -> User:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFoundError(Reason(f"no user {username!r}", f"没有用户 {username!r}"))
    return user


def person_of(session: Session, username: str) -> str:
    """The person behind an account name as stored in a record (the name itself if unknown)."""
    user = session.exec(select(User).where(User.username == username)).first()
    return user.person if user is not None else username


def persons_of(session: Session, usernames: set[str] | list[str]) -> set[str]:
    return {person_of(session, name) for name in usernames if name}


def count_users(session: Session) -> int:
    return len(session.exec(select(User.id)).all())


def require_role(actor: Authenticated, *roles: str, action: str) -> None:
    """Refuse unless the actor holds one of ``roles`` (named in the message; ``action`` is a
    :class:`Reason` so that the refusal reads in Chinese too). GMP work (a signing role) also
    needs the account's password enrolled by its owner (:func:`enrol`)."""
    if not actor.has(*roles):
        mine = sorted(actor.roles)
        raise PermissionDeniedError(
            Reason(
                f"{action} needs the role {' or '.join(roles)}; {actor.username} has {', '.join(mine)}",
                f"{in_language(action, 'zh-CN')}需要{zh_words(roles, '或')}角色；{actor.username} 的角色是"
                f"{zh_words(mine) or '无'}",
            )
        )
    if actor.roles & set(roles) <= SIGNING_ROLES and not actor.enrolled:
        refusal = not_enrolled(actor.username)
        raise PermissionDeniedError(refusal)


def not_enrolled(username: str) -> Reason:
    return Reason(
        f"{username} has no password enrolled by its owner before a QA witness (tracker user enrol): "
        "GMP work and signatures wait for it",
        f"{username} 尚无本人在 QA 见证下设定的密码（tracker user enrol）：在此之前不能进行 GMP 操作或电子签名",
    )


def _check_new_account(session: Session, username: str, full_name: str, person: str) -> None:
    if not username or not username.replace("_", "").replace(".", "").replace("-", "").isalnum():
        raise InvalidInputError(
            Reason(
                "a user name uses letters, digits, '.', '_' and '-' only",
                "用户名只能使用字母、数字以及“.”“_”“-”",
            )
        )
    if session.exec(select(User).where(User.username == username)).first():
        raise InvalidInputError(
            Reason(
                f"user {username!r} exists already (accounts are never reused)",
                f"用户 {username!r} 已存在（账户不重复使用）",
            )
        )
    if not full_name.strip():
        raise InvalidInputError(
            Reason(
                "the full name is required: it is printed with every signature",
                "必须填写姓名：每个电子签名都会显示签名人姓名",
            )
        )
    if not person.strip() or len(person.strip()) > 60:
        raise InvalidInputError(
            Reason(
                "the person (employee number, at most 60 characters) is required: "
                "separation of duties compares persons, not accounts",
                "必须填写人员编号（如工号，最多 60 个字符）：职责分离按人员而非账户比较",
            )
        )


def _first_account(session: Session, roles: list[str]) -> None:
    if count_users(session):
        raise PermissionDeniedError(
            Reason(
                "users exist already: log in as an admin to create more",
                "已有用户：请以系统管理员身份登录后再创建",
            )
        )
    if "admin" not in roles:
        raise InvalidInputError(Reason("the first account must be an admin", "第一个账户必须是系统管理员"))


def create_user(
    session: Session,
    *,
    username: str,
    full_name: str,
    person: str,
    roles: list[str],
    password: str,
    actor: Authenticated | None,
    reason: str = "new account",
    now: datetime | None = None,
) -> User:
    """Create an account for a person. Only an admin may, except the very first account, which
    must be an admin created explicitly (there is no default password anywhere). Signing roles
    are asked for, not given: they wait for QA's approval (:class:`RoleGrant`)."""
    if actor is None:
        _first_account(session, roles)
    else:
        require_role(actor, "admin", action=Reason("creating users", "创建用户"))
    _check_new_account(session, username, full_name, person)
    person = person.strip()
    role_text = check_person_roles(session, person=person, roles=roles, besides=None)
    _check_password(password, username, full_name)
    now = now or utcnow()
    by = actor.username if actor else "bootstrap"
    user = User(
        username=username,
        full_name=full_name.strip(),
        person_id=person,
        roles=",".join(sorted(set(roles) - SIGNING_ROLES)),
        password_hash=_hasher().hash(password),
        password_changed_at=now,
        created_at=now,
        created_by=by,
        must_change_password=actor is not None,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=by,
        action="user.create",
        entity="user",
        entity_key=username,
        after=account_json(user),
        at=now,
    )
    if set(roles) & SIGNING_ROLES:
        _ask(session, actor=actor, user=user, roles=role_text, reason=reason, now=now)
    return user


#: the one answer to every failed password check: which part was wrong, and whether the account
#: exists, is deactivated or has failed before, is nobody's business but the audit trail's
LOGIN_FAILED = Reason("wrong user name or password", "用户名或密码错误")


def _ask(
    session: Session, *, actor: Authenticated, user: User, roles: str, reason: str, now: datetime
) -> RoleGrant:
    """Record the roles an admin asked for; earlier requests for the account lapse."""
    for old in session.exec(
        select(RoleGrant).where(RoleGrant.user_id == user.id, RoleGrant.status == "pending")
    ):
        old.status, old.decided_by, old.decided_at = "withdrawn", actor.username, now
        session.add(old)
    grant = RoleGrant(
        user_id=user.id,
        roles=roles,
        requested_by=actor.username,
        requested_by_person=actor.who,
        requested_at=now,
        reason=reason,
    )
    session.add(grant)
    session.flush()
    audit.record(
        session,
        actor=actor.username,
        action="user.roles_requested",
        entity="user",
        entity_key=user.username,
        after={"grant": grant.id, "roles": roles, "in_force": user.roles},
        reason=reason,
        at=now,
    )
    return grant


def authenticate(
    session: Session, *, username: str, password: str, now: datetime | None = None
) -> Authenticated:
    """Check a password. Every failure — unknown name, deactivated account, wrong password — says
    the same and costs the same (one argon2 verification, the same statements, one audit event),
    so neither the answer nor its timing tells which names exist. Failures are counted per
    account (consecutive, from anywhere); every ``login_alert_failures`` of them the
    administrators are told (audit ``auth.alert``, a warning in the log, the users page):
    21 CFR 11.300(d). Nothing locks the account: throttling is per account and address, in the
    web layer. Run this in its own unit of work and commit whether or not it raised."""
    now = now or utcnow()
    name = username[:60]
    user = session.exec(select(User).where(User.username == name)).first()
    usable = user is not None and user.active
    hasher, decoy = _hasher_for(get_settings().password_hash_profile)
    try:
        hasher.verify(user.password_hash if usable else decoy, password)
        ok = usable
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        _count_failure(
            session,
            name=name,
            reason="unknown user" if user is None else "wrong password" if usable else "account deactivated",
            now=now,
        )
        raise AuthenticationError(LOGIN_FAILED)
    if user.failed_attempts:
        user.failed_attempts = 0
        session.add(user)
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
        session.add(user)
    return proof(user, now)


def _count_failure(session: Session, *, name: str, reason: str, now: datetime) -> None:
    """The same statements for every failure (an unknown name updates no row)."""
    # count in the database, not in Python: concurrent failures must not overwrite each other
    session.execute(
        update(User).where(User.username == name).values(failed_attempts=User.failed_attempts + 1)
    )
    failures = session.exec(select(User.failed_attempts).where(User.username == name)).first()
    audit.record(
        session,
        actor=name or "?",
        action="auth.failure",
        entity="user",
        entity_key=name,
        after=None if failures is None else {"failed_attempts": failures},
        reason=reason,
        at=now,
    )
    every = get_settings().login_alert_failures
    if failures is not None and failures % every == 0:
        log.warning("account %s: %d failed password checks in a row", name, failures)
        audit.record(
            session,
            actor="system",
            action="auth.alert",
            entity="user",
            entity_key=name,
            after={"failed_attempts": failures},
            reason=f"{failures} failed password checks in a row (21 CFR 11.300(d))",
            at=now,
        )


def proof(user: User, at: datetime, method: str = "password") -> Authenticated:
    """What an authentication of ``user`` at ``at`` proves."""
    return Authenticated(
        user.id,
        user.username,
        user.full_name,
        user.role_set,
        at,
        person=user.person,
        enrolled=user.enrolled_at is not None,
        method=method,
    )


def require_fresh(session: Session, signer: Authenticated, *, now: datetime | None = None) -> User:
    """A signature needs a re-authentication made moments ago by an account still in good standing
    (21 CFR 11.200(a): outside a continuous session every signing uses all components)."""
    now = now or utcnow()
    window = get_settings().signature_window_s
    if not timedelta(0) <= now - signer.at <= timedelta(seconds=window):
        raise AuthenticationError(
            Reason(
                f"a signature needs the password again (re-authentication older than {window} s)",
                f"电子签名需要再次输入密码（上次验证已超过 {window} 秒）",
            )
        )
    if signer.method != "password":
        raise AuthenticationError(
            Reason(
                "a signature needs the password typed for it, not a logged-in session",
                "电子签名须为此输入密码，不能仅凭登录会话",
            )
        )
    user = session.get(User, signer.user_id)
    if user is None or not user.active:
        raise AuthenticationError(
            Reason(f"account {signer.username!r} is not active", f"账户 {signer.username!r} 未启用")
        )
    if user.must_change_password:
        raise AuthenticationError(
            Reason(
                f"{signer.username} must first replace the password an administrator set (tracker user passwd): "
                "only the owner may know a signing password",
                f"{signer.username} 须先修改管理员设置的密码（tracker user passwd）：签名密码只能由本人知晓",
            )
        )
    if user.enrolled_at is None:
        refusal = not_enrolled(signer.username)
        raise AuthenticationError(refusal)
    return user


def change_password(
    session: Session, *, actor: Authenticated, new_password: str, now: datetime | None = None
) -> None:
    """Change one's own password (the actor has just authenticated with the old one)."""
    now = now or utcnow()
    user = session.get(User, actor.user_id)
    window = timedelta(seconds=get_settings().signature_window_s)
    if user is None or not user.active or now - actor.at > window:
        raise AuthenticationError(
            Reason("give your current password again to change it", "修改密码需要再次输入当前密码")
        )
    _check_password(new_password, user.username, user.full_name)
    try:
        _hasher().verify(user.password_hash, new_password)
    except VerificationError:
        pass
    else:
        raise InvalidInputError(
            Reason("the new password must differ from the current one", "新密码不得与当前密码相同")
        )
    user.password_hash, user.password_changed_at = _hasher().hash(new_password), now
    user.must_change_password = False
    session.add(user)
    audit.record(
        session, actor=user.username, action="user.password", entity="user", entity_key=user.username, at=now
    )


def set_password(
    session: Session,
    *,
    actor: Authenticated,
    username: str,
    new_password: str,
    reason: str,
    now: datetime | None = None,
) -> User:
    """An admin resets someone's password (a forgotten one); audited with the reason. The
    enrolment ends with it: the account signs and records GMP work again only once its owner has
    set a new password before a witness (:func:`enrol`) — the admin knows this one."""
    require_role(actor, "admin", action=Reason("resetting passwords", "重置密码"))
    user = get_user(session, username)
    _check_password(new_password, username, user.full_name)
    now = now or utcnow()
    user.password_hash, user.password_changed_at = _hasher().hash(new_password), now
    user.failed_attempts = 0
    user.must_change_password = True
    user.enrolled_at = user.enrolled_witness = None
    session.add(user)
    audit.record(
        session,
        actor=actor.username,
        action="user.password_reset",
        entity="user",
        entity_key=username,
        after={"enrolled": False},
        reason=reason,
        at=now,
    )
    return user


def set_roles(
    session: Session,
    *,
    actor: Authenticated,
    username: str,
    roles: list[str],
    reason: str,
    now: datetime | None = None,
) -> User:
    """Change an account's roles: removals and non-signing roles take effect at once; a signing
    role added is asked for (:class:`RoleGrant`), in force once QA approves it. Nobody changes
    their own roles."""
    require_role(actor, "admin", action=Reason("changing roles", "更改角色"))
    user = get_user(session, username)
    if user.id == actor.user_id or user.person == actor.who:
        raise PermissionDeniedError(
            Reason(
                "nobody changes their own roles: another admin asks, QA approves a signing role",
                "任何人不得更改自己的角色：须由另一位系统管理员申请，签名角色须经 QA 批准",
            )
        )
    if not reason or not reason.strip():
        raise InvalidInputError(Reason("a change of roles needs its reason", "更改角色须说明理由"))
    role_text = check_person_roles(session, person=user.person, roles=roles, besides=user.id)
    now = now or utcnow()
    before = account_json(user)
    wanted = set(roles)
    user.roles = ",".join(sorted((user.role_set & wanted) | (wanted - SIGNING_ROLES)))
    session.add(user)
    audit.record(
        session,
        actor=actor.username,
        action="user.roles",
        entity="user",
        entity_key=username,
        before=before,
        after=account_json(user),
        reason=reason,
        at=now,
    )
    pending = session.exec(
        select(RoleGrant).where(RoleGrant.user_id == user.id, RoleGrant.status == "pending")
    )
    if (wanted & SIGNING_ROLES) - user.role_set:
        _ask(session, actor=actor, user=user, roles=role_text, reason=reason.strip(), now=now)
    else:
        for grant in pending:
            grant.status, grant.decided_by, grant.decided_at = "withdrawn", actor.username, now
            session.add(grant)
    return user


def qa_ever_enrolled(session: Session) -> bool:
    """Has any account holding QA ever been enrolled? Until then the site is being installed:
    its first QA account is approved and witnessed by an admin (the one bootstrap exception)."""
    for event in session.exec(select(audit.AuditEvent).where(audit.AuditEvent.action == "user.enrol")):
        if "qa" in (json.loads(event.after or "{}").get("roles") or "").split(","):
            return True
    migrated = select(User).where(User.enrolled_witness == MIGRATED_ENROLMENT)
    return any("qa" in u.role_set for u in session.exec(migrated))


def _check_witness(session: Session, owner: User, witness: Authenticated, now: datetime) -> None:
    """The witness is another person from QA, enrolled, just authenticated — or, while the site
    has never had an enrolled QA account, an admin witnessing the first QA account."""
    window = timedelta(seconds=get_settings().signature_window_s)
    if witness.method != "password" or not timedelta(0) <= now - witness.at <= window:
        raise AuthenticationError(
            Reason("the witness must give their password just now", "见证人须在此刻输入自己的密码")
        )
    if witness.who == owner.person or witness.user_id == owner.id:
        raise PermissionDeniedError(
            Reason("the witness must be another person than the owner", "见证人须为账户本人以外的另一人")
        )
    if witness.has("qa") and witness.enrolled:
        return
    if witness.has("admin") and "qa" in owner.role_set and not qa_ever_enrolled(session):
        return
    raise PermissionDeniedError(
        Reason(
            "the witness of an enrolment is a QA person with an enrolled password "
            "(an admin only for the site's first QA account)",
            "密码登记的见证人须为已登记密码的 QA 人员（仅本站第一个 QA 账户可由系统管理员见证）",
        )
    )


def enrol(
    session: Session,
    *,
    owner: Authenticated,
    witness: Authenticated,
    new_password: str,
    now: datetime | None = None,
) -> User:
    """The owner sets their own password before a witness, who confirms the owner's identity
    with their own password: from then on the account may sign and record GMP work. An admin
    who knows a temporary password cannot do this alone (two people, audited)."""
    now = now or utcnow()
    user = session.get(User, owner.user_id)
    window = timedelta(seconds=get_settings().signature_window_s)
    if user is None or not user.active or owner.method != "password" or now - owner.at > window:
        raise AuthenticationError(
            Reason("give your current password again to enrol", "登记密码需要再次输入当前密码")
        )
    _check_witness(session, user, witness, now)
    _check_password(new_password, user.username)
    user.password_hash, user.password_changed_at = _hasher().hash(new_password), now
    user.must_change_password = False
    user.enrolled_at, user.enrolled_witness = now, witness.username
    session.add(user)
    audit.record(
        session,
        actor=user.username,
        action="user.enrol",
        entity="user",
        entity_key=user.username,
        after={"enrolled": True, "witness": witness.username, "roles": user.roles},
        at=now,
    )
    return user


def deactivate(
    session: Session, *, actor: Authenticated, username: str, reason: str, now: datetime | None = None
) -> User:
    """Deactivate an account (never delete: its signatures must keep their printed name)."""
    require_role(actor, "admin", action=Reason("deactivating users", "停用用户"))
    if username == actor.username:
        raise PermissionDeniedError(
            Reason("an admin cannot deactivate their own account", "系统管理员不能停用自己的账户")
        )
    user = get_user(session, username)
    before = account_json(user)
    user.active = False
    session.add(user)
    audit.record(
        session,
        actor=actor.username,
        action="user.deactivate",
        entity="user",
        entity_key=username,
        before=before,
        after=account_json(user),
        reason=reason,
        at=now or utcnow(),
    )
    return user


def clear_failures(
    session: Session, *, actor: Authenticated, username: str, reason: str, now: datetime | None = None
) -> User:
    """An administrator has looked into an account's failed password checks (the alert on the
    users page) and clears the count, with what they found."""
    require_role(actor, "admin", action=Reason("clearing failed logins", "清除登录失败记录"))
    user = get_user(session, username)
    before = {"failed_attempts": user.failed_attempts}
    user.failed_attempts = 0
    session.add(user)
    audit.record(
        session,
        actor=actor.username,
        action="user.clear_failures",
        entity="user",
        entity_key=username,
        before=before,
        after={"failed_attempts": 0},
        reason=reason,
        at=now or utcnow(),
    )
    return user


def record_login(
    session: Session, *, who: Authenticated, via: str, client: str | None, now: datetime | None = None
) -> None:
    """A successful login (``via``: ``web``), audited with the address it came from."""
    audit.record(
        session,
        actor=who.username,
        action="auth.login",
        entity="user",
        entity_key=who.username,
        after={"via": via, "client": client},
        at=now or utcnow(),
    )


def record_logout(
    session: Session, *, username: str, via: str, client: str | None, now: datetime | None = None
) -> None:
    """A logout the user asked for (``via``: ``web`` or ``token``)."""
    audit.record(
        session,
        actor=username,
        action="auth.logout",
        entity="user",
        entity_key=username,
        after={"via": via, "client": client},
        at=now or utcnow(),
    )


class UserRow(TypedDict):
    """An account as the administrator sees it (never its password hash)."""

    username: str
    full_name: str
    person: str
    roles: str  # comma-separated, in force
    active: bool
    #: as many failed password checks in a row as ``login_alert_failures``, or more: an
    #: administrator should look (and clear the count)
    alert: bool
    must_change_password: bool
    enrolled: bool
    failed_attempts: int
    created_at: str
    #: a signing-role request awaiting QA's approval: its id and the role set asked for
    pending_grant: int | None
    pending_roles: str | None


def list_users(session: Session) -> list[UserRow]:
    every = get_settings().login_alert_failures
    pending = {g.user_id: g for g in session.exec(select(RoleGrant).where(RoleGrant.status == "pending"))}
    return [
        {
            **account_json(u),
            "alert": u.failed_attempts >= every,
            "must_change_password": u.must_change_password,
            "enrolled": u.enrolled_at is not None,
            "failed_attempts": u.failed_attempts,
            "created_at": u.created_at.isoformat(),
            "pending_grant": pending[u.id].id if u.id in pending else None,
            "pending_roles": pending[u.id].roles if u.id in pending else None,
        }
        for u in session.exec(select(User).order_by(User.username))
    ]


def alerts(session: Session) -> list[tuple[str, int]]:
    """Accounts with repeated failed password checks, for the administrators' notice."""
    every = get_settings().login_alert_failures
    return list(
        session.exec(
            select(User.username, User.failed_attempts)
            .where(User.failed_attempts >= every)
            .order_by(User.failed_attempts.desc(), User.username)
        ).all()
    )


def login(engine, *, username: str, password: str, now: datetime | None = None) -> Authenticated:
    """Authenticate in a unit of work of its own that commits even when the password is wrong,
    so the failure is counted and audited although the guarded operation is refused."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            result = authenticate(session, username=username, password=password, now=now)
        except AuthenticationError:
            session.commit()
            raise
        session.commit()
        return result
