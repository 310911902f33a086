"""Donor and patient identifiers: keyed pseudonyms and encrypted clear values (issue 20).

PIPL Art. 51 and GB/T 39725-2020 §6 expect identifiers of donors and patients to be
pseudonymised (去标识化) and every access to them controlled; Xiamen's cell-industry regulation
Art. 10 asks that such data be used only as authorised and stay traceable. The database
therefore holds, for each identifier,

* a *pseudonym*: HMAC-SHA256 of the clear value under the identity key, cut to 64 bits and
  prefixed (``DNR-…`` donor, ``PAT-…`` patient). Equal identifiers give equal pseudonyms, so
  segregation checks, counts and search keep working without the clear value;
* the clear value encrypted with Fernet (AES-128-CBC + HMAC-SHA256, ``cryptography``), read
  only by :func:`tracker.quality.batches.identity.reveal` (a separate permission, a reason,
  audited).

The identity key is *not* the audit (site) key: receivers of an exchange package are given
the site key to check its signature, and with it they could otherwise recompute pseudonyms of
guessed donor numbers. It lives outside the database like the audit key:
``TRACKER_IDENTITY_KEY_FILE`` (first non-empty line), ``TRACKER_IDENTITY_KEY``, or, for the
embedded setup only, ``<TRACKER_DATA_DIR>/identity.key`` created once (mode 0600) with a
warning. Two keys are derived from it with HKDF-SHA256 (one for pseudonyms, one for
encryption), so neither use weakens the other. Rotation is not supported yet: a new key would
change every pseudonym (docs/data-protection.md, "Key handling").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tracker.core.errors import InvalidInputError, Reason

log = logging.getLogger(__name__)

MIN_KEY_CHARS = 32
#: what a pseudonym of each kind starts with; the rest is 16 hex digits
PREFIX = {"donor": "DNR-", "patient": "PAT-"}


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


@dataclass(frozen=True)
class IdentityKey:
    """The two keys derived from the site's identity secret."""

    key_id: str
    pseudonym_key: bytes
    fernet: Fernet

    def pseudonym(self, kind: str, clear: str) -> str:
        """The stable pseudonym of a clear identifier (``kind``: donor or patient)."""
        mac = hmac.new(self.pseudonym_key, f"{kind}:{clear.strip()}".encode(), hashlib.sha256)
        return PREFIX[kind] + mac.hexdigest()[:16]

    def encrypt(self, clear: str) -> str:
        return self.fernet.encrypt(clear.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self.fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise InvalidInputError(
                Reason(
                    "the stored identifier cannot be decrypted with this site's identity key "
                    "(another key, or the value was altered)",
                    "无法用本厂身份密钥解密所存标识（密钥不同，或数据被篡改）",
                )
            ) from None


def identity_key_from(secret: bytes) -> IdentityKey:
    fernet_key = base64.urlsafe_b64encode(_derive(secret, b"gmp-tracker identity encryption v1"))
    return IdentityKey(
        key_id=hashlib.sha256(secret).hexdigest()[:16],
        pseudonym_key=_derive(secret, b"gmp-tracker identity pseudonym v1"),
        fernet=Fernet(fernet_key),
    )


def _secret_from_text(text: str, source: str) -> bytes:
    text = text.strip()
    if len(text) < MIN_KEY_CHARS:
        raise InvalidInputError(
            Reason(
                f"{source}: an identity key needs at least {MIN_KEY_CHARS} characters",
                f"{source}：身份密钥至少需要 {MIN_KEY_CHARS} 个字符",
            )
        )
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode("utf-8")


def _default_key_file(data_dir: Path) -> Path:
    path = data_dir / "identity.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        log.warning(
            "no TRACKER_IDENTITY_KEY_FILE or TRACKER_IDENTITY_KEY: created %s; in production keep it "
            "apart from the database and its backups and set TRACKER_IDENTITY_KEY_FILE",
            path,
        )
    return path


def load_identity_key(*, key_file: Path | None, key: str | None, data_dir: Path) -> IdentityKey:
    """The identity key from the settings (file, variable, or the embedded default file)."""
    if key_file is None and key:
        return identity_key_from(_secret_from_text(key, "TRACKER_IDENTITY_KEY"))
    path = key_file or _default_key_file(data_dir)
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise InvalidInputError(
            Reason(
                f"cannot read the identity key {path}: {exc.strerror}",
                f"无法读取身份密钥 {path}：{exc.strerror}",
            )
        ) from None
    if not lines:
        raise InvalidInputError(Reason(f"the identity key file {path} is empty", f"身份密钥文件 {path} 为空"))
    return identity_key_from(_secret_from_text(lines[0], str(path)))


_key: IdentityKey | None = None
_lock = Lock()


def identity_key() -> IdentityKey:
    """The process's identity key, loaded once from the settings."""
    global _key
    with _lock:
        if _key is None:
            from tracker.core.settings import get_settings

            settings = get_settings()
            _key = load_identity_key(
                key_file=settings.identity_key_file,
                key=settings.identity_key.get_secret_value() if settings.identity_key else None,
                data_dir=settings.data_dir,
            )
        return _key


def use_identity_key(key: IdentityKey | None) -> None:
    """Replace the process's identity key (tests; a restore checked with another key)."""
    global _key
    with _lock:
        _key = key


def pseudonym(kind: str, clear: str) -> str:
    return identity_key().pseudonym(kind, clear)


def is_pseudonym(kind: str, value: str | None) -> bool:
    """Whether ``value`` has the form of a pseudonym (not whether this key made it)."""
    if not value or not value.startswith(PREFIX[kind]):
        return False
    rest = value[len(PREFIX[kind]) :]
    return len(rest) == 16 and all(c in "0123456789abcdef" for c in rest)
