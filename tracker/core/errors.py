"""One error hierarchy; each error inherits the matching builtin and carries an HTTP status."""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error the tracker raises on purpose.

    The message is a :class:`Reason` where people read it (``str(exc)`` stays English, for
    logs and JSON); :meth:`said` gives it in a page's or terminal's language.
    """

    status_code = 400

    @property
    def message(self) -> str:
        """The headline without the reasons (a :class:`Reason` when it knows its Chinese)."""
        return getattr(self, "_message", self.args[0] if self.args else "")

    def said(self, lang: str) -> str:
        return in_language(self.message, lang)

    def reasons_said(self, lang: str) -> list[str]:
        return [in_language(r, lang) for r in getattr(self, "reasons", [])]


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


class TooManyRequestsError(TrackerError):
    """Throttled: too many attempts or too much work asked for; ``retry_after`` in seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after = max(1, round(retry_after))


class PermissionDeniedError(TrackerError, PermissionError):
    """The user is authenticated but their role, or the separation of duties, forbids this."""

    status_code = 403


class ConflictError(TrackerError, ValueError):
    """The record is not in a state that allows this; the message says what is missing."""

    status_code = 409

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message if not reasons else f"{message}: " + "; ".join(reasons))
        self._message = message
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


#: stored values (roles, statuses …) as they read inside a Chinese reason; the same words as
#: the web catalogue (tests/test_web_i18n_services.py keeps the two in step)
WORDS_ZH = {
    "operator": "操作员",
    "production_head": "生产负责人",
    "qa": "质量保证（QA）",
    "qp": "质量受权人",
    "admin": "系统管理员",
    "viewer": "只读用户",
    "identity_reveal": "身份查阅",
    "open": "未关闭",
    "investigating": "调查中",
    "capa": "纠正预防措施",
    "closed": "已关闭",
    "in_progress": "生产中",
    "completed": "已完成",
    "production_signed": "生产已签名",
    "qa_reviewed": "QA 已审核",
    "released": "已放行",
    "rejected": "已拒绝",
    "proposed": "待确认",
    "confirmed": "已确认",
    "withdrawn": "已撤回",
    "approved": "批准",
    "done": "已完成",
    "effective": "有效",
    "not_effective": "无效",
    "corrective": "纠正措施",
    "preventive": "预防措施",
    "superseded": "已被取代",
    "critical": "重大",
    "major": "主要",
    "minor": "次要",
    "none": "无影响",
    "significant": "显著影响",
    "at_rest": "静态",
    "in_operation": "动态",
    "any": "任何",
    "particles": "悬浮粒子",
    "pressure": "压差",
    "temperature": "温度",
    "humidity": "相对湿度",
    "performed": "执行",
    "reviewed": "审核",
}


def zh_word(value: str) -> str:
    """``value`` (a role, a status …) in Chinese, or as it is when it is not a known word."""
    return WORDS_ZH.get(value, value)


def zh_words(values, sep: str = "、") -> str:
    return sep.join(zh_word(v) for v in values)
