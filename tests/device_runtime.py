"""``python -m tests.device_runtime MODULE ARGS…``: run a module as on a device, where only the ``edge`` extra is.

The packages a device does not install cannot be imported here (a finder first on ``sys.meta_path``
refuses them), so a test that runs the agent this way fails when a device path starts to need one.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

NOT_ON_A_DEVICE = frozenset(
    {"cryptography", "typer", "rich", "click", "torch", "fastapi", "sqlalchemy", "web3", "flwr", "sktime"}
)


class _NotInstalled(MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in NOT_ON_A_DEVICE:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not installed on a device)", name=fullname)
        return None


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m tests.device_runtime MODULE [ARGS...]")
    sys.meta_path.insert(0, _NotInstalled())
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
