"""``python -m trio_tables``: the ``trio-tables`` command line (see :mod:`trio_tables.cli`)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
