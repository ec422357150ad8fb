"""Developer tasks: ``python3 -m nox -s tests|lint|bench|demo|docs`` (``-l`` lists them).

Each session builds a venv from the interpreter that runs nox (Python 3.11+), with the
standard ``venv`` backend, so a machine with only Python and pip can run everything.
Arguments after ``--`` go to the tool (``nox -s tests -- -k broker -x``).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

SOURCES = ["trio_tables", "tests", "benchmarks", "examples", "docs", "noxfile.py"]


@nox.session(python=None)
def tests(session: nox.Session) -> None:
    """The whole test suite (unit, contract, integration on the embedded broker)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=None)
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict."""
    session.install("-e", ".[test,dev]")
    session.run("ruff", "check", *SOURCES)
    session.run("mypy", "--strict", "trio_tables")


@nox.session(python=None)
def bench(session: nox.Session) -> None:
    """trio_tables vs the raw kafka-python loop on the peers' workload, on the embedded
    broker; ``-- --peers`` adds faust-streaming and quixstreams (``-- --help``)."""
    session.install("-e", ".[broker]")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(python=None)
def demo(session: nox.Session) -> None:
    """The demo on the embedded broker (``-- --broker URL`` to use another one)."""
    session.install(".[broker]")
    session.run("python", "-m", "trio_tables", "demo", *session.posargs)


@nox.session(python=None)
def docs(session: nox.Session) -> None:
    """Regenerate docs/api.md from the docstrings."""
    session.install("-e", ".[test]")
    session.run("python", "docs/gen_api.py")
