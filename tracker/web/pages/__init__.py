"""Server-rendered pages (templates in ``templates/web``); forms post and redirect back."""

from tracker.web.pages import admin, alarms, auth, batches, exchange, floor, quality, viable

routers = [
    auth.router,
    floor.router,
    quality.router,
    batches.router,
    admin.router,
    viable.router,
    exchange.router,
    alarms.router,
]
