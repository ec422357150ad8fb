"""A minimal HTTP/1.1 GET over Trio with h11 (hypercorn's own HTTP/1.1 library): what
forwarding a table query and ``trio-tables top`` need, nothing more.

Cancellation: the connection is closed; nothing else happens.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import attrs
import h11
import trio

__all__ = ["HttpError", "Response", "get"]


class HttpError(Exception):
    """The server could not be reached, or did not answer HTTP."""


@attrs.frozen
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def get(
    url: str, *, headers: Iterable[tuple[str, str]] = (), timeout: float = 5.0
) -> Response:
    """``GET url`` (``http://host:port/path?query``); the whole response. Raises
    :class:`HttpError` when the server cannot be reached or answers nonsense, and
    :class:`trio.TooSlowError` after ``timeout`` seconds."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise HttpError(f"not an http:// URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = h11.Connection(our_role=h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=target,
        headers=[("host", parts.netloc), ("connection", "close"), *headers],
    )
    with trio.fail_after(timeout):
        try:
            stream = await trio.open_tcp_stream(parts.hostname, parts.port or 80)
        except OSError as exc:
            raise HttpError(f"cannot connect to {parts.netloc}: {exc}") from exc
        async with stream:
            try:
                await stream.send_all(connection.send(request))
                await stream.send_all(connection.send(h11.EndOfMessage()))
                return await _read_response(connection, stream)
            except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
                raise HttpError(f"{url}: {exc}") from exc


async def _read_response(connection: h11.Connection, stream: trio.SocketStream) -> Response:
    status = 0
    headers: dict[str, str] = {}
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return Response(status, headers, bytes(body))
