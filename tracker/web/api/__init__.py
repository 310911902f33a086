"""The JSON API under ``/api/v1`` (OpenAPI at ``/docs``): thin over the service functions.

Machine clients get a token from ``POST /api/v1/tokens`` and send it as a bearer token;
browser scripts may use their session cookie plus the ``X-CSRF-Token`` header. Signatures
always carry the password in the body (re-authentication at signing).
"""

from tracker.web.api.routes import router

__all__ = ["router"]
