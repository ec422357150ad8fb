"""Developer tasks: ``python3 -m nox -s tests|faults|lint|bench|demo|docs`` (``-l`` lists
them).

Each session builds a venv from the interpreter that runs nox (Python 3.11+), with the
standard ``venv`` backend, so a machine with only Python and pip can run everything.
Arguments after ``--`` go to the tool (``nox -s tests -- -k broker -x``). Installs say
what they install first (pip itself is quiet unless it fails).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

SOURCES = ["trio_tables", "tests", "benchmarks", "examples", "docs", "noxfile.py"]
# pytest-xdist processes for the suite, each with its own embedded broker: the
# integration tests mostly wait for the broker's join rounds, so 4 beat 2 cores.
TEST_PROCESSES = "4"


def _install(session: nox.Session, *args: str, what: str) -> None:
    """``pip install ARGS`` after one line saying what is being installed (pip itself
    prints nothing unless it fails)."""
    session.log(
        f"installing {what} into {session.virtualenv.location} (pip is quiet: up to a "
        "minute the first time, a few seconds after that)"
    )
    session.install(*args)


@nox.session(python=None)
def tests(session: nox.Session) -> None:
    """The whole test suite (unit, contract, integration on the embedded broker), in
    parallel processes (``-- -n 0`` runs it in one)."""
    _install(
        session,
        "-e",
        ".[test]",
        what="trio-tables and its test tools (trio, kafka-python, confluent-kafka, pytest, "
        "pytest-xdist, the Tansu broker)",
    )
    session.run("pytest", "-n", TEST_PROCESSES, "--dist", "worksteal", *session.posargs)


@nox.session(python=None)
def faults(session: nox.Session) -> None:
    """The fault suite at full length (20 kill -9s, a 60 s rebalance storm, broker
    restarts), one test at a time with progress lines; the ``tests`` session runs the
    same tests with fewer rounds."""
    _install(session, "-e", ".[test]", what="trio-tables and its test tools")
    session.run(
        "pytest",
        "tests/integration/test_faults.py",
        *session.posargs,
        env={"TRIO_TABLES_FAULTS": "full"},
    )


@nox.session(python=None)
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict."""
    _install(session, "-e", ".[test,dev]", what="trio-tables, ruff and mypy")
    session.run("ruff", "check", *SOURCES)
    session.run("mypy", "--strict", "trio_tables")


@nox.session(python=None)
def bench(session: nox.Session) -> None:
    """trio_tables vs the raw kafka-python loop on the peers' workload, on the embedded
    broker; ``-- --peers`` adds faust-streaming and quixstreams (same group timeouts, and
    each at its defaults), ``-- --soak`` runs the soak instead (``-- --help``)."""
    _install(session, "-e", ".[broker]", what="trio-tables and the Tansu broker")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(python=None)
def demo(session: nox.Session) -> None:
    """The demo on the embedded broker (``-- --broker URL`` to use another one)."""
    _install(
        session,
        ".[broker]",
        what="trio-tables, its dependencies (trio, kafka-python, confluent-kafka) and the "
        "Tansu broker",
    )
    session.run("python", "-m", "trio_tables", "demo", *session.posargs)


@nox.session(python=None)
def docs(session: nox.Session) -> None:
    """Regenerate docs/api.md from the docstrings."""
    _install(session, "-e", ".[test]", what="trio-tables and its test tools")
    session.run("python", "docs/gen_api.py")
