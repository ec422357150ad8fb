"""The ``trio-tables`` command line: the demo, the inspection commands, the broker
command, and what each says when something is wrong."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections import Counter

import pytest
import trio

from trio_tables._cli._demo import demo_words
from trio_tables._cli._demo_windows import NOT_AVAILABLE
from trio_tables._embedded import BROKER_SETTINGS
from trio_tables._transport._url import split_kafka_url
from trio_tables.cli import EXIT_OK, EXIT_USAGE, main
from trio_tables.testing import (
    EmbeddedBroker,
    open_test_manager,
    produce,
    wait_until_committed,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich: no column of a table is cut


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _check_demo_output(out: str, events: int = 5000) -> None:
    expected = Counter(demo_words(events))
    assert f"ok: the counts on both workers add up to exactly the {events:,} words" in out
    # The printed top 10: every row's count is the number of times the word was produced.
    rows = dict(re.findall(r"│ (\S+)\s+│\s+([\d,]+) │ worker-[ab]", out))
    top = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert {word: int(count.replace(",", "")) for word, count in rows.items()} == dict(top)
    # Recovery progress: worker-a restoring worker-b's partitions, then worker-b its own.
    takeover, rejoin = out.split("worker-b starts again")
    assert re.search(r"restore worker-a counts\[\d\]", takeover)
    assert re.search(r"restore worker-b counts\[\d\]", rejoin)
    # The windowed count: checked by the demo against the windows of the events.
    assert NOT_AVAILABLE not in out
    assert "table hits: top words in their latest 10-second window" in out
    assert "ok: every word's hits in the window of its last event match the events" in out


@pytest.mark.kafka
def test_demo_starts_its_broker_and_prints_exact_tables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "embedded Tansu at kafka://127.0.0.1:" in out
    _check_demo_output(out)


def test_demo_on_the_in_process_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--broker", "memory://cli-demo", "--events", "3000"]) == EXIT_OK
    _check_demo_output(capsys.readouterr().out, events=3000)


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


@pytest.mark.parametrize(
    "command", [[], ["demo"], ["broker"], ["tables"], ["show"], ["recover"], ["top"]]
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: trio-tables")
    assert "example" in out or not command


# --------------------------------------------------------------------------- inspection

WORDS = ["apple", "pear", "apple", "fig", "apple", "pear"] * 5


async def _run_word_count(url: str, app: str, topic: str) -> None:
    """A word count app that processed WORDS and stopped (tables on the broker)."""
    await produce(url, topic, [(w, 1) for w in WORDS], partitions=2)
    async with open_test_manager(url, app) as manager:
        counts = manager.Table("counts", default=int, key_type=str)
        manager.Table("empty")
        async with manager.stream(topic, key_type=str) as events, trio.open_nursery() as nursery:

            async def count() -> None:
                async for event in events:
                    counts[event.key] += 1

            nursery.start_soon(count)
            await wait_until_committed(url, app, [topic], timeout=60)
            nursery.cancel_scope.cancel()
    # More input that nobody processed yet: lag.
    await produce(url, topic, [("fig", 1)] * 3, partitions=2)


@pytest.fixture(scope="module")
def word_count_app(kafka_broker: EmbeddedBroker) -> tuple[str, str]:
    # Unique per setup: with pytest-xdist a module's fixture may be set up again in one
    # process (its tests interleaved with other modules'), on the same broker.
    app = f"cli-app-{uuid.uuid4().hex[:12]}"
    topic = f"{app}-words"
    trio.run(_run_word_count, kafka_broker.url, app, topic)
    return app, kafka_broker.url


@pytest.mark.kafka
def test_tables_lists_partitions_offsets_and_lag(
    word_count_app: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app, url = word_count_app
    assert main(["tables", "--app", app, "--broker", url]) == EXIT_OK
    out = capsys.readouterr().out
    number = r"\s+([\d,-]+) │"
    rows = re.findall(r"│ (\w*)\s*│\s+(\d) │" + number * 4, out)
    tables = {name for name, *_ in rows if name}
    assert tables == {"counts", "empty"}
    assert len(rows) == 4  # two tables, two partitions each
    committed = sum(int(r[3]) for r in rows[:2])
    ends = sum(int(r[4]) for r in rows[:2])
    assert committed == len(WORDS)
    assert ends == len(WORDS) + 3
    assert "total lag 3 events" in out


@pytest.mark.kafka
def test_show_rebuilds_a_table_from_its_changelog(
    word_count_app: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app, url = word_count_app
    assert main(["show", "counts", "--app", app, "--broker", url]) == EXIT_OK
    raw = capsys.readouterr().out
    assert "\x1b[" not in raw  # captured output is not a terminal: no ANSI codes
    out = ANSI.sub("", raw)
    assert "table counts of app" in out
    assert "3 keys in 2 partitions" in out
    shown = dict(re.findall(r"│ '(\w+)'\s+│ (\d+)\s+│", out))
    assert {k: int(v) for k, v in shown.items()} == Counter(WORDS)

    assert main(["show", "counts", "--app", app, "--broker", url, "--limit", "1"]) == EXIT_OK
    out = ANSI.sub("", capsys.readouterr().out)
    assert "showing 1" in out
    assert "1 of 3 rows" in out


@pytest.mark.kafka
def test_recover_reports_every_table(
    word_count_app: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app, url = word_count_app
    assert main(["recover", "--app", app, "--broker", url]) == EXIT_OK
    out = capsys.readouterr().out
    assert re.search(r"restore \S+ counts\[\d\]", out)
    assert re.search(r"│ counts │\s+2 │\s+\d+ │\s+3 │", out)
    assert re.search(r"│ empty  │\s+2 │\s+0 │\s+0 │", out)


@pytest.mark.kafka
def test_unknown_app_and_table_say_what_exists(
    word_count_app: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app, url = word_count_app
    assert main(["show", "nope", "--app", app, "--broker", url]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"app '{app}' has no table 'nope'" in err
    assert "its tables: counts, empty" in err
    assert main(["tables", "--app", "no-such-app", "--broker", url]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no tables of app 'no-such-app'" in err
    assert "changelog topics on this broker" in err  # what is there instead
    typo = app[:-1] + "x"  # a mistyped app id: its own topics come first
    assert main(["tables", "--app", typo, "--broker", url]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"no tables of app '{typo}'" in err
    assert f"most similar first: {app}-" in err


def test_inspecting_an_unreachable_broker_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"kafka://127.0.0.1:{_closed_port()}"
    assert main(["tables", "--app", "a", "--broker", url, "--connect-timeout", "1"]) == EXIT_USAGE
    assert "no Kafka broker reachable" in capsys.readouterr().err


# --------------------------------------------------------------------------- broker


@pytest.mark.kafka
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
        servers, settings = split_kafka_url(url)
        assert servers.startswith("127.0.0.1:")
        assert settings == BROKER_SETTINGS  # what the embedded broker needs, in the URL
        port = int(servers.rsplit(":", 1)[1])
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


# --------------------------------------------------------------------------- Ctrl-C


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trio_tables", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def _read_until(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    """The output lines up to the first one starting with ``prefix``."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"the command ended without printing {prefix!r}:\n" + "\n".join(lines))


