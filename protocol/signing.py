"""Model signatures: Ed25519 over the manifest's canonical form (everything but the signature).

The signature covers the artifact's sha256 and every field a runtime relies on (input spec,
preprocessing, labels), so neither the artifact nor its manifest can be swapped or edited
without the fleet's model-signing key. Pure computation; keys come in as PEM bytes.
"""

from __future__ import annotations

import base64
import binascii
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.manifest import ModelManifest

SIGNING_CONTEXT = b"edgefleet-model-manifest-v1\n"


class SignatureError(Exception):
    """A key cannot be read, or a manifest's signature is missing or wrong."""


def signing_payload(manifest: ModelManifest) -> bytes:
    """The bytes that are signed: a context prefix and the manifest's canonical JSON without the signature."""
    body = manifest.model_dump(mode="json", exclude={"signature"})
    return SIGNING_CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the model-signing key must be an Ed25519 key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("a trusted model key must be an Ed25519 key")
    return key


def sign(manifest: ModelManifest, key: Ed25519PrivateKey) -> ModelManifest:
    """The manifest with its ``signature`` set (base64)."""
    signature = key.sign(signing_payload(manifest))
    return manifest.model_copy(update={"signature": base64.b64encode(signature).decode()})


def verify(manifest: ModelManifest, keys: list[Ed25519PublicKey]) -> None:
    """Raise :class:`SignatureError` unless one of ``keys`` signed ``manifest``."""
    if manifest.signature is None:
        raise SignatureError(f"model {manifest.name} {manifest.version} is not signed")
    try:
        signature = base64.b64decode(manifest.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"model {manifest.name} {manifest.version} has a malformed signature") from exc
    payload = signing_payload(manifest)
    for key in keys:
        try:
            key.verify(signature, payload)
            return
        except InvalidSignature:
            continue
    raise SignatureError(f"model {manifest.name} {manifest.version} is not signed by a trusted key")
