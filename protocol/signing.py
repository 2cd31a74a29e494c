"""Model signatures: Ed25519 over the manifest's canonical form (everything but the signature).

The signature covers the artifact's sha256 and every field a runtime relies on (input spec,
preprocessing, labels), so neither the artifact nor its manifest can be swapped or edited
without the fleet's model-signing key. Pure computation; keys come in as PEM bytes.

Verifying needs the standard library only (:mod:`protocol.ed25519`), so a device installs no
`cryptography`; signing, on the hub and the build machines, imports it when it is called.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from protocol.ed25519 import PublicKey, PublicKeyError
from protocol.manifest import ModelManifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNING_CONTEXT = b"edgefleet-model-manifest-v1\n"


class SignatureError(Exception):
    """A key cannot be read, or a manifest's signature is missing or wrong."""


def signing_payload(manifest: ModelManifest) -> bytes:
    """The bytes that are signed: a context prefix and the manifest's canonical JSON without the signature."""
    body = manifest.model_dump(mode="json", exclude={"signature"})
    return SIGNING_CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """The model-signing key from PEM bytes (needs `cryptography`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the model-signing key must be an Ed25519 key")
    return key


def load_public_key(pem: bytes) -> PublicKey:
    """A trusted model key from PEM bytes (standard library only)."""
    try:
        return PublicKey.from_pem(pem)
    except PublicKeyError as exc:
        raise SignatureError(f"a trusted model key must be an Ed25519 public key in PEM: {exc}") from exc


def public_key_of(key: Ed25519PrivateKey) -> PublicKey:
    """The public half of a signing key, as the verifying side holds it."""
    return PublicKey(key.public_key().public_bytes_raw())


def sign(manifest: ModelManifest, key: Ed25519PrivateKey) -> ModelManifest:
    """The manifest with its ``signature`` set (base64)."""
    signature = key.sign(signing_payload(manifest))
    return manifest.model_copy(update={"signature": base64.b64encode(signature).decode()})


def verify(manifest: ModelManifest, keys: Sequence[PublicKey]) -> None:
    """Raise :class:`SignatureError` unless one of ``keys`` signed ``manifest``."""
    if manifest.signature is None:
        raise SignatureError(f"model {manifest.name} {manifest.version} is not signed")
    try:
        signature = base64.b64decode(manifest.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"model {manifest.name} {manifest.version} has a malformed signature") from exc
    payload = signing_payload(manifest)
    if not any(key.verify(signature, payload) for key in keys):
        raise SignatureError(f"model {manifest.name} {manifest.version} is not signed by a trusted key")
