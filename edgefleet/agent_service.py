"""``edgefleet-agent``: the edge agent as a device runs it, with nothing but ``requirements/edge-device.txt`` installed.

    edgefleet-agent [--config /etc/edgefleet/edgefleet.toml] [--log-level INFO]

The same as ``edgefleet agent run``, without the CLI framework (typer and rich stay off the device).
Runs until SIGTERM or SIGINT. Exit codes as the ``edgefleet`` command's: 2 bad settings or feeds, 3 the
model could not be loaded (missing, tampered, unsigned), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from edgefleet.config import ConfigError, load_settings

log = logging.getLogger("edgefleet.agent")

EXIT_USAGE = 2
EXIT_MODEL = 3


class AgentServiceError(Exception):
    """The agent cannot start or stopped on an error; ``code`` is the process's exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


async def until_signalled(stop: asyncio.Event) -> None:
    """Return once SIGTERM or SIGINT arrives (``stop`` is set by either)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run_agent(config: Path | None, log_level: str = "INFO") -> None:
    """Load the settings, the model and the local feeds, then run the agent until SIGTERM."""
    from edge_agent.agent import EdgeAgent, default_client_id
    from edge_agent.errors import AgentError, FeedError, ModelLoadError
    from edge_agent.feeds import open_feeds
    from edge_agent.model import load_fastest_variant, load_model, read_trusted_keys
    from edge_agent.settings import AgentSettings
    from edge_agent.transport import mqtt_connector
    from edgefleet.logs import configure

    configure(log_level)
    try:
        settings = load_settings(AgentSettings, "agent", config)
        trusted_keys = read_trusted_keys(settings.trusted_model_keys)
        if settings.fastest_variant:
            model, timings = load_fastest_variant(
                settings.model_manifest, backend=settings.backend, threads=settings.threads, trusted_keys=trusted_keys
            )
            for timing in timings:
                log.info(
                    "variant_timed name=%s ms=%s chosen=%s reason=%s",
                    timing.name,
                    "-" if timing.milliseconds is None else f"{timing.milliseconds:.4f}",
                    timing.name == model.manifest.name,
                    timing.reason or "-",
                )
        else:
            model = load_model(
                settings.model_manifest,
                backend=settings.backend,
                threads=settings.threads,
                trusted_keys=trusted_keys,
            )
        feeds = open_feeds(settings, trusted_keys=trusted_keys)
    except ConfigError as exc:
        raise AgentServiceError(str(exc), EXIT_USAGE) from exc
    except ModelLoadError as exc:
        raise AgentServiceError(str(exc), EXIT_MODEL) from exc
    except FeedError as exc:
        raise AgentServiceError(str(exc), EXIT_USAGE) from exc
    client_id = default_client_id(settings)
    # Persistent sessions: the brokers keep readings and verdicts for the agent while it restarts.
    connect = mqtt_connector(settings.broker, client_id=client_id, clean_session=False)
    uplink = None
    if settings.uplink is not None:
        uplink = mqtt_connector(settings.uplink, client_id=f"{client_id[:57]}-uplink", clean_session=False)

    async def main() -> None:
        stop = asyncio.Event()
        async with EdgeAgent(settings, model=model, connect=connect, uplink=uplink, feeds=feeds):
            await until_signalled(stop)

    try:
        asyncio.run(main())
    except* AgentError as group:
        raise AgentServiceError(str(group.exceptions[0]), EXIT_USAGE) from group


def main(argv: list[str] | None = None) -> None:
    """Command-line entry of ``edgefleet-agent``."""
    parser = argparse.ArgumentParser(prog="edgefleet-agent", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", "-c", type=Path, default=None, help="settings file (TOML), [agent] table")
    parser.add_argument("--log-level", default="INFO", help="log level of edgefleet's own loggers")
    arguments = parser.parse_args(argv)
    if arguments.config is not None and not arguments.config.is_file():
        parser.error(f"settings file {arguments.config} does not exist")
    try:
        run_agent(arguments.config, arguments.log_level)
    except AgentServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.code) from exc
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
