"""The edge agent's exception tree."""

from __future__ import annotations


class AgentError(Exception):
    """Base class of the agent's errors."""


class ModelLoadError(AgentError):
    """A model artifact is missing, does not match its manifest, or cannot be loaded."""


class InferenceError(AgentError):
    """A backend failed to run a batch."""


class FeedError(AgentError):
    """A local source (camera, microphone) cannot be opened or read, or its extra is not installed."""
