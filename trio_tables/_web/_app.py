"""The worker's HTTP endpoint as a plain ASGI application (no framework: four routes).

* ``GET /metrics``: Prometheus text format (:mod:`._prometheus`);
* ``GET /status``: the worker's assignment, generation, per-partition offsets and lag,
  recovery and standby state, as JSON (:meth:`._figures.Figures.status`);
* ``GET /tables``: the tables and their sizes; ``GET /tables/{table}/{key}`` (with
  ``?window=current|all`` for windowed tables): the key's value as JSON, 404 when
  missing, answered here or forwarded to the owner of the key's partition, 503 with
  ``Retry-After`` while the partition moves or recovers (:mod:`._query`).

Handlers run on the Trio thread, in the server's nursery; a handler's failure answers
500 and is logged, it never stops the server or the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import trio

from ._client import HttpError, get
from ._figures import Figures
from ._host import WebHost
from ._prometheus import render_metrics
from ._query import Answer, Forward, route, unavailable

__all__ = ["FORWARDED_HEADER", "WorkerApp"]

logger = logging.getLogger("trio_tables.web")

FORWARDED_HEADER = "x-trio-tables-forwarded"
JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class WorkerApp:
    """The ASGI application of one worker (see the module docstring)."""

    def __init__(self, host: WebHost, *, forward_timeout: float = 5.0) -> None:
        self.host = host
        self.figures = Figures(host)
        self.forward_timeout = forward_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, headers, body = await self._handle(scope)
        except Exception:
            logger.exception("%s: %s %s failed", self.host.app_id, scope["method"], scope["path"])
            status, headers, body = 500, [("content-type", JSON)], b'{"error":"internal error"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope) -> tuple[int, list[tuple[str, str]], bytes]:
        if scope["method"] not in ("GET", "HEAD"):
            return _json(Answer(405, {"error": "only GET is served"}))
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        segments = [unquote(s) for s in raw_path.decode("latin-1").split("?")[0].split("/")[1:]]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if segments == ["metrics"]:
            await self.figures.refresh()
            return 200, [("content-type", PROMETHEUS)], render_metrics(self.figures)
        if segments == ["status"]:
            await self.figures.refresh()
            return _json(Answer(200, self.figures.status()))
        if segments == ["tables"]:
            await self.figures.refresh()
            return _json(Answer(200, self.figures.tables()))
        if len(segments) == 3 and segments[0] == "tables":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            return await self._table_key(
                segments[1],
                segments[2],
                window=query.get("window", ["current"])[0],
                forwarded=FORWARDED_HEADER in headers,
            )
        return _json(
            Answer(
                404,
                {"error": "not found", "routes": ["/metrics", "/status", "/tables/{table}/{key}"]},
            )
        )

    async def _table_key(
        self, table: str, key: str, *, window: str, forwarded: bool
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        decision = route(self.host, table, key, window=window, forwarded=forwarded)
        if isinstance(decision, Answer):
            status, headers, body = _json(decision)
            headers.append(("x-trio-tables-served-by", str(self.host._assignor.host)))
            return status, headers, body
        return await self._forward(decision, table, key, window)

    async def _forward(
        self, forward: Forward, table: str, key: str, window: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        url = f"http://{forward.host}/tables/{quote(table, safe='')}/{quote(key, safe='')}"
        if window != "current":
            url += f"?window={quote(window)}"
        try:
            response = await get(
                url, headers=[(FORWARDED_HEADER, "1")], timeout=self.forward_timeout
            )
        except (HttpError, trio.TooSlowError) as exc:
            logger.info("%s: forwarding to %s failed: %s", self.host.app_id, forward.host, exc)
            return _json(
                unavailable(
                    f"the owner of partition {forward.partition} ({forward.host}) did not "
                    "answer; ask again",
                    forward.partition,
                )
            )
        headers: list[tuple[str, str]] = [
            (name, response.headers[name])
            for name in ("content-type", "retry-after", "x-trio-tables-served-by")
            if name in response.headers
        ]
        return response.status, headers, response.body


def _json(answer: Answer) -> tuple[int, list[tuple[str, str]], bytes]:
    return answer.status, [("content-type", JSON), *answer.headers], answer.encoded()
