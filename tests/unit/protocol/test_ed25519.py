"""The standard-library Ed25519 verifier: RFC 8032's vectors, and agreement with `cryptography` (OpenSSL)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.ed25519 import PublicKey, PublicKeyError

_L = 2**252 + 27742317777372353535851937790883648493

# RFC 8032, section 7.1: TEST 1 (empty message), TEST 2 (one byte), TEST 3 (two bytes).
VECTORS = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("public", "message", "signature"), VECTORS)
def test_rfc8032_vectors_verify_and_a_flipped_bit_does_not(public: str, message: str, signature: str) -> None:
    key = PublicKey(bytes.fromhex(public))
    assert key.verify(bytes.fromhex(signature), bytes.fromhex(message))
    for position in (0, 31, 32, 63):
        tampered = bytearray.fromhex(signature)
        tampered[position] ^= 0x01
        assert not key.verify(bytes(tampered), bytes.fromhex(message))
    assert not key.verify(bytes.fromhex(signature), bytes.fromhex(message) + b"\x00")


@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300), flip=st.integers(0, 64 * 8 - 1))
def test_agrees_with_openssl_on_random_keys_messages_and_tampering(seed: bytes, message: bytes, flip: int) -> None:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    openssl = private.public_key()
    key = PublicKey(openssl.public_bytes_raw())
    signature = private.sign(message)
    assert key.verify(signature, message)
    tampered = bytearray(signature)
    tampered[flip // 8] ^= 1 << (flip % 8)
    try:
        openssl.verify(bytes(tampered), message)
        expected = True
    except Exception:
        expected = False
    assert key.verify(bytes(tampered), message) is expected


def test_a_signature_with_s_at_or_above_the_group_order_is_refused() -> None:
    private = Ed25519PrivateKey.from_private_bytes(bytes(32))
    key = PublicKey(private.public_key().public_bytes_raw())
    signature = private.sign(b"model")
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + _L).to_bytes(32, "little")  # the same point equation, non-canonical S
    assert not key.verify(malleated, b"model")
    assert not key.verify(signature[:63], b"model")


def test_pem_round_trip_and_refusals() -> None:
    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key = PublicKey.from_pem(pem)
    assert key.raw == private.public_key().public_bytes_raw()
    assert key == PublicKey(key.raw)
    assert key.verify(private.sign(b"x"), b"x")
    with pytest.raises(PublicKeyError, match="PEM"):
        PublicKey.from_pem(b"not a key")
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PublicKeyError):
        PublicKey.from_pem(private_pem)
    with pytest.raises(PublicKeyError, match="32 bytes"):
        PublicKey(b"\x01" * 31)
    with pytest.raises(PublicKeyError, match="not a point"):
        PublicKey((2**255 - 19).to_bytes(32, "little"))  # y = p is not a canonical coordinate
