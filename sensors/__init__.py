"""The wire: MQTT topics, the reading payload contract, units and the MQTT client.

`sensors` knows nothing of batches or deviations; it turns bytes on a topic into
normalised readings (or a quarantine reason) and moves them off the broker.
"""
