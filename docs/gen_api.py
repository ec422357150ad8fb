"""Generate docs/api.md from the docstrings of the public API.

    python3 -m nox -s docs          # or: python docs/gen_api.py

Every name in ``trio_tables.__all__`` and ``trio_tables.testing.__all__`` is documented:
the outline below places them in sections, and names it does not place land in "Other
names", so a new public name is never left out (``tests/unit/test_docs.py`` checks). A
name of the outline that does not exist yet is documented by its contract from SPEC.md
(see ``PENDING``).
"""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio_tables  # noqa: E402
import trio_tables.errors  # noqa: E402
import trio_tables.testing  # noqa: E402

OUT = ROOT / "docs" / "api.md"

INTRO = """\
# API reference

Generated from the docstrings by `docs/gen_api.py` (`python3 -m nox -s docs`); edit the
docstrings, not this file. Everything public is importable from `trio_tables` (and the
testing support from `trio_tables.testing`); modules starting with `_` are private.
Guides: [tutorial](tutorial.md), [configuration](configuration.md),
[Faust porting guide](faust-porting.md), [testing](testing.md), [asyncio](asyncio.md),
[CLI](cli.md), [operating notes](operations.md), [guarantees](guarantees.md).
"""

OUTLINE: list[tuple[str, str, list[str]]] = [
    (
        "Manager",
        "The root of an app: its nursery owns the consumer group, the changelog producer, "
        "every table's nursery and the commits.",
        ["TableManager"],
    ),
    (
        "Tables",
        "Tables are created with `manager.Table(...)`, `manager.GlobalTable(...)`, "
        "`manager.SetTable(...)` and `manager.GlobalSetTable(...)`, which take the keyword "
        "arguments of `Collection` (see [configuration](configuration.md#tables)).",
        ["Collection", "Table", "GlobalTable", "SetTable", "GlobalSetTable", "SetValue"],
    ),
    (
        "Windowed tables",
        "Window arithmetic is in integer milliseconds; a window is `[start, end)`. "
        "Semantics (expiry, callbacks, relativity): [windowed tables](windowed-tables.md).",
        [
            "Window",
            "TumblingWindow",
            "HoppingWindow",
            "SlidingWindow",
            "WindowWrapper",
            "WindowSet",
        ],
    ),
    (
        "Streams and records",
        "",
        ["Stream", "Event", "current_event", "TP", "Record", "RecordMetadata", "open_transport"],
    ),
    ("asyncio interop", "See [asyncio](asyncio.md).", ["asyncio_callback"]),
    (
        "Abstract types",
        "Faust's `*T` types as `typing.Protocol`s (runtime checkable).",
        ["CollectionT", "TableT", "GlobalTableT", "TableManagerT"],
    ),
    ("Errors", "", ["errors"]),
]

PENDING: dict[str, str] = {}  # names promised by SPEC.md but not written yet

# Members the manager calls (they exist and do what their names say, but applications
# do not call them): left out of the member lists.
PLUMBING = {
    "take_changes", "persist", "discard_uncommitted", "activate", "deactivate", "restore",
    "resume_offsets", "close", "open_all_partitions", "buffered", "feed", "set_ready",
    "unready", "drop", "wait_idle", "abort",
}
# Members whose docstring is missing or inherited from the standard library.
FALLBACK = {
    "changelog_topic_name": "The changelog topic's name (`<app_id>-<table>-changelog` "
    "unless `changelog_topic=` was given).",
    "changelog_topic": "Same as `changelog_topic_name` (Faust has a topic object here).",
    "label": "`\"<class>: <name>\"`, for logs and displays.",
    "shortlabel": "Same as `label`.",
    "active_partitions": "The partitions this worker owns and has recovered.",
    "call_recover_callbacks": "Run the `on_recover` callbacks (the manager calls this after "
    "each recovery; sync, Trio or marked asyncio callbacks).",
    "on_recovery_completed": "Hook called by the manager once `active` partitions are "
    "recovered, before events of those partitions are processed; calls "
    "`call_recover_callbacks`.",
    "on_key_get": "Hook called after every read of a key (override to observe).",
    "on_key_set": "Hook called after every write of a key (override to observe).",
    "on_key_del": "Hook called after every delete of a key (override to observe).",
    "items": "`(key, value)` pairs of the partitions in scope (the current event's, or "
    "every active one), values detached.",
    "tp": "`TP(topic, partition)`.",
    "add": "Add a member (writes the new set).",
    "discard": "Remove a member if present (writes the new set).",
    "remove": "Remove a member; `KeyError` if absent.",
    "update": "Add the members of every iterable.",
    "difference_update": "Remove the members of every iterable.",
    "intersection_update": "Keep only members found in every iterable.",
    "symmetric_difference_update": "Keep members in exactly one of the set and `other`.",
    "clear": "Remove every member (deletes the key).",
}
NO_SIGNATURE = {"Stream", "GlobalTable", "SetTable", "GlobalSetTable", "SetValue"}

_ROLE = re.compile(r":(?:class|meth|func|data|attr|mod|exc):`~?([^`]+)`")


def _short(target: str) -> str:
    """``a.b.Class.member`` -> ``Class.member``; ``a.b.name`` -> ``name``."""
    parts = target.split(".")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return ".".join(parts[-2:])
    return parts[-1]


def _markdown(doc: str) -> str:
    """Docstring (reST-ish) to Markdown: roles and double backquotes to code."""
    doc = _ROLE.sub(lambda m: f"`{_short(m.group(1))}`", doc)
    doc = doc.replace("``", "`")
    # Literal blocks ("::" then an indented block) become fenced code.
    lines = doc.splitlines()
    result: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            result.append(line.rstrip()[:-1] if line.strip() != "::" else "")
            block: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(block)).strip("\n").splitlines()
            result += ["", "```python", *code, "```", ""]
            continue
        result.append(line)
        i += 1
    return "\n".join(result).strip()


