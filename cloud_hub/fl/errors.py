"""The federated coordinator's exceptions, a branch of the hub's tree::

HubError
└── FederatedError          anything the coordinator raises on purpose
    ├── SettingsError       a run config value is missing or out of range
    ├── UpdateRejectedError      a client update fails its digest or signature check (dropped from the round)
    ├── NotaryError         the notary refused or failed to commit a round
    ├── ModelBuildError     the next global model cannot be built or quantized
    ├── DeploymentError     a SuperLink, SuperNode or ``flwr`` command failed on the loopback deployment
    ├── RunInProgressError  the hub asked for a run while the one it started last is still going (HTTP 409)
    └── CoordinatorUnavailableError  the hub has no coordinator to start runs on, or cannot reach it (503)
"""

from __future__ import annotations

from cloud_hub.errors import HubError


class FederatedError(HubError):
    """Base class of the federated coordinator's errors."""


class SettingsError(FederatedError):
    """A run config value is missing or out of range."""


class UpdateRejectedError(FederatedError):
    """A client update's digest or signature does not check out; it is left out of the round."""

    def __init__(self, node_id: int, device_id: str | None, reason: str) -> None:
        super().__init__(f"update from node {node_id} (device {device_id or 'unknown'}) rejected: {reason}")
        self.node_id = node_id
        self.device_id = device_id
        self.reason = reason


class ModelBuildError(FederatedError):
    """The next global model cannot be built, quantized or signed."""


class DeploymentError(FederatedError):
    """A process of the loopback deployment failed to start, or a ``flwr`` command failed."""


class RunInProgressError(FederatedError):
    """A run was asked for while the run the hub started last has not finished."""

    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(f"federated run {run_id} is still going ({status}); start another once it has finished")
        self.run_id = run_id
        self.status = status


class CoordinatorUnavailableError(FederatedError):
    """The hub has no federated coordinator configured, or the SuperLink does not answer."""
