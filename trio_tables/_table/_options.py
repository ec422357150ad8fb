"""Table constructor keywords that come from Faust (``schema=``, ``is_global=``, unknown
keywords) and ``clone()``.

Kept apart from :class:`~trio_tables.Collection` so the table core stays about data.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..errors import UnknownTableOption
from ._protocols import TableCore

__all__ = ["accepted_options", "check_options", "clone_table", "from_schema"]


def accepted_options(table_class: type) -> list[str]:
    """The keywords a table class accepts (after ``manager`` and ``name``): those of
    the first ``__init__`` in its MRO that names them (subclasses pass ``**kwargs``)."""
    for cls in table_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
        if names:
            return names
    return []


def check_options(
    table_class: type[Any], unknown: Mapping[str, Any], is_global: bool | None
) -> None:
    """:class:`~trio_tables.errors.UnknownTableOption` for unknown keywords; a
    ``TypeError`` for ``is_global=`` that contradicts the class (Faust's flag: here the
    class says it, ``manager.Table(is_global=True)`` makes a :class:`GlobalTable`)."""
    if unknown:
        raise UnknownTableOption(
            table_class.__name__, list(unknown), accepted_options(table_class)
        )
    if is_global is not None and bool(is_global) != bool(table_class.is_global):
        wanted = "a GlobalTable (manager.GlobalTable(...))" if is_global else "a Table"
        raise TypeError(
            f"{table_class.__name__}(is_global={is_global!r}): a {table_class.__name__} is "
            f"{'' if table_class.is_global else 'not '}global; create {wanted}, or pass "
            "is_global to manager.Table()/manager.SetTable(), which pick the class"
        )


def from_schema(schema: Any, name: str, given: Any) -> Any:
    """``given`` if set, else the attribute ``name`` of a Faust-style ``schema`` (an
    object with ``key_type``, ``value_type``, ``key_serializer``, ``value_serializer``)."""
    if given is not None or schema is None:
        return given
    return getattr(schema, name, None)


def clone_table(table: TableCore, overrides: Mapping[str, Any]) -> Any:
    """A new, unregistered table of ``table``'s class with its settings (serializers,
    callbacks, window and its options) and ``overrides``. A clone with another name
    has its own changelog (``{app_id}-{name}-changelog``) unless ``changelog_topic=``
    is given."""
    options = {**table.info(), **overrides}
    renamed = options["name"] != table.name
    if renamed and "changelog_topic" not in overrides:
        options["changelog_topic"] = None
    window = options.pop("window", None)
    copy_changelog_callbacks = "on_changelog_event" not in overrides
    options.pop("on_changelog_event", None)
    if not copy_changelog_callbacks:
        options["on_changelog_event"] = overrides["on_changelog_event"]
    table_class: Any = type(table)
    clone = table_class(table.manager, **options)
    if copy_changelog_callbacks:
        clone._changelog_callbacks = list(table._changelog_callbacks)
    if window is not None:
        clone_options = dict(table._window_options) if window is table.window else {}
        clone_options.pop("from_constructor", None)
        clone.using_window(window, **clone_options)
    return clone
