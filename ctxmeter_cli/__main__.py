"""``python -m ctxmeter_cli``: the same as the ``ctxmeter`` command."""

from ctxmeter_cli import entry

entry()
