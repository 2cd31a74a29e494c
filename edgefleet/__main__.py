"""``python -m edgefleet``: the same as the ``edgefleet`` command."""

from edgefleet.cli import app

app()
