"""The documentation keeps up with the code: every public name is in the API reference,
every local link points to a file, and the README keeps the commands CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import trio_tables
import trio_tables.testing
from trio_tables.testing import fresh_memory_url

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
API = DOCS / "api.md"
# Pages linked before they are written (none now).
NOT_YET_WRITTEN: set[str] = set()


@pytest.mark.parametrize(
    "name",
    sorted(set(trio_tables.__all__) | {f"testing.{n}" for n in trio_tables.testing.__all__}),
)
def test_every_public_name_is_in_the_api_reference(name: str) -> None:
    short = name.removeprefix("testing.")
    if short == "pytest_configure":
        return  # a pytest hook, not API
    heading = r"^### (?:fixture )?`(?:async )?(?:errors\.)?(\w+)"
    headings = re.findall(heading, API.read_text(), re.MULTILINE)
    assert short in headings or short == "errors", (
        f"{name} is public but not in docs/api.md: regenerate it with `python3 -m nox -s docs`"
    )


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: p.name)
def test_local_links_point_to_files(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        path = (page.parent / target).resolve()
        if path.name in NOT_YET_WRITTEN:
            continue
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


def test_readme_keeps_the_two_commands_verbatim() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert "python3 -m pip install nox && python3 -m nox -s demo" in lines
    assert "python3 -m pip install nox && python3 -m nox -s tests" in lines  # .ci/run greps it


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## Example\n\n```python\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md lost its example"
    code = match.group(1)
    assert len(code.strip().splitlines()) <= 20
    code = code.replace('"memory://readme"', repr(fresh_memory_url("readme")))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    rows = dict(re.findall(r"│ '(\w+)'\s+│ (\d+)\s+│", capsys.readouterr().out))
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]
    assert rows == {word: "2" if word == "the" else "1" for word in words}
