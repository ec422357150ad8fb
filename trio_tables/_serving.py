"""The manager's HTTP endpoint: :class:`ManagerWeb` (a mixin of ``TableManager``).

The endpoint itself lives in :mod:`trio_tables._web`, imported when first served (the
``web`` extra: prometheus-client, hypercorn).
"""

from __future__ import annotations

import trio

from ._assignor import TablesAssignor

__all__ = ["ManagerWeb"]


class ManagerWeb:
    """``serve_web`` and ``web_url`` of a manager (no state but the bound address)."""

    # Provided by TableManager.
    app_id: str
    advertised_host: str | None
    _assignor: TablesAssignor
    _web_address: tuple[str, int] | None = None

    @property
    def web_url(self) -> str | None:
        """``http://host:port`` of the endpoint while it is served (the advertised host
        other workers forward to), else ``None``."""
        if self._web_address is None:
            return None
        return f"http://{self._assignor.host}"

    async def serve_web(
        self,
        port: int = 0,
        *,
        host: str = "0.0.0.0",
        graceful_timeout: float = 3.0,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve this worker's HTTP endpoint on ``host:port`` (``port=0``: a free port)
        until cancelled: ``GET /metrics`` (Prometheus), ``GET /status`` (JSON),
        ``GET /tables/{table}/{key}`` (a key's value from any worker: forwarded to the
        owner of its partition; 503 with ``Retry-After`` while the partition moves or
        recovers). See docs/operations.md. Run it in a nursery inside the manager's
        block (``await nursery.start(manager.serve_web, 8080)`` returns the endpoint's
        URL once it listens), or pass ``web_port=`` to the manager, which serves it for
        the block's lifetime.

        Start it before the first stream joins the group: the address other workers
        forward to (``advertised_host``, or this machine's host name, with the bound
        port when the setting names none) travels in the group's join metadata.

        Cancellation: the server stops listening at once and in-flight requests are
        cancelled (their connections closed without an answer); a forwarded query in
        flight is abandoned. Nothing of the worker's state is touched: requests only
        read. Raises :class:`~trio_tables.errors.MissingExtra` when the ``web`` extra is
        not installed."""
        from ._web import load

        serving = load()
        bound: list[tuple[str, int]] = []

        async def serve(*, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
            await serving.serve_worker(
                self,
                bind_host=host,
                port=port,
                graceful_timeout=graceful_timeout,
                task_status=task_status,
            )

        try:
            async with trio.open_nursery() as nursery:
                address = await nursery.start(serve)
                bound.append(address)
                self._web_address = address
                self._assignor.host = serving.advertised(self.advertised_host, address[1])
                url = self.web_url
                assert url is not None
                task_status.started(url)
        finally:
            if bound and self._web_address == bound[0]:
                self._web_address = None
