"""Users, roles and authentication (GMP 2010 Art. 20, 163; 21 CFR 11.10(d), 11.300).

Passwords are stored as argon2id hashes and must not be easy to guess (zxcvbn: common
passwords, names, patterns). Every failed password check — at login or at a signature's
re-authentication — is audited, and repeated ones are reported to the administrators; nothing
locks an account (a lock anyone could trigger would keep the QP out).
Accounts are deactivated, never deleted, so every past signature keeps its printed name.

Separation of duties enforced on the role set itself: the production head and the QA head
are never the same person (Art. 20: 不得互相兼任; QA and QP may be combined), and system
administrators hold no GMP signing role (administering the system that keeps the records
must not also mean signing them).

Authentication happens in its own unit of work (so a failure is counted even though the
operation it guarded is refused) and yields an :class:`Authenticated` proof that signing
functions accept only while it is fresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import argon2.profiles
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import UniqueConstraint, update
from sqlmodel import Field, Session, SQLModel, select
from typing_extensions import TypedDict
from zxcvbn import zxcvbn

from tracker.core import audit
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
ROLES = ("operator", "production_head", "qa", "qp", "admin", "viewer")
SIGNING_ROLES = frozenset({"operator", "production_head", "qa", "qp"})
#: pairs no single account may hold (GMP 2010 Art. 20; admin separation, see module doc)
EXCLUSIVE_ROLES = (
    ("production_head", "qa"),
    ("production_head", "qp"),
    *tuple(("admin", r) for r in sorted(SIGNING_ROLES)),
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
    full_name: str = Field(max_length=200)
    roles: str = Field(max_length=200)  # comma-separated, sorted
    password_hash: str = Field(max_length=300)
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

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r for r in self.roles.split(",") if r)


@dataclass(frozen=True)
class Authenticated:
    """Proof that a user has just given their password (a login or a signature re-auth)."""

    user_id: int
    username: str
    full_name: str
    roles: frozenset[str]
    at: datetime

    def has(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))


def _check_roles(roles: list[str] | tuple[str, ...]) -> str:
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
            raise PermissionDeniedError(
                Reason(
                    f"roles {a} and {b} cannot be held together ({why})",
                    f"{zh_word(a)}与{zh_word(b)}角色不能由同一人兼任（{why.zh}）",
                )
            )
    return ",".join(sorted(set(roles)))


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


def _public(user: User) -> dict:
    return {
        "username": user.username,
        "full_name": user.full_name,
        "roles": user.roles,
        "active": user.active,
    }


def get_user(session: Session, username: str) -> User:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        raise NotFoundError(Reason(f"no user {username!r}", f"没有用户 {username!r}"))
    return user


def count_users(session: Session) -> int:
    return len(session.exec(select(User.id)).all())


def require_role(actor: Authenticated, *roles: str, action: str) -> None:
    """Refuse unless the actor holds one of ``roles`` (named in the message; ``action`` is a
    :class:`Reason` so that the refusal reads in Chinese too)."""
    if not actor.has(*roles):
        mine = sorted(actor.roles)
        raise PermissionDeniedError(
            Reason(
                f"{action} needs the role {' or '.join(roles)}; {actor.username} has {', '.join(mine)}",
                f"{in_language(action, 'zh-CN')}需要{zh_words(roles, '或')}角色；{actor.username} 的角色是"
                f"{zh_words(mine) or '无'}",
            )
        )


def create_user(
    session: Session,
    *,
    username: str,
    full_name: str,
    roles: list[str],
    password: str,
    actor: Authenticated | None,
    now: datetime | None = None,
) -> User:
    """Create an account. Only an admin may, except the very first account, which must be an
    admin created explicitly (there is no default password anywhere)."""
    if actor is None:
        if count_users(session):
            raise PermissionDeniedError(
                Reason(
                    "users exist already: log in as an admin to create more",
                    "已有用户：请以系统管理员身份登录后再创建",
                )
            )
        if "admin" not in roles:
            raise InvalidInputError(
                Reason("the first account must be an admin", "第一个账户必须是系统管理员")
            )
    else:
        require_role(actor, "admin", action=Reason("creating users", "创建用户"))
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
    role_text = _check_roles(roles)
    _check_password(password, username, full_name)
    now = now or utcnow()
    by = actor.username if actor else "bootstrap"
    user = User(
        username=username,
        full_name=full_name.strip(),
        roles=role_text,
        password_hash=_hasher().hash(password),
        password_changed_at=now,
        created_at=now,
        created_by=by,
        must_change_password=actor is not None,
    )
    session.add(user)
    audit.record(
        session,
        actor=by,
        action="user.create",
        entity="user",
        entity_key=username,
        after=_public(user),
        at=now,
    )
    return user


#: the one answer to every failed password check: which part was wrong, and whether the account
#: exists, is deactivated or has failed before, is nobody's business but the audit trail's
LOGIN_FAILED = Reason("wrong user name or password", "用户名或密码错误")


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
    return Authenticated(user.id, user.username, user.full_name, user.role_set, now)


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
    """An admin resets someone's password (a forgotten one); audited with the reason."""
    require_role(actor, "admin", action=Reason("resetting passwords", "重置密码"))
    user = get_user(session, username)
    _check_password(new_password, username, user.full_name)
    now = now or utcnow()
    user.password_hash, user.password_changed_at = _hasher().hash(new_password), now
    user.failed_attempts = 0
    user.must_change_password = True
    session.add(user)
    audit.record(
        session,
        actor=actor.username,
        action="user.password_reset",
        entity="user",
        entity_key=username,
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
    require_role(actor, "admin", action=Reason("changing roles", "更改角色"))
    user = get_user(session, username)
    before = _public(user)
    user.roles = _check_roles(roles)
    session.add(user)
    audit.record(
        session,
        actor=actor.username,
        action="user.roles",
        entity="user",
        entity_key=username,
        before=before,
        after=_public(user),
        reason=reason,
        at=now or utcnow(),
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
    before = _public(user)
    user.active = False
    session.add(user)
    audit.record(
        session,
        actor=actor.username,
        action="user.deactivate",
        entity="user",
        entity_key=username,
        before=before,
        after=_public(user),
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
    roles: str  # comma-separated
    active: bool
    #: as many failed password checks in a row as ``login_alert_failures``, or more: an
    #: administrator should look (and clear the count)
    alert: bool
    must_change_password: bool
    failed_attempts: int
    created_at: str


def list_users(session: Session) -> list[UserRow]:
    every = get_settings().login_alert_failures
    return [
        {
            **_public(u),
            "alert": u.failed_attempts >= every,
            "must_change_password": u.must_change_password,
            "failed_attempts": u.failed_attempts,
            "created_at": u.created_at.isoformat(),
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
