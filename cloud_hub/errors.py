"""The hub's exception tree, documented in one place.

::

    HubError                  anything the hub raises on purpose
    ├── ModelLoadError        a model manifest or artifact is missing, altered (sha256) or will not load
    ├── JudgeError            the model failed on a batch (bad output, runtime error)
    │   └── WindowError       a window does not fit the model's input (length); the caller's fault
    ├── StoreError            the database refused or failed an operation
    ├── PublishError          a verdict or command could not be handed to the MQTT broker
    ├── HubStartupError       the HTTP server or the MQTT ingest did not come up
    ├── NotFoundError         a model, rollout or trigger the caller named does not exist (HTTP 404)
    ├── ConflictError         the request contradicts the hub's state: a second open rollout for a group,
    │                         a transition the rollout's state does not allow, a model version uploaded
    │                         again with other bytes (HTTP 409)
    └── ModelRejectedError    an uploaded model's size, sha256 or signature does not check out (HTTP 422)

Foreign exceptions (onnxruntime, SQLAlchemy, OS errors) are translated at the boundary with
``raise ... from``; protocol errors (:class:`protocol.errors.ProtocolError`) stay what they are.
"""

from __future__ import annotations


class HubError(Exception):
    """Base class of every error the hub raises on purpose."""


class ModelLoadError(HubError):
    """A model manifest or artifact is missing, does not match its sha256, or will not load."""


class JudgeError(HubError):
    """The model could not judge a batch."""


class WindowError(JudgeError):
    """A window does not fit the model's input (for example, a wrong number of samples)."""

    code = "window_mismatch"


class StoreError(HubError):
    """The database refused or failed an operation."""


class PublishError(HubError):
    """A message could not be handed to the MQTT broker (the connection is down)."""


class HubStartupError(HubError):
    """The hub's HTTP server or MQTT ingest did not start."""


class NotFoundError(HubError):
    """Something the caller named does not exist."""


class ConflictError(HubError):
    """The request contradicts the hub's state."""


class ModelRejectedError(HubError):
    """An uploaded model artifact or manifest does not check out."""
