"""``edgefleet``: one command, a subcommand per part. Imports are lazy, per subcommand.

Exit codes: 0 success; 1 the demo's loop broke somewhere, or a check failed (a notarized round that
does not match its stored leaves); 2 bad usage or settings; 3 a model could not be loaded; 4 a broker,
server or chain node could not be reached or started; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

try:
    import typer
except ModuleNotFoundError as exc:  # a device installs the agent alone: `edgefleet-agent`
    raise SystemExit(
        "the edgefleet command needs the 'cli' extra: pip install 'edgefleet[cli]'. "
        "On a device, run the agent with edgefleet-agent."
    ) from exc

from edgefleet.agent_service import until_signalled
from edgefleet.config import ConfigError, load_settings

if TYPE_CHECKING:
    from cloud_hub.notary.settings import ChainSettings

if TYPE_CHECKING:
    from cloud_hub.store import Store

T = TypeVar("T")

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
chain_app = typer.Typer(no_args_is_help=True, help="The on-chain notary of federated rounds and models.")
fl_app = typer.Typer(no_args_is_help=True, help="Federated learning on the fleet (Flower), every round notarized.")
app.add_typer(agent_app, name="agent")
app.add_typer(hub_app, name="hub")
app.add_typer(sim_app, name="sim")
app.add_typer(models_app, name="models")
app.add_typer(protocol_app, name="protocol")
app.add_typer(keys_app, name="keys")
app.add_typer(chain_app, name="chain")
app.add_typer(fl_app, name="fl")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", exists=True, dir_okay=False, help="Settings file (TOML).")
]
LogLevel = Annotated[str, typer.Option("--log-level", help="Log level of edgefleet's own loggers.")]


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@agent_app.command("run")
def agent_run(config: ConfigOption = None, log_level: LogLevel = "INFO") -> None:
    """Run the edge agent until SIGTERM (settings: [agent] table, EDGEFLEET_AGENT_* variables)."""
    from edgefleet.agent_service import AgentServiceError, run_agent

    try:
        run_agent(config, log_level)
    except AgentServiceError as exc:
        raise _fail(str(exc), exc.code) from exc


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
            await until_signalled(stop)

    try:
        asyncio.run(main())
    except HubStartupError as exc:
        code = EXIT_MODEL if isinstance(exc.__cause__, ModelLoadError) else EXIT_BROKER
        raise _fail(str(exc), code) from exc


hub_token_app = typer.Typer(
    no_args_is_help=True, help="The hub's API tokens (scopes: admin, operator, read-only, device)."
)
hub_app.add_typer(hub_token_app, name="token")


def _hub_store_action(config: Path | None, action: str, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``work(store)`` against the hub's database (migrated to head first); exit 2 or 4 on failure."""
    from cloud_hub.errors import StoreError
    from cloud_hub.settings import HubSettings
    from cloud_hub.store import Store

    try:
        settings = load_settings(HubSettings, "hub", config)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc

    async def main() -> T:
        async with Store.open(settings.database_url, **settings.engine_options()) as store:
            await store.init_schema()
            return await work(store)

    try:
        return asyncio.run(main())
    except StoreError as exc:
        raise _fail(f"could not {action}: {exc}", EXIT_BROKER) from exc


@hub_token_app.command("create")
def hub_token_create(
    scope: Annotated[str, typer.Option("--scope", help="admin, operator, read-only or device.")],
    device: Annotated[str | None, typer.Option("--device", help="The device a device token acts as.")] = None,
    label: Annotated[str, typer.Option("--label", help="What the token is for (shown in listings).")] = "",
    config: ConfigOption = None,
) -> None:
    """Make an API token and print it (shown this once; the hub keeps only its sha256)."""
    from cloud_hub.auth import AuthError, audit, create_token
    from cloud_hub.store import Scope

    try:
        chosen = Scope(scope)
    except ValueError:
        raise _fail(f"unknown scope {scope!r}: use one of {', '.join(s.value for s in Scope)}", EXIT_USAGE) from None

    async def work(store: Store) -> tuple[str, int]:
        secret, token_id = await create_token(store, scope=chosen, device_id=device, label=label)
        detail = {"scope": chosen.value, "device_id": device, "label": label}
        await audit(
            store, principal=None, action="cli token create", target=f"token:{token_id}", status=201, detail=detail
        )
        return secret, token_id

    try:
        secret, token_id = _hub_store_action(config, "create a token", work)
    except AuthError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    typer.echo(secret)
    typer.secho(f"token {token_id} ({chosen.value}{f', device {device}' if device else ''})", err=True)


