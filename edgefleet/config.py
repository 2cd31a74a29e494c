"""Reading a deployable's settings: one TOML file with a table per deployable, then the environment.

``edgefleet.toml``::

    [agent]
    site = "plant-1"
    [agent.broker]
    host = "10.0.0.2"

The environment overrides the file (``EDGEFLEET_AGENT_SITE=...``, nested with ``__``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


class ConfigError(Exception):
    """A settings file is missing, unreadable or invalid."""


def load_settings(cls: type[S], section: str, path: Path | None) -> S:
    """Build ``cls`` from table ``section`` of the TOML file at ``path`` (if any) and the environment."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        values.update(table)
    try:
        return cls(**values)
    except ValidationError as exc:
        raise ConfigError(f"invalid [{section}] settings: {exc}") from exc
