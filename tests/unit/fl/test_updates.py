from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.updates import UpdateError, canonical_update, sign_update, update_digest, verify_update


def test_the_digest_ignores_key_order_and_byte_order_but_not_values() -> None:
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    bias = np.ones(2, dtype=np.float32)
    digest = update_digest({"weight": weight, "bias": bias})
    assert update_digest({"bias": bias, "weight": weight}) == digest
    assert update_digest({"weight": weight.astype(">f4"), "bias": bias}) == digest
    assert update_digest({"weight": np.asfortranarray(weight), "bias": bias}) == digest
    changed = weight.copy()
    changed[1, 2] = np.nextafter(changed[1, 2], np.float32(100))
    assert update_digest({"weight": changed, "bias": bias}) != digest
    assert update_digest({"weight": weight.reshape(3, 2), "bias": bias}) != digest
    assert update_digest({"weight": weight.astype(np.float64), "bias": bias}) != digest


def test_the_canonical_form_is_documented_bytes() -> None:
    data = canonical_update({"b": np.array([1], dtype="<i2")})
    assert data == (
        b"edgefleet-fl-update-v1\n"
        + (1).to_bytes(4, "big")
        + (1).to_bytes(4, "big")
        + b"b"
        + (3).to_bytes(4, "big")
        + b"<i2"
        + (1).to_bytes(4, "big")
        + (1).to_bytes(8, "big")
        + (2).to_bytes(8, "big")
        + b"\x01\x00"
    )


def test_empty_and_object_updates_are_refused() -> None:
    with pytest.raises(UpdateError):
        update_digest({})
    with pytest.raises(UpdateError, match="Python objects"):
        update_digest({"x": np.array([object()])})


def test_a_signature_names_round_and_device() -> None:
    key = Ed25519PrivateKey.generate()
    digest = update_digest({"w": np.zeros(3, dtype=np.float32)})
    signature = sign_update(key, 7, "dev-1", digest)
    verify_update(key.public_key(), 7, "dev-1", digest, signature)
    with pytest.raises(UpdateError, match="does not verify"):
        verify_update(key.public_key(), 8, "dev-1", digest, signature)
    with pytest.raises(UpdateError, match="does not verify"):
        verify_update(key.public_key(), 7, "dev-2", digest, signature)
    with pytest.raises(UpdateError, match="32 bytes"):
        sign_update(key, 7, "dev-1", digest[:16])
