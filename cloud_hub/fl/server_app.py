"""The Flower ServerApp of EdgeFleet's federated rounds (needs the ``fl`` extra).

A SuperLink runs it for ``flwr run``; the run config (``[tool.flwr.app.config]`` of the app's
``pyproject.toml``, overridden with ``--run-config``) is validated by :class:`RunSettings`. The
notary is the in-memory one unless ``chain = "evm"`` (then the notary contract at ``chain-url`` /
``chain-contract``, or an EVM inside the ServerApp when no URL is given); each round's leaves go to a
ledger under ``state-dir/ledger`` and every round is journaled under ``state-dir`` (``edgefleet fl status``).
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from cloud_hub.fl.coordinator import run_federated
from cloud_hub.fl.devices import DeviceKeyDirectory
from cloud_hub.fl.errors import SettingsError
from cloud_hub.fl.evaluation import HoldoutEvaluation, read_task_description
from cloud_hub.fl.registry import DirectoryModelRegistry, HubApiModelRegistry, ModelRegistry
from cloud_hub.fl.settings import RunSettings
from cloud_hub.notary import ChainSettings, InMemoryNotary, JsonLinesRoundLedger, Notary

log = logging.getLogger("edgefleet.fl.server")

app = ServerApp()


def open_run_notary(settings: RunSettings) -> Notary:
    if settings.chain == "memory":
        return InMemoryNotary()
    from cloud_hub.notary.chain import open_notary

    chain = ChainSettings(
        url=settings.chain_url or None,
        contract_address=settings.chain_contract or None,
        private_key_file=settings.chain_key_file,
        ledger_dir=settings.state_dir / "ledger",
    )
    return open_notary(chain)


def open_run_registry(settings: RunSettings) -> ModelRegistry:
    if not settings.hub_url:
        return DirectoryModelRegistry(settings.state_dir / "registry")
    if settings.hub_token_file is None:
        raise SettingsError("hub-url needs hub-token-file (an API token of the models scope)")
    return HubApiModelRegistry(settings.hub_url, settings.hub_token_file.read_text(encoding="utf-8").strip())


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured number of notarized rounds, then build and register the next edge model."""
    settings = RunSettings.from_run_config(dict(context.run_config))
    evaluate_fn = None
    if settings.backbone_int8 is not None and settings.holdout is not None:
        evaluate_fn = HoldoutEvaluation.from_files(settings.backbone_int8, settings.holdout)
    description = None if settings.task_description is None else read_task_description(settings.task_description)
    outcome = run_federated(
        grid,
        settings,
        notary=open_run_notary(settings),
        ledger=JsonLinesRoundLedger(settings.state_dir / "ledger"),
        device_keys=DeviceKeyDirectory(settings.device_keys),
        registry=open_run_registry(settings),
        evaluate_fn=evaluate_fn,
        description=description,
    )
    log.info(
        "event=run-finished rounds=%d first_round_id=%d head=%s model=%s",
        len(outcome.rounds),
        outcome.first_round_id,
        outcome.head_path,
        None if outcome.model is None else outcome.model.artifact,
    )
