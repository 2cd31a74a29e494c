"""Virtual environments for converters that cannot live beside the training stack.

``python -m models.environments litert`` makes ``.venv-litert`` (litert-torch, about 2 GB with jax and
transformers); ``python -m models.environments aeon`` makes ``.venv-aeon`` (aeon, whose numba pin keeps
numpy below 2.4), from which the anomaly tasks read aeon's bundled UCR anomaly series. Every requirement
is pinned; torch is pinned exactly so that pip takes the local CPU wheel
instead of fetching a CUDA build. Nothing built in these environments is committed but the artifacts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent

ENVIRONMENTS: dict[str, tuple[str, ...]] = {
    "litert": ("torch==2.13.0", "litert-torch==0.10.0", "numpy==2.4.6"),
    # aeon 1.6 pins numba below 0.64, which caps numpy below 2.4: only its bundled data sets are read here.
    "aeon": ("aeon==1.6.0", "numba==0.63.1", "llvmlite==0.46.0", "numpy==2.3.5", "pandas==3.0.6"),
}
"""Environment name (``.venv-<name>``) → its pinned requirements."""


def create(name: str, *, python: str = sys.executable) -> Path:
    """Create (or update) ``.venv-<name>`` with its pinned requirements; returns its directory."""
    directory = REPOSITORY / f".venv-{name}"
    if not (directory / "bin" / "python").is_file():
        subprocess.run([python, "-m", "venv", str(directory)], check=True)
    pip = [str(directory / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *ENVIRONMENTS[name]], check=True)
    return directory


def main(argv: list[str] | None = None) -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(prog="python -m models.environments", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(ENVIRONMENTS))
    arguments = parser.parse_args(argv)
    print(create(arguments.name))


if __name__ == "__main__":
    main()
