"""The hub's exception tree, documented in one place.

::

    HubError                  anything the hub raises on purpose
    ├── ModelLoadError        a model manifest or artifact is missing, altered (sha256) or will not load
    ├── JudgeError            the model failed on a batch (bad output, runtime error)
    │   └── WindowError       a window does not fit the model's input (length); the caller's fault
    ├── StoreError            the database refused or failed an operation
    ├── PublishError          a verdict could not be handed to the MQTT broker
    └── HubStartupError       the HTTP server or the MQTT ingest did not come up

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
