"""The ``trio-tables`` command line: demo round trip, broker command, error exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from trio_tables.cli import EXIT_OK, EXIT_USAGE, main
from trio_tables.testing import EmbeddedBroker

pytestmark = pytest.mark.kafka


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_demo_round_trip_on_a_given_broker(
    kafka_broker: EmbeddedBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--broker", kafka_broker.url]) == EXIT_OK
    out = capsys.readouterr().out
    assert "ok: 39 of 39 events consumed" in out
    assert "assigned partitions 0, 1, 2, 3" in out


def test_demo_reports_an_unreachable_broker_with_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"kafka://127.0.0.1:{_closed_port()}"
    assert main(["demo", "--broker", url, "--connect-timeout", "1"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no Kafka broker reachable" in err
    assert "python -m trio_tables broker" in err


def test_demo_rejects_an_unknown_url_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--broker", "amqp://localhost"]) == EXIT_USAGE
    assert "unsupported broker URL" in capsys.readouterr().err


def test_broker_command_prints_its_url_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_tables", "broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # blocks until the broker is ready
        assert url.startswith("kafka://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == EXIT_OK, err
        assert "broker stopped" in err
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
