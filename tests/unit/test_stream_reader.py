"""One stream, one reader: a second task iterating the same Stream gets
trio.BusyResourceError instead of marking the first task's events processed."""

from __future__ import annotations

import uuid

import pytest
import trio
import trio.testing

import trio_tables
from trio_tables import TableManager
from trio_tables._transport._base import OutgoingRecord


async def _source(url: str, keys: list[str]) -> None:
    async with trio_tables.open_transport(url) as transport:
        await transport.create_topic("src", 2)
        async with transport.open_producer() as producer:
            await producer.send_batch([OutgoingRecord("src", b"{}", key=k.encode()) for k in keys])
            await producer.flush()


async def test_a_second_task_cannot_take_an_event_while_the_first_holds_one() -> None:
    url = f"memory://reader-{uuid.uuid4().hex[:8]}"
    await _source(url, ["a", "b", "c"])
    async with (
        TableManager("app", broker=url) as manager,
        manager.stream("src", key_type=str) as events,
    ):
        await manager.wait_until_recovered()
        first = await events.__anext__()  # this task holds it now
        errors: list[BaseException] = []

        async def second_reader() -> None:
            try:
                await events.__anext__()
            except trio.BusyResourceError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second_reader)
        assert len(errors) == 1
        assert "iterating the stream of 'src'" in str(errors[0])
        assert events.current == first  # still this task's event, not processed
        # Once the holder finished its event, another task may take over.
        events.ack()
        taken: list[str] = []

        async def take_over() -> None:
            taken.append((await events.__anext__()).key)
            events.ack()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take_over)
        assert len(taken) == 1
        assert taken[0] != first.key


async def test_a_second_task_cannot_wait_beside_a_waiting_reader() -> None:
    url = f"memory://reader-{uuid.uuid4().hex[:8]}"
    await _source(url, [])
    async with (
        TableManager("app", broker=url) as manager,
        manager.stream("src", key_type=str) as events,
    ):
        await manager.wait_until_recovered()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events.__anext__)  # waits: no records
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await events.__anext__()
            nursery.cancel_scope.cancel()
        # The waiting reader was cancelled: the stream is free again, and a new
        # reader waits for records instead of failing.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events.__anext__)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
