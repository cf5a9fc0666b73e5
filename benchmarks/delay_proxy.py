"""A TCP proxy on loopback that adds network delay (the kernel's netem is not available here).

Every chunk is held ``delay`` seconds in each direction, so a request/response exchange costs
``2 * delay`` (one round trip). A new connection's first bytes also wait one extra round trip,
standing in for TCP's SYN/SYN-ACK handshake, which loopback does not delay. The proxy counts
connections and "turns" (a client-to-server chunk after server-to-client traffic), so a benchmark
can say how many round trips each call paid.

Run: ``python -m benchmarks.delay_proxy --port P --target-port T --control-port C --delay 0.01``.
The control port answers one JSON line per ``stats`` or ``reset`` line it receives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
from dataclasses import asdict, dataclass

CHUNK = 65536
HOST = "127.0.0.1"


@dataclass
class Counters:
    connections: int = 0
    turns: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class DelayProxy:
    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.counters = Counters()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        handshake_done = loop.time() + 2 * self.delay  # SYN, SYN-ACK
        try:
            server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_w.close()
            return
        self.counters.connections += 1
        last = {"direction": "down"}  # the client speaks first: its first chunk is a turn

        async def pipe(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool
        ) -> None:
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

            async def deliver() -> None:
                while True:
                    due, data = await queue.get()
                    if not data:
                        break
                    if (wait := due - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    writer.write(data)
                    await writer.drain()
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()

            deliverer = asyncio.create_task(deliver())
            previous_due = 0.0
            try:
                while data := await reader.read(CHUNK):
                    now = loop.time()
                    if up:
                        self.counters.bytes_up += len(data)
                        if last["direction"] == "down":
                            self.counters.turns += 1
                        last["direction"] = "up"
                        now = max(now, handshake_done)
                    else:
                        self.counters.bytes_down += len(data)
                        last["direction"] = "down"
                    previous_due = max(previous_due, now + self.delay)
                    queue.put_nowait((previous_due, data))
            except OSError:
                pass
            finally:
                queue.put_nowait((previous_due, b""))
                with contextlib.suppress(OSError):
                    await deliverer

        try:
            await asyncio.gather(
                pipe(client_r, server_w, up=True),
                pipe(server_r, client_w, up=False),
            )
        except asyncio.CancelledError:
            pass  # the proxy is shutting down
        finally:
            for writer in (client_w, server_w):
                writer.close()

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while line := await reader.readline():
                if line.strip() == b"reset":
                    self.counters = Counters()
                writer.write(json.dumps(asdict(self.counters)).encode() + b"\n")
                await writer.drain()
        writer.close()


async def serve(port: int, target_port: int, control_port: int, delay: float) -> None:
    proxy = DelayProxy(target_port, delay)
    data_server = await asyncio.start_server(proxy.handle, HOST, port)
    control_server = await asyncio.start_server(proxy.control, HOST, control_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with data_server, control_server:
        await stop.wait()


class ProxyControl:
    """The benchmark's side of the control port."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.file = self.sock.makefile("rwb")

    def _ask(self, command: bytes) -> Counters:
        self.file.write(command + b"\n")
        self.file.flush()
        return Counters(**json.loads(self.file.readline()))

    def stats(self) -> Counters:
        return self._ask(b"stats")

    def reset(self) -> Counters:
        return self._ask(b"reset")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.010, help="seconds, each direction")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.target_port, args.control_port, args.delay))


if __name__ == "__main__":
    main()
