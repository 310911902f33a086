"""A Sparkplug B edge node built with pysparkplug, driven line by line on stdin (JSON).

Commands: connect, sample (device metrics with their own time stamp), node (node metric),
skip (lose one seq, as a dropped QoS 0 message would), die (exit without DISCONNECT: the broker
sends the node's will, NDEATH), quit (clean NDEATH). Prints "ok" after each command and
"NCMD <metric names>" when a command reaches the node.
"""

import json
import os
import sys
import time

import pysparkplug as spb

GROUP, NODE, DEVICE = sys.argv[1], sys.argv[2], sys.argv[3]
HOST, PORT = sys.argv[4], int(sys.argv[5])


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def on_cmd(_node, message) -> None:
    say("NCMD " + ",".join(m.name or "" for m in message.payload.metrics))


def counter_metrics(ts: int, c05: int, c50: int, volume: float, status: str) -> tuple:
    return (
        spb.Metric(timestamp=ts, name="Counts/0.5um", datatype=spb.DataType.UINT64, value=c05),
        spb.Metric(timestamp=ts, name="Counts/5.0um", datatype=spb.DataType.UINT64, value=c50),
        spb.Metric(timestamp=ts, name="Sample/Volume_L", datatype=spb.DataType.DOUBLE, value=volume),
        spb.Metric(timestamp=ts, name="Status", datatype=spb.DataType.STRING, value=status),
    )


now = spb.get_current_timestamp()
client = spb.Client()
node = spb.EdgeNode(
    GROUP,
    NODE,
    metrics=[spb.Metric(timestamp=now, name="Room/DP_Pa", datatype=spb.DataType.DOUBLE, value=12.0)],
    client=client,
    cmd_callback=on_cmd,
)
node.register(spb.Device(DEVICE, counter_metrics(now, 0, 0, 28.3, "ok")))
for line in sys.stdin:
    cmd = json.loads(line)
    what = cmd["cmd"]
    if what == "connect":
        node.connect(HOST, port=PORT, blocking=False)
        time.sleep(0.5)
    elif what == "sample":
        node.update_device(
            DEVICE, counter_metrics(cmd["ts"], cmd["c05"], cmd["c50"], cmd["vol"], cmd["status"])
        )
    elif what == "node":
        node.update(
            [
                spb.Metric(
                    timestamp=cmd["ts"], name="Room/DP_Pa", datatype=spb.DataType.DOUBLE, value=cmd["dp"]
                )
            ]
        )
    elif what == "skip":
        node._seq  # noqa: B018 - advances pysparkplug's seq counter: the next message skips one
    elif what == "die":
        time.sleep(0.3)
        os._exit(0)  # no DISCONNECT: the broker publishes the will (NDEATH)
    elif what == "noop":
        pass
    elif what == "quit":
        node.disconnect()
        time.sleep(0.3)
        say("ok")
        break
    time.sleep(0.05)
    say("ok")
