"""One error hierarchy; each error inherits the matching builtin and carries an HTTP status."""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error the tracker raises on purpose."""

    status_code = 400


class NotFoundError(TrackerError, LookupError):
    status_code = 404


class InvalidInputError(TrackerError, ValueError):
    status_code = 422


class FacilityFileError(InvalidInputError):
    """The facility file is inconsistent; the message names the entry and the rule."""


class LimitTooLooseError(InvalidInputError):
    """A facility level is looser than the regulation it must sit inside."""


class AuthenticationError(TrackerError, PermissionError):
    """Wrong user name or password, or the account is locked or deactivated."""

    status_code = 401


class PermissionDeniedError(TrackerError, PermissionError):
    """The user is authenticated but their role, or the separation of duties, forbids this."""

    status_code = 403


class ConflictError(TrackerError, ValueError):
    """The record is not in a state that allows this; the message says what is missing."""

    status_code = 409

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message if not reasons else f"{message}: " + "; ".join(reasons))
        self.reasons = reasons or [message]


class Reason(str):
    """A reason shown to people: the English sentence (what ``str`` gives, for logs, JSON and
    tests) that also carries its Chinese wording for zh-CN pages and terminals."""

    zh: str

    def __new__(cls, en: str, zh: str) -> Reason:
        obj = super().__new__(cls, en)
        obj.zh = zh
        return obj


def in_language(text: str, lang: str) -> str:
    """``text`` in ``lang`` when it is a :class:`Reason` that knows it; otherwise as it is."""
    return text.zh if lang == "zh-CN" and isinstance(text, Reason) else text
