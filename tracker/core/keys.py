"""The site key that seals the audit chain, e-signatures and anchors (HMAC-SHA256).

An unkeyed hash chain proves nothing against someone who can write the database: they can
edit a record and recompute every hash (issue 15). The key therefore lives outside the
database, in a file or the environment:

* ``TRACKER_AUDIT_KEY_FILE``: one key per line (hex or any text of at least 32 characters);
  the first line signs, the others are retired keys still accepted for verification, which
  is how a key is rotated (docs/quality.md "Key handling");
* ``TRACKER_AUDIT_KEY``: a single key, for containers that pass secrets as variables;
* neither: ``<TRACKER_DATA_DIR>/audit.key`` is created once (mode 0600) for the embedded
  single-machine setup, and a warning says so.

A key is named by the first 16 hex digits of its SHA-256 (``key_id``), stored beside each
seal so a verifier knows which key to use; the key itself is never stored or printed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from threading import Lock

from tracker.core.errors import InvalidInputError, Reason

log = logging.getLogger(__name__)

MIN_KEY_CHARS = 32


@dataclass(frozen=True)
class Keyring:
    """The signing key and the retired ones still trusted for verification."""

    current_id: str
    keys: dict[str, bytes]

    def mac(self, body: bytes) -> tuple[str, str]:
        """``(key id, HMAC-SHA256 hex)`` of ``body`` under the current key."""
        return self.current_id, hmac.new(self.keys[self.current_id], body, hashlib.sha256).hexdigest()

    def check(self, key_id: str, body: bytes, digest: str) -> bool:
        """Whether ``digest`` is the MAC of ``body`` under the named key (unknown key: no)."""
        key = self.keys.get(key_id)
        if key is None:
            return False
        return hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest(), digest)


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def _key_from_text(text: str, source: str) -> bytes:
    text = text.strip()
    if len(text) < MIN_KEY_CHARS:
        raise InvalidInputError(
            Reason(
                f"{source}: an audit key needs at least {MIN_KEY_CHARS} characters",
                f"{source}：审计密钥至少需要 {MIN_KEY_CHARS} 个字符",
            )
        )
    try:
        return bytes.fromhex(text)
    except ValueError:
        return text.encode("utf-8")


def keyring_from(keys: list[bytes]) -> Keyring:
    return Keyring(current_id=key_id(keys[0]), keys={key_id(k): k for k in keys})


def _default_key_file(data_dir: Path) -> Path:
    """The embedded setup's key, made once with O_EXCL so two processes agree on it."""
    path = data_dir / "audit.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        log.warning(
            "no TRACKER_AUDIT_KEY_FILE or TRACKER_AUDIT_KEY: created %s; in production keep the key "
            "outside the database host's backups and set TRACKER_AUDIT_KEY_FILE",
            path,
        )
    return path


def load_keyring(*, key_file: Path | None, key: str | None, data_dir: Path) -> Keyring:
    """The keyring from the settings (file, variable, or the embedded default file)."""
    if key_file is None and key:
        return keyring_from([_key_from_text(key, "TRACKER_AUDIT_KEY")])
    path = key_file or _default_key_file(data_dir)
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise InvalidInputError(
            Reason(
                f"cannot read the audit key {path}: {exc.strerror}",
                f"无法读取审计密钥 {path}：{exc.strerror}",
            )
        ) from None
    if not lines:
        raise InvalidInputError(Reason(f"the audit key file {path} is empty", f"审计密钥文件 {path} 为空"))
    return keyring_from([_key_from_text(line, str(path)) for line in lines])


_keyring: Keyring | None = None
_lock = Lock()


def keyring() -> Keyring:
    """The process's keyring, loaded once from the settings."""
    global _keyring
    with _lock:
        if _keyring is None:
            from tracker.core.settings import get_settings

            settings = get_settings()
            _keyring = load_keyring(
                key_file=settings.audit_key_file,
                key=settings.audit_key.get_secret_value() if settings.audit_key else None,
                data_dir=settings.data_dir,
            )
        return _keyring


def use_keyring(ring: Keyring | None) -> None:
    """Replace the process's keyring (a verifier holding another site's key; tests)."""
    global _keyring
    with _lock:
        _keyring = ring
