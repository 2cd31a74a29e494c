"""The ``edgefleet`` command: the one composition root. It reaches every part, lazily, so that
``edgefleet agent`` on a device imports neither the hub nor torch. Nothing imports it."""