@pytest.mark.kafka
@pytest.mark.parametrize("presses", [1, 2])
def test_demo_answers_ctrl_c_in_its_restart_phase(presses: int) -> None:
    """One Ctrl-C: the workers finish their events, commit and leave; two: at once."""
    proc = _cli("demo")
    try:
        _read_until(proc, "restart  worker-b stops")  # worker-a is taking over now
        proc.send_signal(signal.SIGINT)
        if presses == 2:
            _read_until(proc, "SIGINT: stopping")
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    if presses == 1:
        assert "SIGINT: stopping; the workers finish their events, commit and leave" in out
        assert "stop     interrupted: the workers committed and left the group" in out
    else:
        assert "SIGINT again: stopping at once" in out
    assert out.rstrip().endswith("interrupted")


def test_inspection_commands_answer_ctrl_c_while_connecting() -> None:
    """A broker that accepts connections and never answers: ``tables`` is connecting
    (for up to --connect-timeout) when Ctrl-C arrives."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        proc = _cli("tables", "--app", "a", "--broker", f"kafka://127.0.0.1:{port}",
                    "--connect-timeout", "300")
        try:
            connection, _ = silent.accept()  # the command is connecting now
            with connection:
                proc.send_signal(signal.SIGINT)
                out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, out
    assert out.splitlines() == ["SIGINT: stopping", "interrupted"]
