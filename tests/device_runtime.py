"""``python -m tests.device_runtime MODULE ARGS…``: run a module as on a device, where only what
``requirements/edge-device.txt`` pins is installed.

Every installed distribution that file does not name (edgefleet itself aside) cannot be imported here:
a finder first on ``sys.meta_path`` refuses its top-level modules. Among them are onnxruntime's declared
requirements that a device leaves out (protobuf's ``google.protobuf``, ``packaging``, ``flatbuffers``),
``cryptography``, the CLI framework and every other part's stack. A test that runs the agent this way
fails when a device path starts to need one.
"""

from __future__ import annotations

import importlib.metadata
import re
import runpy
import sys
from collections.abc import Iterable, Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

DEVICE_REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements" / "edge-device.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$")


def canonical(name: str) -> str:
    """A distribution's name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_device_requirements(path: Path = DEVICE_REQUIREMENTS) -> dict[str, str]:
    """``{canonical name: version}`` of the device lock file; every line is ``name==version``."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: not a pin (name==version): {raw!r}")
        pins[canonical(match[1])] = match[2]
    return pins


def not_on_a_device(on_device: Iterable[str]) -> frozenset[str]:
    """Top-level modules of the installed distributions that are not ``on_device`` (canonical names)."""
    allowed = {canonical(name) for name in on_device} | {"edgefleet"}
    return frozenset(
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if not allowed & {canonical(d) for d in distributions}
    )


class NotInstalled(MetaPathFinder):
    """Refuses the modules of ``blocked`` (top-level names) and their submodules."""

    def __init__(self, blocked: frozenset[str]) -> None:
        self.blocked = blocked

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not installed on a device)", name=fullname)
        return None


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m tests.device_runtime MODULE [ARGS...]")
    sys.meta_path.insert(0, NotInstalled(not_on_a_device(read_device_requirements())))
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
