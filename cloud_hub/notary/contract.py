"""The notary contract, compiled from its Vyper source on first use and cached by source hash.

Bytecode is never committed: the cache key is the sha256 of the source, the compiler version and the
EVM version, so an edited contract or another compiler compiles afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_hub.notary.errors import ContractCompileError

SOURCE = Path(__file__).with_name("Notary.vy")
# Cancun runs on every current node (Hardhat, anvil, geth, L2s) and on py-evm; the source pins it too.
EVM_VERSION = "cancun"


@dataclass(frozen=True, slots=True)
class CompiledContract:
    abi: list[dict[str, Any]]
    bytecode: str
    runtime_bytecode: str
    source_sha256: str
    compiler: str


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "edgefleet-contracts"


def _compile(source: str) -> dict[str, Any]:
    try:
        from vyper.compiler import compile_code
        from vyper.compiler.settings import Settings
        from vyper.exceptions import VyperException
    except ModuleNotFoundError as exc:
        raise ContractCompileError("compiling the notary needs vyper (the 'chain' extra)") from exc
    try:
        out = compile_code(
            source,
            contract_path=SOURCE.name,
            output_formats=["abi", "bytecode", "bytecode_runtime"],
            settings=Settings(evm_version=EVM_VERSION),
        )
    except VyperException as exc:
        raise ContractCompileError(f"vyper refused {SOURCE.name}: {exc}") from exc
    return {"abi": out["abi"], "bytecode": out["bytecode"], "runtime_bytecode": out["bytecode_runtime"]}


def compile_notary(*, source: Path = SOURCE, cache_dir: Path | None = None) -> CompiledContract:
    """The compiled notary; compiles ``source`` unless the cache holds it already."""
    try:
        import vyper

        compiler = f"vyper-{vyper.__version__}"
    except ModuleNotFoundError as exc:
        raise ContractCompileError("compiling the notary needs vyper (the 'chain' extra)") from exc
    try:
        text = source.read_text()
    except OSError as exc:
        raise ContractCompileError(f"cannot read the contract source {source}: {exc}") from exc
    digest = hashlib.sha256(text.encode()).hexdigest()
    key = hashlib.sha256(f"{digest}/{compiler}/{EVM_VERSION}".encode()).hexdigest()[:32]
    directory = cache_dir if cache_dir is not None else default_cache_dir()
    cached = directory / f"{source.stem}-{key}.json"
    try:
        data = json.loads(cached.read_text())
    except (OSError, ValueError):
        data = _compile(text)
        directory.mkdir(parents=True, exist_ok=True)
        # Several processes may compile at once: each writes its own file and renames it into place.
        handle, partial = tempfile.mkstemp(dir=directory, prefix=cached.name, suffix=".partial")
        with os.fdopen(handle, "w") as out:
            json.dump(data, out)
        os.replace(partial, cached)
    return CompiledContract(
        abi=data["abi"],
        bytecode=data["bytecode"],
        runtime_bytecode=data["runtime_bytecode"],
        source_sha256=digest,
        compiler=compiler,
    )
