"""README.md's example, as printed, run again and again on one embedded broker, with the
URL that ``trio-tables broker`` prints: every run stops by itself and adds its nine
words to the counts the earlier runs left in the changelog."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from trio_tables.testing import open_embedded_broker

from ..unit.test_docs import readme_example, word_counts

pytestmark = pytest.mark.kafka

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]


async def test_the_readme_example_runs_again_and_again_on_the_embedded_broker(
    tmp_path: Path,
) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    # A broker of its own: the example's app id and topic are fixed names.
    async with open_embedded_broker() as broker:
        for run in (1, 2, 3):
            with trio.fail_after(120):  # hang guard: a run that never stops fails here
                done = await trio.run_process(
                    [sys.executable, str(script), broker.url],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            err = done.stderr.decode(errors="replace")
            assert done.returncode == 0, f"run {run}: exit {done.returncode}\n{err[-3000:]}"
            counts = word_counts(done.stdout.decode())
            assert counts == {w: run * WORDS.count(w) for w in WORDS}, f"run {run}"
