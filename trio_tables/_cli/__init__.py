"""The ``trio-tables`` command's parts, one module per command (the entry point, the
parser and the exit codes are in :mod:`trio_tables.cli`)."""
