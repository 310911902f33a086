"""A stand-in for cleanroom hardware: publishes wire-contract v1 readings over MQTT.

It speaks only the wire contract (``tracker.wire.topics``, ``tracker.wire.mqtt``) and never imports
``tracker``. Entry points: :func:`simulators.publisher.generate` (pure message stream),
:func:`simulators.publisher.run_simulation` (paced MQTT publishing) and ``python -m simulators``.
"""
