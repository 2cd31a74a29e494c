"""The simulator's exception tree: every failure the simulator reports is a :class:`SimError`.

========================  ==============================================================
exception                 when
========================  ==============================================================
``DatasetError``          a bundled recording is missing or cannot be read
``ScenarioError``         a scenario file is unreadable or invalid
``SynthesisError``        a media tool (espeak-ng, sox, OpenCV) is missing or failed
``CommandError``          a command cannot be carried out (answered with ``rejected``)
========================  ==============================================================
"""

from __future__ import annotations


class SimError(Exception):
    """Base class of the simulator's errors."""


class DatasetError(SimError):
    """A bundled dataset is missing or cannot be read."""


class ScenarioError(SimError):
    """A scenario file cannot be read, or describes something impossible."""


class SynthesisError(SimError):
    """A media tool the audio or camera modality needs is missing or failed."""


class CommandError(SimError):
    """A command the firmware refuses; the reason goes back in the reply."""
