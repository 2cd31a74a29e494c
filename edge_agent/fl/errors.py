"""The federated client's exceptions (a branch of the agent's tree)."""

from __future__ import annotations

from edge_agent.errors import AgentError


class FederatedError(AgentError):
    """Base class of the federated client's errors."""


class DatasetError(FederatedError):
    """The local dataset cannot be opened, or a sample is malformed."""


class TrainingError(FederatedError):
    """A round cannot be trained: no local data, or a global model of the wrong shape."""


class ProofError(FederatedError):
    """An inclusion proof sent by the hub does not lead from this device's leaf to the round's root."""
