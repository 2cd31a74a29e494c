"""``edgefleet``: one command, a subcommand per part. Imports are lazy, per subcommand.

Exit codes: 0 success; 1 the demo's loop broke somewhere; 2 bad usage or settings; 3 a model could
not be loaded; 4 a broker or server could not be reached or started; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.config import ConfigError, load_settings

EXIT_LOOP_BROKEN = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_BROKER = 4

app = typer.Typer(no_args_is_help=True, add_completion=False, help="EdgeFleet: edge-first AI for IoT fleets.")
agent_app = typer.Typer(no_args_is_help=True, help="The on-device edge agent.")
hub_app = typer.Typer(no_args_is_help=True, help="The cloud hub (REST API, adjudication, event store).")
sim_app = typer.Typer(no_args_is_help=True, help="Simulated device firmware and sensors.")
models_app = typer.Typer(no_args_is_help=True, help="Build and evaluate models (needs the 'train' extra).")
protocol_app = typer.Typer(no_args_is_help=True, help="The wire protocol.")
keys_app = typer.Typer(no_args_is_help=True, help="The fleet's model-signing keys.")
app.add_typer(agent_app, name="agent")
app.add_typer(hub_app, name="hub")
app.add_typer(sim_app, name="sim")
app.add_typer(models_app, name="models")
app.add_typer(protocol_app, name="protocol")
app.add_typer(keys_app, name="keys")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", exists=True, dir_okay=False, help="Settings file (TOML).")
]
LogLevel = Annotated[str, typer.Option("--log-level", help="Log level of edgefleet's own loggers.")]


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


async def _until_signalled(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@agent_app.command("run")
def agent_run(config: ConfigOption = None, log_level: LogLevel = "INFO") -> None:
    """Run the edge agent until SIGTERM (settings: [agent] table, EDGEFLEET_AGENT_* variables)."""
    from edge_agent.agent import EdgeAgent, default_client_id
    from edge_agent.errors import AgentError, ModelLoadError
    from edge_agent.model import load_model, read_trusted_keys
    from edge_agent.settings import AgentSettings
    from edge_agent.transport import mqtt_connector
    from edgefleet.logs import configure

    configure(log_level)
    try:
        settings = load_settings(AgentSettings, "agent", config)
        model = load_model(
            settings.model_manifest,
            backend=settings.backend,
            threads=settings.threads,
            trusted_keys=read_trusted_keys(settings.trusted_model_keys),
        )
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    except ModelLoadError as exc:
        raise _fail(str(exc), EXIT_MODEL) from exc
    client_id = default_client_id(settings)
    # Persistent sessions: the brokers keep readings and verdicts for the agent while it restarts.
    connect = mqtt_connector(settings.broker, client_id=client_id, clean_session=False)
    uplink = None
    if settings.uplink is not None:
        uplink = mqtt_connector(settings.uplink, client_id=f"{client_id[:57]}-uplink", clean_session=False)

    async def main() -> None:
        stop = asyncio.Event()
        async with EdgeAgent(settings, model=model, connect=connect, uplink=uplink):
            await _until_signalled(stop)

    try:
        asyncio.run(main())
    except* AgentError as group:
        raise _fail(str(group.exceptions[0]), EXIT_USAGE) from group


@hub_app.command("serve")
def hub_serve(config: ConfigOption = None, log_level: LogLevel = "INFO") -> None:
    """Serve the hub's REST API and MQTT ingest until SIGTERM ([hub] table, EDGEFLEET_HUB_*)."""
    from cloud_hub.errors import HubStartupError, ModelLoadError
    from cloud_hub.server import HubServer
    from cloud_hub.settings import HubSettings
    from edgefleet.logs import configure

    configure(log_level)
    try:
        settings = load_settings(HubSettings, "hub", config)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc

    async def main() -> None:
        stop = asyncio.Event()
        async with HubServer(settings) as hub:
            typer.echo(f"hub listening on {hub.base_url} (API under /api/v1, OpenAPI at /docs)")
            await _until_signalled(stop)

    try:
        asyncio.run(main())
    except HubStartupError as exc:
        code = EXIT_MODEL if isinstance(exc.__cause__, ModelLoadError) else EXIT_BROKER
        raise _fail(str(exc), code) from exc


