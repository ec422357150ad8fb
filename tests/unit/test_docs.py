"""The documentation keeps up with the code: every public name is in the API reference,
every local link points to a file, and the README keeps the commands CI and users run."""

from __future__ import annotations

import re
import sys
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


def readme_example() -> str:
    """The code of README.md's example, as printed."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## Example\n\n```python\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md lost its example"
    return match.group(1)


def word_counts(output: str) -> dict[str, int]:
    """The rows of the example's printed table."""
    return {w: int(n) for w, n in re.findall(r"│ '(\w+)'\s+│ (\d+)\s+│", output)}


def test_the_readme_example_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = readme_example()
    assert len(code.strip().splitlines()) <= 25
    monkeypatch.setattr(sys, "argv", ["example.py", fresh_memory_url("readme")])
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]
    assert word_counts(capsys.readouterr().out) == {w: 2 if w == "the" else 1 for w in words}


def test_readme_says_how_to_install_for_ones_own_code() -> None:
    readme = (ROOT / "README.md").read_text()
    try_it = readme.index("## Try it")
    own = readme.index("## Use it in your own code")
    example = readme.index("## Example")
    assert try_it < own < example, "the install command comes right after 'Try it'"
    section = readme[own:example]
    assert re.findall(r"^python3 -m pip install (.*)$", section, re.MULTILINE) == ["'.[broker]'"]
    assert "trio-tables broker" in readme[example:]