@hub_token_app.command("list")
def hub_token_list(config: ConfigOption = None) -> None:
    """List the tokens (never their secrets)."""
    from cloud_hub.auth import list_tokens

    for row in _hub_store_action(config, "list tokens", list_tokens):
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "live"
        typer.echo(f"{row.id}\t{row.scope.value}\t{row.device_id or '-'}\t{state}\t{row.label}")


@hub_token_app.command("revoke")
def hub_token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id.")], config: ConfigOption = None
) -> None:
    """Revoke a token (hub workers stop accepting it within a few seconds)."""
    from cloud_hub.auth import audit, revoke_token

    async def work(store: Store) -> bool:
        revoked = await revoke_token(store, token_id)
        if revoked:
            await audit(store, principal=None, action="cli token revoke", target=f"token:{token_id}", status=204)
        return revoked

    if not _hub_store_action(config, "revoke a token", work):
        raise _fail(f"no live token {token_id}", EXIT_USAGE)
    typer.echo(f"token {token_id} revoked")


@hub_app.command("migrate")
def hub_migrate(config: ConfigOption = None) -> None:
    """Bring the hub's database to the newest schema (the hub also does this when it starts)."""
    from cloud_hub.migrate import current_revision

    revision = _hub_store_action(config, "migrate the database", current_revision)
    typer.echo(f"database at revision {revision}")


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


