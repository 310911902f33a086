"""The web app (issue 7): JSON API under ``/api/v1`` and server-rendered pages, both thin over
the service functions; see ``docs/web.md``."""
