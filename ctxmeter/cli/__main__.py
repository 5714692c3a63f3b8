"""``python -m ctxmeter.cli``: the same as the ``ctxmeter`` command."""

from ctxmeter.cli import entry

entry()
