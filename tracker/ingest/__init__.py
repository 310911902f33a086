"""Input paths into the monitoring intake: the MQTT ingest worker (``client``) and the
processor that turns wire messages into intake calls (``processor``)."""
