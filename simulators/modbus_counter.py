"""A remote particle counter on Modbus TCP: pymodbus's server in front of a record buffer laid
out by a published register map (``tracker.wire.registermap``), for the demo and the tests.

The instrument keeps every sample in a ring buffer whether or not anyone polls it; the server
can be stopped and started again on the same port (a network outage) while records go on
accumulating. Time is whatever the caller says: records carry the time stamps they are given.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import deque

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from tracker.wire.registermap import CounterRecord, RegisterMap, encode_record

WRITE_CODES = {6, 16}
READ_HOLDING, READ_INPUT = 3, 4


class SimulatedCounter:
    """The buffer and the registers; :meth:`start`/:meth:`stop` bring the network face up and down."""

    def __init__(
        self, regmap: RegisterMap, *, host: str = "127.0.0.1", port: int = 0, capacity: int = 3000
    ) -> None:
        self.regmap = regmap
        self.host, self.port = host, port
        self.records: deque[CounterRecord] = deque(maxlen=capacity)
        self.selected: int | None = None  # None: the newest
        self.running = True
        self.requests = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, record: CounterRecord) -> None:
        """The instrument finished a sample (whether or not the network is up)."""
        with self._lock:
            self.records.append(record)

    # the registers
    def _device(self) -> SimDevice:
        holding_len = max(self.regmap.record_count, self.regmap.record_index, self.regmap.device_status) + 1
        blocks = (
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[0] * holding_len, datatype=DataType.REGISTERS)],
            [
                SimData(
                    self.regmap.record_first,
                    values=[0] * self.regmap.record_length,
                    datatype=DataType.REGISTERS,
                )
            ],
        )
        return SimDevice(id=0, simdata=blocks, action=self._action)

    async def _action(self, function_code, start_address, address, count, current_registers, set_values):
        self.requests += 1
        regmap = self.regmap
        with self._lock:
            if function_code in WRITE_CODES and set_values is not None:
                if address <= regmap.record_index < address + len(set_values):
                    value = set_values[regmap.record_index - address]
                    self.selected = None if value == regmap.newest else int(value)
            elif function_code == READ_HOLDING:
                status = (1 << regmap.device_bits["running"]) | (1 << regmap.device_bits["sampling"])
                values = {
                    regmap.record_count: len(self.records),
                    regmap.device_status: status if self.running else 0,
                    regmap.record_index: regmap.newest if self.selected is None else self.selected,
                }
                for reg, value in values.items():
                    if start_address <= reg < start_address + len(current_registers):
                        current_registers[reg - start_address] = value
            elif function_code == READ_INPUT:
                words = [0] * regmap.record_length
                if self.records:
                    index = len(self.records) - 1 if self.selected is None else self.selected
                    if 0 <= index < len(self.records):
                        words = encode_record(regmap, self.records[index])
                for i, word in enumerate(words):
                    at = regmap.record_first + i - start_address
                    if 0 <= at < len(current_registers):
                        current_registers[at] = word
        return None

    # the network face
    def start(self) -> SimulatedCounter:
        """Serve on ``host:port`` (port 0: a free one, kept for later restarts)."""
        if not self.port:
            with socket.socket() as probe:
                probe.bind((self.host, 0))
                self.port = probe.getsockname()[1]
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)

            async def main() -> None:
                self._server = ModbusTcpServer(self._device(), address=(self.host, self.port))
                await self._server.serve_forever(background=True)
                ready.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server.serving

            try:
                self._loop.run_until_complete(main())
            finally:
                ready.set()
                self._loop.close()

        self._thread = threading.Thread(target=serve, name="modbus-counter", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Take the network face down (the buffer keeps filling)."""
        if self._loop is not None and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._loop = self._thread = None
