"""Server-rendered pages (templates in ``templates/web``); forms post and redirect back."""

from tracker.web.pages import admin, auth, batches, exchange, floor, quality

routers = [auth.router, floor.router, quality.router, batches.router, admin.router, exchange.router]