@sim_app.command("run")
def sim_run(
    config: ConfigOption = None,
    duration: Annotated[float, typer.Option(help="Seconds to run; 0 runs until SIGTERM.")] = 0.0,
    log_level: LogLevel = "INFO",
) -> None:
    """Simulate a fleet of devices publishing to the broker ([sim] table, EDGEFLEET_SIM_*)."""
    from edgefleet.logs import configure
    from firmware_sim.fleet import Fleet
    from firmware_sim.settings import SimSettings

    configure(log_level)
    try:
        settings = load_settings(SimSettings, "sim", config)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc

    async def main() -> None:
        fleet = Fleet(settings)
        stop = asyncio.Event()
        if duration > 0:
            asyncio.get_running_loop().call_later(duration, stop.set)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(fleet.run(stop))
            await _until_signalled(stop)
        totals = fleet.totals()
        typer.echo(
            f"devices={totals.devices} published={totals.published} malformed={totals.malformed} "
            f"faults={totals.faults} dropped={totals.dropped}"
        )

    asyncio.run(main())


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds the fleet runs.")] = 30.0,
    devices: Annotated[int, typer.Option(min=1, max=200, help="Simulated devices, one edge agent each.")] = 5,
    rate: Annotated[float, typer.Option(help="Readings per second per device (an hour of demand each).")] = 8.0,
    broker: Annotated[str, typer.Option(help="auto (Mosquitto if on PATH), mosquitto, or embedded.")] = "auto",
    malformed: Annotated[float, typer.Option(help="Share of sends the simulator garbles.")] = 0.01,
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its database and log.")] = Path("var/demo"),
    live: Annotated[bool, typer.Option(help="Show the live table.")] = True,
) -> None:
    """Run the whole loop on embedded defaults: broker, hub on SQLite, simulated fleet, edge agents."""
    from edge_agent.errors import ModelLoadError
    from edgefleet.broker import BrokerUnavailableError
    from edgefleet.demo import DemoOptions, run_demo

    if broker not in ("auto", "mosquitto", "embedded"):
        raise _fail(f"--broker must be auto, mosquitto or embedded, not {broker!r}", EXIT_USAGE)
    options = DemoOptions(
        duration_s=duration,
        devices=devices,
        rate_hz=rate,
        broker=broker,  # type: ignore[arg-type]
        malformed_probability=malformed,
        workdir=workdir,
        live=live,
    )
    try:
        report = asyncio.run(run_demo(options))
    except ModelLoadError as exc:
        raise _fail(f"{exc} (rebuild with 'edgefleet models build italy_power')", EXIT_MODEL) from exc
    except BrokerUnavailableError as exc:
        raise _fail(str(exc), EXIT_BROKER) from exc
    raise typer.Exit(0 if report.ok else EXIT_LOOP_BROKEN)


@models_app.command("build")
def models_build(
    task: Annotated[str, typer.Argument(help="Task to build.")] = "italy_power",
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("models/quantized"),
    quick: Annotated[bool, typer.Option(help="Fewer epochs (for tests).")] = False,
) -> None:
    """Train, distill, quantize and export a task's models, and write their manifests and card."""
    import importlib

    try:
        module = importlib.import_module(f"models.{task}")
    except ModuleNotFoundError as exc:
        if exc.name in ("torch", "onnx", "onnxscript"):
            raise _fail(f"building models needs the 'train' extra ({exc.name} is missing)", EXIT_USAGE) from exc
        raise _fail(f"unknown task {task!r}", EXIT_USAGE) from exc
    report = module.build(out, quick=quick)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{task}: test split (built in {report['seconds']:.0f} s)")
    for column in ("variant", "parameters", "bytes", "val accuracy", "test accuracy"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for variant in report["variants"].values():
        size = variant["bytes"]
        table.add_row(
            variant["label"],
            f"{variant['parameters']:,}",
            f"{size:,}" if size else "-",
            f"{variant['val_accuracy']:.3f}",
            f"{variant['test_accuracy']:.3f}",
        )
    Console().print(table)
    typer.echo(f"artifacts: {', '.join(report['artifacts']['manifests'])}; card: {report['artifacts']['card']}")


@protocol_app.command("schemas")
def protocol_schemas(
    out: Annotated[Path, typer.Option(help="Directory of the JSON Schema files.")] = Path("docs/schemas"),
    check: Annotated[bool, typer.Option(help="Only check that the files are current.")] = False,
) -> None:
    """Write (or check) the JSON Schema of every wire message and of the model manifest."""
    import json

    from protocol.schemas import json_schemas

    stale = []
    for name, schema in json_schemas().items():
        path = out / f"{name}.json"
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        raise _fail(f"out of date (run 'edgefleet protocol schemas'): {', '.join(stale)}", EXIT_LOOP_BROKEN)


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option(help="Directory for model-signing.key (private) and model-signing.pub.")],
) -> None:
    """Make an Ed25519 model-signing key pair. Keep the private key off the devices."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / "model-signing.key", out / "model-signing.pub"
    if private.exists():
        raise _fail(f"{private} exists; refusing to overwrite a signing key", EXIT_USAGE)
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    typer.echo(f"private key {private} (keep it safe), public key {public} (agent: trusted_model_keys)")


@keys_app.command("sign")
def keys_sign(
    manifest: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A model manifest (JSON).")],
    key: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="The private model-signing key (PEM).")],
) -> None:
    """Sign a model manifest in place (Ed25519 over its canonical form)."""
    from pydantic import ValidationError

    from protocol.manifest import ModelManifest
    from protocol.signing import SignatureError, load_private_key, sign

    try:
        signed = sign(ModelManifest.model_validate_json(manifest.read_bytes()), load_private_key(key.read_bytes()))
    except (ValidationError, SignatureError) as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    manifest.write_text(signed.model_dump_json(indent=2) + "\n")
    typer.echo(f"signed {manifest}")
