"""Signed copies of the committed edge model, and the public key files that trust them."""

from __future__ import annotations

import shutil
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.model import read_manifest
from protocol.signing import sign

MODELS = Path(__file__).resolve().parents[1] / "models" / "quantized"
EDGE = "italy_power_edge_int8"


def copy_model(
    directory: Path, *, version: str, key: Ed25519PrivateKey | None = None, name: str = EDGE, **changes: object
) -> Path:
    """A copy of a committed model (``name``) under another version, signed with ``key`` if given."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODELS / f"{name}.onnx", directory / f"{name}.onnx")
    manifest = read_manifest(MODELS / f"{name}.manifest.json").model_copy(update={"version": version, **changes})
    if key is not None:
        manifest = sign(manifest, key)
    path = directory / f"{name}-{version}.manifest.json"
    path.write_text(manifest.model_dump_json(indent=2))
    return path


def write_public_key(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path