def _doc(obj: Any, name: str = "") -> str:
    doc = inspect.getdoc(obj)
    if (not doc or doc.startswith("D.")) and name in FALLBACK:
        return FALLBACK[name]
    return _markdown(doc) if doc else ""


def _summary(obj: Any, name: str = "") -> str:
    doc = _doc(obj, name)
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def _signature(obj: Any, name: str) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    text = str(sig).replace("'", '"')
    text = re.sub(r'(: |-> )"([^"]*)"', r"\1\2", text)  # annotations are strings here
    text = re.sub(r'ForwardRef\("([^"]*)"\)', r"\1", text)  # (named tuples' fields)
    text = re.sub(r" -> .*$", "", text) if inspect.isclass(obj) else text
    return f"{name}{text}"


def _is_mixin(base: type) -> bool:
    """A private base class of the package (a mixin such as the manager's hooks or a
    table's window setup): its members are documented with the public class."""
    return base.__module__.startswith("trio_tables") and base.__name__ not in trio_tables.__all__


def _own_members(cls: type) -> list[tuple[str, Any]]:
    members: dict[str, Any] = {}
    mixins = [b for b in cls.__mro__[1:] if _is_mixin(b)]
    for klass in (cls, *mixins):
        for name, value in vars(klass).items():
            if name.startswith("_") or name in ("WindowWrapper",) or name in PLUMBING:
                continue
            members.setdefault(name, value)
    return list(members.items())


def _member_line(cls: type, name: str, value: Any) -> str:
    if isinstance(value, property):
        return f"- **`{name}`** (property): {_summary(value, name)}".rstrip(": ")
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if callable(value):
        func = value
        prefix = "async " if inspect.iscoroutinefunction(func) else ""
        signature = _signature(func, name).replace("(self, ", "(").replace("(self)", "()")
        return f"- **`{prefix}{signature}`**: {_summary(func, name)}".rstrip(": ")
    return f"- **`{name}`**: attribute"


def _class_section(name: str, cls: type) -> list[str]:
    protocol = getattr(cls, "_is_protocol", False)
    if name in NO_SIGNATURE or protocol:
        heading = name
    else:
        heading = _signature(cls, name).replace("(self, ", "(").replace("(self)", "()")
    lines = [f"### `{heading}`", ""]
    bases = [
        b.__name__
        for b in cls.__mro__[1:]
        if b.__module__.startswith("trio_tables") and not _is_mixin(b)
    ]
    if bases:
        lines += [f"*Also has everything of* `{bases[0]}`.", ""]
    lines += [_doc(cls), ""]
    members = _own_members(cls)
    if protocol:
        members = []  # the members are those of the class it describes
    if members and not issubclass(cls, BaseException):
        lines += [*(_member_line(cls, n, v) for n, v in members), ""]
    return lines


def _section_for(name: str, obj: Any) -> list[str]:
    if obj is None:
        return [f"### `{name}`", "", PENDING[name].strip(), ""]
    if inspect.ismodule(obj):  # the errors module: every error class
        lines = [_doc(obj), ""]
        for error_name in obj.__all__:
            error = getattr(obj, error_name)
            parents = ", ".join(b.__name__ for b in error.__bases__)
            lines += [f"### `errors.{error_name}({parents})`", "", _doc(error), ""]
        return lines
    if inspect.isclass(obj):
        return _class_section(name, obj)
    if callable(obj):
        prefix = "async " if inspect.iscoroutinefunction(obj) else ""
        return [f"### `{prefix}{_signature(obj, name)}`", "", _doc(obj), ""]
    kind = type(obj).__name__
    return [f"### `{name}`", "", f"A `{kind}`.", ""]


def _fixture_doc(fixture: Any) -> str:
    getter = getattr(fixture, "_get_wrapped_function", None)  # pytest's fixture object
    function = getter() if callable(getter) else getattr(fixture, "__wrapped__", fixture)
    return inspect.getdoc(function) or ""


def _lookup(module: Any, name: str) -> Any:
    return getattr(module, name, None)


def generate() -> str:
    lines = [INTRO]
    placed: set[str] = set()
    for title, intro, names in OUTLINE:
        lines += [f"## {title}", ""]
        if intro:
            lines += [intro, ""]
        for name in names:
            obj = _lookup(trio_tables, name)
            if obj is None and name not in PENDING:
                raise SystemExit(f"gen_api: {name} is in the outline but not in trio_tables")
            lines += _section_for(name, obj)
            placed.add(name)
    others = [n for n in trio_tables.__all__ if n not in placed]
    if others:
        lines += ["## Other names", ""]
        for name in others:
            lines += _section_for(name, getattr(trio_tables, name))
    lines += [
        "## Testing: `trio_tables.testing`",
        "",
        "See [testing](testing.md) for the fixtures and an example test.",
        "",
    ]
    fixtures = {"kafka_broker", "kafka_manager", "kafka_url", "memory_manager", "memory_url",
                "unique_name"}
    for name in trio_tables.testing.__all__:
        if name == "pytest_configure":
            continue
        obj = getattr(trio_tables.testing, name)
        if name in fixtures:
            lines += [f"### fixture `{name}`", "", _markdown(_fixture_doc(obj)), ""]
        elif name == "TEST_KAFKA_SETTINGS":
            lines += [f"### `{name}`", "", f"`{dict(obj)}`: Kafka client settings for tests "
                      "and demos on the embedded broker (short group timeouts).", ""]
        else:
            lines += _section_for(name, obj)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    OUT.write_text(generate())
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
