"""The wire: MQTT topics, the reading payload contract, units (the one pint registry), the
MQTT client helpers and a local mosquitto for the demo and tests.

Imports nothing else from ``tracker``: the simulator uses only this package, so what it
publishes and what the tracker parses are one contract (docs/wire-contract.md).
"""
