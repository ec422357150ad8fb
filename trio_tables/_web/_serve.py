"""Serving a worker's endpoint with hypercorn's Trio worker: :func:`serve_worker`."""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from ._app import WorkerApp
from ._host import WebHost

__all__ = ["advertised", "serve_worker"]

logger = logging.getLogger("trio_tables.web")


def advertised(setting: str | None, port: int) -> str:
    """The ``host:port`` other workers forward to: the ``advertised_host`` setting as it
    is when it names a port, with the bound ``port`` when it names only a host, else this
    machine's host name and ``port``."""
    if setting is None:
        return f"{socket.gethostname()}:{port}"
    if urlsplit(f"//{setting}").port is not None:
        return setting
    return f"{setting}:{port}"


async def serve_worker(
    host: WebHost,
    *,
    bind_host: str,
    port: int,
    graceful_timeout: float,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``host``'s endpoint on ``bind_host:port`` (0: any free port) until
    cancelled; ``task_status.started((bind_host, bound port))`` once it listens."""
    config = Config()
    config.bind = [f"[{bind_host}]:{port}" if ":" in bind_host else f"{bind_host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = graceful_timeout
    config.errorlog = logging.getLogger("trio_tables.web.server")
    app = WorkerApp(host)

    async def started(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(started)
        bound_port = urlsplit(binds[0]).port
        assert bound_port is not None
        logger.info("%s: serving /metrics, /status and /tables on %s", host.app_id, binds[0])
        task_status.started((bind_host, bound_port))
