"""The examples in examples/ run and do what their docstrings say."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from trio_tables.testing import fresh_memory_url

EXAMPLES = Path(__file__).parents[2] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_asyncio_callbacks_example_reports_through_its_asyncio_client() -> None:
    example = _load("asyncio_callbacks")
    lines = await example.main(fresh_memory_url("example"))
    # First run: on_recover (asyncio, marked) runs before any event is processed.
    assert lines[0] == "recovered counts: 0 keys"
    restart = lines.index("recovered counts: 2 keys")  # second run: recovered both words
    milestones = sorted(lines[1:restart])
    assert milestones == ["asyncio reached 100", "trio reached 100", "trio reached 200"]
    assert lines[restart + 1 :] == ["trio reached 300"]
