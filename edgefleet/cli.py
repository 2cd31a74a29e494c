"""``edgefleet``: one command, a subcommand per part. Imports are lazy, per subcommand.

Exit codes: 0 success; 1 the demo's loop broke somewhere; 2 bad usage or settings; 3 a model could
not be loaded; 4 a broker or server could not be reached or started; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    scenario: Annotated[
        str | None, typer.Argument(help="Scenario file (TOML), or the name of a shipped one (see 'sim scenarios').")
    ] = None,
    config: ConfigOption = None,
    duration: Annotated[float | None, typer.Option(help="Simulated seconds; 0 runs until SIGTERM.")] = None,
    mode: Annotated[str | None, typer.Option(help="per_device, multiplexed or memory (no broker).")] = None,
    connections: Annotated[int | None, typer.Option(help="Connections of the multiplexed mode.")] = None,
    speed: Annotated[float | None, typer.Option(help="Simulated seconds per second; 0 = unpaced.")] = None,
    broker: Annotated[str | None, typer.Option(help="HOST:PORT of the MQTT broker.")] = None,
    ground_truth: Annotated[Path | None, typer.Option(help="JSON Lines file of injected faults.")] = None,
    live: Annotated[bool, typer.Option(help="Show the live view.")] = True,
    log_level: LogLevel = "WARNING",
) -> None:
    """Simulate a fleet publishing to the broker ([sim] table, EDGEFLEET_SIM_*), with a live view."""
    from rich.console import Console
    from rich.live import Live

    from edgefleet.logs import configure
    from firmware_sim.errors import SimError
    from firmware_sim.fleet import Fleet
    from firmware_sim.settings import SimSettings
    from firmware_sim.view import RateMeter, render
    from protocol.broker import BrokerSettings

    configure(log_level)
    try:
        settings = load_settings(SimSettings, "sim", config)
        overrides: dict[str, object] = {
            "scenario": Path(scenario) if scenario is not None else None,
            "duration_s": duration,
            "mode": mode,
            "connections": connections,
            "speed": speed,
            "ground_truth": ground_truth,
        }
        if broker is not None:
            host, _, port = broker.rpartition(":")
            overrides["broker"] = BrokerSettings(**{**settings.broker.model_dump(), "host": host, "port": int(port)})
        settings = SimSettings(**{**settings.model_dump(), **{k: v for k, v in overrides.items() if v is not None}})
        fleet = Fleet(settings)
    except (ConfigError, SimError, ValueError) as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    console = Console()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        meter = RateMeter()
        view = Live(console=console, refresh_per_second=4, transient=False) if live else contextlib.nullcontext()
        with view:
            run = asyncio.create_task(fleet.run(stop))
            while not run.done():
                if isinstance(view, Live):
                    view.update(render(fleet, meter))
                await asyncio.wait({run}, timeout=0.25)
            if isinstance(view, Live):
                view.update(render(fleet, meter))
            await run
        if live:
            console.print()

    asyncio.run(main())
    totals = fleet.totals()
    typer.echo(
        f"devices={totals.devices} published={totals.published} messages={totals.messages} "
        f"malformed={totals.malformed} faults={totals.faults} dropped={totals.dropped} "
        f"reconnects={totals.reconnects} simulated_s={totals.simulated_s:.1f}"
        + (f" ground_truth={settings.ground_truth}" if settings.ground_truth else "")
    )


@sim_app.command("faults")
def sim_faults() -> None:
    """The fault catalogue: every fault the simulator injects, with its defaults."""
    from rich.console import Console

    from firmware_sim.view import catalogue_table

    Console().print(catalogue_table())


@sim_app.command("profiles")
def sim_profiles() -> None:
    """Built-in device profiles and the signal models of their streams."""
    from rich.console import Console
    from rich.table import Table

    from firmware_sim.profiles import BUILT_IN

    table = Table(title="Device profiles")
    for column in ("profile", "streams", "what it is"):
        table.add_column(column)
    for name, profile in BUILT_IN.items():
        streams = ", ".join(f"{s.name} ({s.signal}, {s.rate_hz:g} Hz)" for s in profile.streams)
        table.add_row(name, streams, profile.description)
    Console().print(table)


@sim_app.command("scenarios")
def sim_scenarios() -> None:
    """The scenario files shipped as examples."""
    from firmware_sim.scenario import load_scenario, shipped_scenarios

    for path in shipped_scenarios():
        scenario = load_scenario(path)
        typer.echo(f"{path.stem:<16} {scenario.devices:>6} devices  {scenario.description}")


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds the fleet runs.")] = 30.0,
    devices: Annotated[int, typer.Option(min=1, max=200, help="Simulated devices, one edge agent each.")] = 5,
    rate: Annotated[float, typer.Option(help="Readings per second per device (an hour of demand each).")] = 8.0,
    broker: Annotated[str, typer.Option(help="auto (Mosquitto if on PATH), mosquitto, or embedded.")] = "auto",
    malformed: Annotated[
        float, typer.Option(help="Share of readings the simulator follows with a garbled copy.")
    ] = 0.01,
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


@models_app.command("list")
def models_list() -> None:
    """List the model tasks."""
    from models.tasks import TASKS

    for task in TASKS.values():
        typer.echo(f"{task.name:<16} {task.summary}")


@models_app.command("build")
def models_build(
    task: Annotated[str | None, typer.Argument(help="Task to build (default: every task).")] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("models/quantized"),
    quick: Annotated[bool, typer.Option(help="Fewer folds and epochs (for tests).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
) -> None:
    """Train, distil, prune, quantize and export one task's models (or all), and write their manifests and cards."""
    try:
        import torch  # noqa: F401  (only to fail early with a clear message)

        from models.tasks import TASKS, get_task
    except ModuleNotFoundError as exc:
        raise _fail(f"building models needs the 'train' extra ({exc.name} is missing)", EXIT_USAGE) from exc
    try:
        tasks = [get_task(task)] if task is not None else list(TASKS.values())
    except KeyError as exc:
        raise _fail(str(exc.args[0]), EXIT_USAGE) from exc
    import math

    from rich.console import Console
    from rich.table import Table

    console = Console()
    for selected in tasks:
        console.rule(f"[bold]{selected.name}[/]: {selected.summary}")
        report = selected.build(out, seed=seed, quick=quick)
        table = Table(title=f"{selected.name}: figures (built in {report['seconds']:.0f} s)")
        variants = list(report["variants"].values())
        figures = [
            key
            for key in ("val_accuracy", "test_accuracy", "val_false_alarms", "test_roc_auc", "test_best_f1")
            if any(key in variant for variant in variants)
        ]
        for column in ("variant", "parameters", "bytes", *figures):
            table.add_column(column.replace("_", " "), justify="left" if column == "variant" else "right")
        for variant in variants:
            size, parameters = variant.get("bytes"), variant.get("parameters")
            cells = [variant.get(key) for key in figures]
            table.add_row(
                variant["label"],
                f"{parameters:,}" if parameters else "-",
                f"{size:,}" if size else "-",
                *("-" if value is None or math.isnan(value) else f"{value:.3f}" for value in cells),
            )
        console.print(table)
        for backend, share in report.get("backend_agreement", {}).items():
            console.print(f"edge int8 argmax agreement with onnxruntime: {backend} {share:.1%}")
        for backend, reason in report.get("skipped", {}).items():
            console.print(f"[yellow]not built: {backend}: {reason}[/]")
        console.print(f"card: {report['artifacts']['card']}")


