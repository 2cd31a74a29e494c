"""Structured log lines: one event per line, ``key=value`` pairs after the event name."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def configure(level: str = "INFO", *, file: Path | None = None) -> None:
    """Send the ``edgefleet.*`` loggers' lines to stderr (or ``file``)."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s event=%(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("edgefleet").setLevel(level.upper())