@sim_app.command("inject")
def sim_inject() -> None:
    """Inject the simulator's value faults into a recorded series, with ground truth (JSON in, JSON out).

    Reads ``{"values": [...], "rate_hz": r, "scale": s, "seed": n, "batch": b, "rules": [{"kind": "spike",
    "every_s": 2.0, "duration_s": 0.1, "magnitude": 6.0}, ...]}`` on stdin; writes ``{"values": [...],
    "labels": [0/1 per sample], "truth": [ground-truth records]}`` on stdout. ``models`` scores its anomaly
    detectors with it, across a process boundary (the parts import nothing of each other).
    """
    import json
    import sys

    import numpy as np

    from firmware_sim.faults import FaultKind, FaultLevel, FaultRule, GroundTruth, StreamFaults

    try:
        request = json.load(sys.stdin)
        values = np.asarray(request["values"], dtype=np.float64)
        rate_hz, batch = float(request["rate_hz"]), int(request.get("batch", 1))
        rules = [FaultRule(**{**rule, "kind": FaultKind(rule["kind"])}) for rule in request["rules"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(f"bad inject request: {exc}", EXIT_USAGE) from exc
    if any(rule.info.level is not FaultLevel.VALUE for rule in rules):
        raise _fail("only value faults (spike, drift, stuck, noise_burst) change a recorded series", EXIT_USAGE)
    truth = GroundTruth()
    faults = StreamFaults(
        rules,
        rng=np.random.default_rng(int(request.get("seed", 0))),
        device="recording",
        stream="series",
        scale=float(request.get("scale", 1.0)),
        batch=batch,
        truth=truth,
    )
    block = batch * max(1, 64 // batch)  # as the firmware does: schedule a block ahead, then send it batch by batch
    usable = len(values) - len(values) % batch
    for start in range(0, usable, block):
        count = min(block, usable - start)
        faults.prepare(start, count, rate_hz)
        if not faults.quiet(start, count):
            values[start : start + count] = faults.apply(start, values[start : start + count].copy())
        for seq in range(start, start + count, batch):
            faults.message(seq, batch, seq / rate_hz, (seq + batch - 1) / rate_hz)
    faults.close()
    labels = np.zeros(len(values), dtype=np.int64)
    for record in truth.records:
        labels[record["start"] : record["end"] + 1] = 1
    json.dump({"values": values.tolist(), "labels": labels.tolist(), "truth": truth.records}, sys.stdout)


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
    if sys.argv[1:3] == ["models", "build"]:  # started as this command (not called in-process, as by a test)
        from models.kernels import pin_kernels

        pin_kernels()
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


@chain_app.command("deploy")
def chain_deploy(config: ConfigOption = None) -> None:
    """Deploy the notary contract (compiled from source) to the node at [chain] url; prints its address."""
    from cloud_hub.notary.chain import open_notary
    from cloud_hub.notary.errors import ChainUnavailableError, NotaryError
    from cloud_hub.notary.settings import ChainSettings

    try:
        settings = load_settings(ChainSettings, "chain", config)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    if settings.url is None:
        raise _fail("set [chain] url (or EDGEFLEET_CHAIN_URL): an in-process chain ends with this command", EXIT_USAGE)
    try:
        notary = open_notary(settings, deploy=True)
        owner = notary.owner
    except ChainUnavailableError as exc:
        raise _fail(str(exc), EXIT_BROKER) from exc
    except NotaryError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    typer.echo(f"notary deployed at {notary.address} on {settings.url}, owner {owner}")
    typer.echo(f'add to the [chain] settings: contract_address = "{notary.address}"')


def _chain_reader_settings(config: Path | None, command: str) -> ChainSettings:
    from cloud_hub.notary.settings import ChainSettings

    try:
        settings = load_settings(ChainSettings, "chain", config)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    if settings.url is None or settings.contract_address is None:
        raise _fail(f"set [chain] url and contract_address: {command} reads a chain that outlives it", EXIT_USAGE)
    return settings


@chain_app.command("status")
def chain_status(config: ConfigOption = None) -> None:
    """The node, the contract, and the last recorded rounds: committed on chain or not."""
    from cloud_hub.notary.chain import open_notary
    from cloud_hub.notary.errors import ChainUnavailableError, NotaryError
    from cloud_hub.notary.ledger import JsonLinesRoundLedger

    settings = _chain_reader_settings(config, "status")
    ledger = JsonLinesRoundLedger(settings.ledger_dir)
    try:
        notary = open_notary(settings, read_only=True)
        recorded = ledger.round_ids()
        typer.echo(f"node      {settings.url} (chain id {notary.w3.eth.chain_id}, block {notary.w3.eth.block_number})")
        typer.echo(f"contract  {notary.address} (owner {notary.owner}, compiled by {notary.compiled.compiler})")
        typer.echo(f"rounds    {notary.round_count()} committed; {len(recorded)} recorded in {ledger.directory}")
        for round_id in recorded[-10:]:
            committed = notary.get_round(round_id)
            state = "not committed" if committed is None else f"committed in block {committed.block_number}"
            typer.echo(f"  round {round_id}: {state}")
    except ChainUnavailableError as exc:
        raise _fail(str(exc), EXIT_BROKER) from exc
    except NotaryError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc


@chain_app.command("verify")
def chain_verify(
    round_id: Annotated[int, typer.Argument(metavar="ROUND", min=0, help="The federated round's id.")],
    config: ConfigOption = None,
    ledger_dir: Annotated[Path | None, typer.Option(help="The rounds' leaves (default: [chain] ledger_dir).")] = None,
) -> None:
    """Recompute a round's Merkle root from its stored leaves and compare it with the chain (exit 1 if not equal)."""
    from cloud_hub.notary.chain import open_notary
    from cloud_hub.notary.errors import ChainUnavailableError, LedgerError, NotaryError
    from cloud_hub.notary.ledger import JsonLinesRoundLedger
    from cloud_hub.notary.service import check_round

    settings = _chain_reader_settings(config, "verify")
    ledger = JsonLinesRoundLedger(ledger_dir if ledger_dir is not None else settings.ledger_dir)
    try:
        check = check_round(open_notary(settings, read_only=True), ledger, round_id)
    except ChainUnavailableError as exc:
        raise _fail(str(exc), EXIT_BROKER) from exc
    except LedgerError as exc:
        raise _fail(f"round {round_id}: {exc}", EXIT_LOOP_BROKEN) from exc
    except NotaryError as exc:
        raise _fail(str(exc), EXIT_USAGE) from exc
    if not check.ok or check.chain is None or check.stored_root is None:
        for problem in check.problems:
            typer.secho(f"round {round_id}: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_LOOP_BROKEN)
    typer.echo(
        f"round {round_id}: {check.stored_leaf_count} leaves, root {check.stored_root.hex()} and model hash "
        f"{check.chain.model_hash.hex()} match the chain (block {check.chain.block_number})"
    )


@fl_app.command("start")
def fl_start(
    loopback: Annotated[
        int, typer.Option(min=0, help="Run N devices, a SuperLink and N SuperNodes on this machine (PLAID, non-IID).")
    ] = 0,
    connection: Annotated[
        str | None, typer.Option(help="Else: the flwr SuperLink connection to submit to (FLWR_HOME's config.toml).")
    ] = None,
    run_config: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="TOML of run-config overrides (see docs/federated.md)."),
    ] = None,
    rounds: Annotated[int, typer.Option(min=1)] = 3,
    strategy: Annotated[
        str, typer.Option(help="fedavg, fedgeomedian (robust default), fedmedian, fedtrimmedavg or multikrum.")
    ] = "fedavg",
    work_dir: Annotated[
        Path, typer.Option(help="Where the loopback fleet and run state live, or run configs are written.")
    ] = Path("var/fl-loopback"),
    tls: Annotated[
        bool, typer.Option(help="Loopback: TLS with generated certificates and SuperNode authentication.")
    ] = False,
) -> None:
    """Start a federated run: on a loopback deployment, or submitted to a running SuperLink."""
    import tomllib

    from cloud_hub.fl.deployment import submit_run
    from cloud_hub.fl.errors import DeploymentError, FederatedError
    from cloud_hub.fl.strategies import STRATEGIES

    if strategy not in STRATEGIES:
        raise _fail(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}", EXIT_USAGE)
    overrides: dict[str, object] = {"num-rounds": rounds, "strategy": strategy}
    if run_config is not None:
        try:
            overrides.update(tomllib.loads(run_config.read_text(encoding="utf-8")))
        except tomllib.TOMLDecodeError as exc:
            raise _fail(f"{run_config}: {exc}", EXIT_USAGE) from exc
    if loopback:
        from edgefleet.federation import loopback_run

        try:
            state = loopback_run(
                work_dir.resolve(),
                devices=loopback,
                rounds=rounds,
                strategy=strategy,
                tls=tls,
                overrides=overrides,
                on_event=typer.echo,
            )
        except DeploymentError as exc:
            raise _fail(str(exc), EXIT_BROKER) from exc
        except FederatedError as exc:
            raise _fail(str(exc), EXIT_USAGE) from exc
        _print_fl_status(state)
        return
    if connection is None:
        raise _fail("give --loopback N, or --connection NAME of a running SuperLink", EXIT_USAGE)
    try:
        run_id = submit_run(connection, overrides, work_dir=work_dir.resolve())
    except DeploymentError as exc:
        raise _fail(str(exc), EXIT_BROKER) from exc
    typer.echo(f"run {run_id} submitted to {connection}; follow it with 'flwr ls {connection} --run-id {run_id}'")


def _print_fl_status(state_dir: Path) -> None:
    from cloud_hub.fl.journal import RoundJournal

    journal = RoundJournal(state_dir)
    run = journal.run()
    if run is None:
        raise _fail(f"no federated run recorded in {state_dir}", EXIT_USAGE)
    typer.echo(
        f"run: {run['status']}, {run['strategy']}, rounds {run['first_round_id']}–"
        f"{run.get('last_round_id', '…')} of {run['num_rounds']}"
    )
    accuracy = {int(r): m.get("holdout-accuracy") for r, m in run.get("server_metrics", {}).items()}
    for entry in journal.rounds()[-run["num_rounds"] :]:
        server_round = entry["server_round"]
        held_out = accuracy.get(server_round)
        typer.echo(
            f"  round {entry['round_id']}: {len(entry['leaves'])} leaves, {len(entry['rejected'])} rejected, "
            f"root {entry['root'][:16]}…, model {entry['model_hash'][:16]}…, gas {entry['gas_used']}"
            + (f", held-out accuracy {held_out:.3f}" if held_out is not None else "")
        )
    if accuracy.get(0) is not None:
        typer.echo(f"  held-out accuracy of the starting model: {accuracy[0]:.3f}")
    if run.get("model"):
        model = run["model"]
        typer.echo(f"next model: {model['version']} sha256 {model['sha256'][:16]}… signed={model['signed']}")
        typer.echo(f"  {model['artifact']}")


@fl_app.command("status")
def fl_status(
    state_dir: Annotated[Path, typer.Option(help="The run's state directory (the run config's state-dir).")] = Path(
        "var/fl-loopback/state"
    ),
) -> None:
    """The last federated run: status, each notarized round, held-out accuracy, the next model."""
    _print_fl_status(state_dir)
