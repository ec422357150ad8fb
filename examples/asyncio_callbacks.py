"""Calling an asyncio library from trio_tables (through trio-asyncio).

A word count reports to an audit service whose client is asyncio code: it keeps one
connection made with ``asyncio.open_connection`` (stand-in for any asyncio client
library: aiohttp, redis.asyncio, asyncpg, ...). Two places call it:

* a table callback: ``on_recover`` is an ``async def`` for asyncio, marked with
  ``@trio_tables.asyncio_callback``, so the table runs it on the manager's trio-asyncio
  loop after every recovery;
* stream processing: ``await manager.run_asyncio(client.send, line)`` from the
  ``async for`` loop, when a word reaches a multiple of 100.

The manager opens its trio-asyncio loop (in its own nursery) the first time asyncio code
runs, so the client's connection lives on that loop across calls. The audit service
itself is a Trio TCP server on 127.0.0.1. The app runs twice: the second run recovers
its table from the changelog, and ``on_recover`` reports how many keys it found.

    python examples/asyncio_callbacks.py                  # in-process broker
    python examples/asyncio_callbacks.py --broker kafka://127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from functools import partial

import trio

import trio_tables
from trio_tables.testing import open_test_manager, produce, wait_until_committed


class AuditClient:
    """An asyncio client: every method must run on an asyncio loop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, line: str) -> str:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._streams
        writer.write(line.encode() + b"\n")
        await writer.drain()
        return (await reader.readline()).decode().strip()  # the service's "ok"

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            await self._streams[1].wait_closed()
            self._streams = None


async def audit_service(received: list[str], stream: trio.SocketStream) -> None:
    """The other side (Trio): one line in, "ok" out."""
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            received.append(line.decode())
            await stream.send_all(b"ok\n")


async def run_app(broker: str, app: str, topic: str, port: int, events: int) -> None:
    """One run of the word count: recover, count ``events`` events, stop."""
    client = AuditClient(port)
    async with open_test_manager(broker, app) as manager:

        @trio_tables.asyncio_callback
        async def on_recover() -> None:  # asyncio code, run on the manager's loop
            await client.send(f"recovered counts: {len(counts)} keys")

        counts = manager.Table("counts", default=int, key_type=str, on_recover=on_recover)
        async with manager.stream(topic, key_type=str) as stream:
            seen = 0
            async for event in stream:
                seen += 1
                counts[event.key] += 1
                if counts[event.key] % 100 == 0:
                    line = f"{event.key} reached {counts[event.key]}"
                    await manager.run_asyncio(client.send, line)
                if seen == events:
                    break
        await wait_until_committed(broker, manager, [topic])
        await manager.run_asyncio(client.close)


async def main(broker: str) -> list[str]:
    """Run the app twice on ``broker``; the lines the audit service received."""
    run = uuid.uuid4().hex[:8]
    app, topic = f"audit-example-{run}", f"words-{run}"
    received: list[str] = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(audit_service, received), 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        await produce(broker, topic, [("trio", 1)] * 250 + [("asyncio", 1)] * 120)
        await run_app(broker, app, topic, port, events=370)
        await produce(broker, topic, [("trio", 1)] * 50)
        await run_app(broker, app, topic, port, events=50)
        nursery.cancel_scope.cancel()
    return received


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=f"memory://example-{uuid.uuid4().hex[:8]}")
    for line in trio.run(main, parser.parse_args().broker):
        print("audit:", line)
