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
