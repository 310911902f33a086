"""Alarms that reach people: the dispatcher that delivers the notification outbox (issue 16).

A worker of its own, separate from the ingester, so a slow or dead channel never holds up
ingest. The outbox rows are written by ``tracker.monitoring.outbox``; this package reads
them, writes the messages (``messages``) and sends them through Apprise (``dispatcher``).
"""