@models_app.command("eval")
def models_eval(
    task: Annotated[str, typer.Argument(help="Task whose committed artifact to score.")],
    backend: Annotated[str, typer.Option(help="onnxruntime, openvino or litert.")] = "onnxruntime",
    variant: Annotated[str, typer.Option(help="edge_int8, edge_fp32 or cloud_fp32.")] = "edge_int8",
    directory: Annotated[Path, typer.Option("--dir", help="Where the artifacts and cards are.")] = Path(
        "models/quantized"
    ),
) -> None:
    """Load a committed artifact with one runtime and print its metric on the test data (accuracy, or ROC-AUC)."""
    from models.runtimes import BACKENDS, RuntimeMissingError
    from models.tasks import VARIANTS, evaluate

    if backend not in BACKENDS:
        raise _fail(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}", EXIT_USAGE)
    if variant not in VARIANTS:
        raise _fail(f"--variant must be one of {', '.join(VARIANTS)}, not {variant!r}", EXIT_USAGE)
    try:
        result = evaluate(task, backend, variant=variant, directory=directory)
    except KeyError as exc:
        raise _fail(str(exc.args[0]), EXIT_USAGE) from exc
    except (FileNotFoundError, RuntimeMissingError) as exc:
        raise _fail(str(exc), EXIT_MODEL) from exc
    recorded = "" if result.recorded is None else f" (card: {result.recorded:.4f})"
    metric = result.metric.removeprefix("test_").replace("_", " ").replace("roc auc", "ROC-AUC")
    typer.echo(
        f"{result.task} {result.variant} on {result.backend}: test {metric} {result.value:.4f}"
        f" over {result.windows} windows{recorded}"
    )


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
