"""The demo's plant-floor equipment: a Sparkplug B edge node with one particle counter and a
Modbus TCP counter, both sampling once per ``interval_s`` of simulated time.

The edge node encodes with ``tracker.wire.sparkplug`` (the tests use an independent library);
the counter is :class:`simulators.modbus_counter.SimulatedCounter`. Counts are mostly quiet with
a burst now and then, so the demo shows an excursion arriving through each path.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta

from simulators.modbus_counter import SimulatedCounter
from tracker.wire.mqtt import BrokerAddress, connect, make_client
from tracker.wire.registermap import CounterRecord
from tracker.wire.sparkplug import NAMESPACE, encode_payload

UINT64, DOUBLE, STRING = 8, 10, 12
METRICS = ("Counts/0.5um", "Counts/5.0um", "Sample/Volume_L", "Status")


def _counts(rng: random.Random, n: int) -> tuple[int, int]:
    """Quiet grade B air, with a burst above the at-rest action level every 20th sample."""
    c05 = rng.randint(5, 40) + (rng.randint(150, 400) if n % 20 in (10, 11) else 0)
    return c05, rng.randint(0, 1)


def _sim_clock(start: datetime, speed: float):
    wall0 = time.monotonic()
    return lambda: start + timedelta(seconds=(time.monotonic() - wall0) * speed)


def run_edge_node(
    broker: BrokerAddress,
    *,
    group: str,
    edge_node: str,
    device: str,
    start: datetime,
    speed: float,
    interval_s: float,
    stop: threading.Event,
    protocol: int = 5,
    seed: int = 1,
) -> None:
    """Births, then one DDATA per sample until ``stop``; the will is the node's NDEATH."""
    rng, now = random.Random(seed), _sim_clock(start, speed)
    client = make_client(broker, client_id=f"demo-edge-{edge_node}", protocol=protocol)
    stamp = int(now().timestamp() * 1000)
    death = encode_payload(timestamp_ms=stamp, seq=None, metrics=[("bdSeq", None, UINT64, 0)])
    client.will_set(f"{NAMESPACE}/{group}/NDEATH/{edge_node}", death, qos=1)
    connect(client, broker)
    client.loop_start()
    seq = 0
    client.publish(
        f"{NAMESPACE}/{group}/NBIRTH/{edge_node}",
        encode_payload(timestamp_ms=stamp, seq=seq, metrics=[("bdSeq", None, UINT64, 0)]),
    )
    birth = [
        (name, i + 1, dt, 0)
        for i, (name, dt) in enumerate(zip(METRICS, (UINT64, UINT64, DOUBLE, UINT64), strict=True))
    ]
    seq += 1
    client.publish(
        f"{NAMESPACE}/{group}/DBIRTH/{edge_node}/{device}",
        encode_payload(timestamp_ms=stamp, seq=seq, metrics=birth),
    )
    n = 0
    try:
        while not stop.wait(interval_s / speed):
            n += 1
            seq = (seq + 1) % 256
            c05, c50 = _counts(rng, n)
            data = [
                (None, 1, UINT64, c05),
                (None, 2, UINT64, c50),
                (None, 3, DOUBLE, 28.3),
                (None, 4, UINT64, 0),
            ]
            client.publish(
                f"{NAMESPACE}/{group}/DDATA/{edge_node}/{device}",
                encode_payload(timestamp_ms=int(now().timestamp() * 1000), seq=seq, metrics=data),
            )
    finally:
        client.disconnect()
        client.loop_stop()


def run_counter(
    counter: SimulatedCounter,
    *,
    start: datetime,
    speed: float,
    interval_s: float,
    stop: threading.Event,
    seed: int = 2,
) -> None:
    """The counter's own sampling: a record into its buffer every ``interval_s`` simulated seconds."""
    rng, now = random.Random(seed), _sim_clock(start, speed)
    n = 0
    while not stop.wait(interval_s / speed):
        n += 1
        c05, c50 = _counts(rng, n)
        counter.add(
            CounterRecord(
                int(now().timestamp()), int(interval_s), 0, (c05 * 3, c05, c05 // 2 + c50, c50, 0, 0, 0, 0)
            )
        )
