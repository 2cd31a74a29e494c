"""Structured log lines: one event per line, ``<event> key=value ...``.

The project's formatter (``edgefleet.logs``) prints the message after ``event=``, so a line reads
``... logger=edgefleet.hub.ingest event=verdict_sent device_id=d-1 message_id=...``. The hub logs
under ``edgefleet.hub.*`` so that the CLI's log level applies to it. The same fields travel in the
record's ``extra`` (``record.event``, ``record.fields``) for handlers that emit JSON.
"""

from __future__ import annotations

import json
import logging

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:/+-$#@")


def format_value(value: object) -> str:
    """A value as one token: plain text when it is safe, else a JSON string (never a newline)."""
    text = value if isinstance(value, str) else str(value)
    if text and all(char in _PLAIN for char in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: object) -> None:
    """Log ``event`` with ``fields`` (``None`` values left out) as one ``key=value`` line."""
    if not logger.isEnabledFor(level):
        return
    present = {key: value for key, value in fields.items() if value is not None}
    line = " ".join([event, *(f"{key}={format_value(value)}" for key, value in present.items())])
    logger.log(level, "%s", line, extra={"event": event, "fields": present})
