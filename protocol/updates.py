"""Federated client updates: their canonical bytes, digest and signed payload. Pure computation.

A device and the hub must agree on the digest of an update bit for bit, whichever side serialized it,
so the digest is taken over a canonical form of the update's named arrays, not over a transport's
encoding (Flower's protobuf or its own object ids may change between releases):

```
canonical = "edgefleet-fl-update-v1\\n"
            || u32 count
            || for each array, by name in ascending (UTF-8 byte) order:
                 u32 len(name) || name (UTF-8)
                 || u32 len(dtype) || dtype as numpy's little-endian descriptor (for example "<f4")
                 || u32 ndim || u64 per dimension
                 || u64 len(data) || data (C order, little-endian)
digest    = sha256(canonical)
```

All integers are big-endian. The device signs ``update_signing_payload(round_id, device_id, digest)``
with its Ed25519 key, so a signature names the round and the device and cannot be replayed for another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

UPDATE_CONTEXT = b"edgefleet-fl-update-v1\n"
SIGNING_CONTEXT = b"edgefleet-fl-update-signature-v1\n"
EMBEDDING_STANDARDIZED_KEY = "edgefleet.embedding.standardized"
"""A backbone's ONNX metadata entry: ``true`` when its embedding is standardized for the whole fleet, so that
devices train the head on it as it is (``models/federated.py`` writes it, ``edge_agent.fl`` reads it)."""


class UpdateError(ValueError):
    """An update cannot be serialized, or its signature does not check out."""


def canonical_update(arrays: Mapping[str, npt.ArrayLike]) -> bytes:
    """The canonical bytes of an update's named arrays (see the module docstring)."""
    if not arrays:
        raise UpdateError("an update holds at least one array")
    parts = [UPDATE_CONTEXT, len(arrays).to_bytes(4, "big")]
    for name in sorted(arrays, key=lambda key: key.encode()):
        array = np.asarray(arrays[name])
        if array.dtype.hasobject:
            raise UpdateError(f"array {name!r} holds Python objects, not numbers")
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        descriptor = little.dtype.str.encode()
        data = little.tobytes(order="C")
        encoded_name = name.encode()
        parts += [len(encoded_name).to_bytes(4, "big"), encoded_name, len(descriptor).to_bytes(4, "big"), descriptor]
        parts.append(little.ndim.to_bytes(4, "big"))
        parts += [int(size).to_bytes(8, "big") for size in little.shape]
        parts += [len(data).to_bytes(8, "big"), data]
    return b"".join(parts)


def update_digest(arrays: Mapping[str, npt.ArrayLike]) -> bytes:
    """sha256 of :func:`canonical_update`: the 32 bytes that a device signs and a Merkle leaf names."""
    return hashlib.sha256(canonical_update(arrays)).digest()


def update_signing_payload(round_id: int, device_id: str, digest: bytes) -> bytes:
    """What a device signs for its update in one round."""
    if round_id < 0 or round_id >= 2**64:
        raise UpdateError(f"round id {round_id} does not fit in 8 bytes")
    if len(digest) != 32:
        raise UpdateError(f"an update digest is 32 bytes, not {len(digest)}")
    if not device_id:
        raise UpdateError("a signed update needs a device id")
    return SIGNING_CONTEXT + round_id.to_bytes(8, "big") + hashlib.sha256(device_id.encode()).digest() + digest


def sign_update(key: Ed25519PrivateKey, round_id: int, device_id: str, digest: bytes) -> bytes:
    """The device's Ed25519 signature (64 bytes) over its update's digest in ``round_id``."""
    return key.sign(update_signing_payload(round_id, device_id, digest))


def verify_update(key: Ed25519PublicKey, round_id: int, device_id: str, digest: bytes, signature: bytes) -> None:
    """Raise :class:`UpdateError` unless ``signature`` is ``device_id``'s over ``digest`` in ``round_id``."""
    try:
        key.verify(signature, update_signing_payload(round_id, device_id, digest))
    except InvalidSignature:
        raise UpdateError(f"device {device_id}'s update signature for round {round_id} does not verify") from None


class RecordNames:
    """Names of the records and keys in the federated messages between the hub's ServerApp and a ClientApp.

    Hub → device (train and evaluate): ``arrays`` (the global head), ``config`` (``server-round``,
    ``round-id``, training settings) and, once a round is notarized, ``receipt`` (``round-id``, ``root``,
    ``proof`` as JSON, ``model-hash``; for this device only). Device → hub (train): ``arrays`` (the trained head),
    ``metrics`` (``num-examples`` and training figures) and ``update`` (``device-id``, ``round-id``,
    ``digest``, ``signature``).
    """

    ARRAYS = "arrays"
    CONFIG = "config"
    METRICS = "metrics"
    UPDATE = "update"
    RECEIPT = "receipt"
    ROUND_ID = "round-id"
    DEVICE_ID = "device-id"
    DIGEST = "digest"
    SIGNATURE = "signature"
    ROOT = "root"
    PROOF = "proof"
    MODEL_HASH = "model-hash"
    NUM_EXAMPLES = "num-examples"
