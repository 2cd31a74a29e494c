"""Ed25519 signature verification (RFC 8032, section 5.1.7) in pure Python, for devices.

A device only ever *verifies* signatures (of model manifests); it holds no signing key. Verifying with
the standard library alone keeps the `cryptography` wheel (about 15 MB installed) off the device, where
the agent's whole install must stay small. Signing, which needs a private key, stays with `cryptography`
on the hub and the build machines (:mod:`protocol.signing`).

The arithmetic follows RFC 8032's reference code (section 6): extended twisted Edwards coordinates,
strict decoding (a y coordinate at or above p, or an x that is not a square root, is refused), and the
scalar ``S`` must be below the group order ``L``. The check is the cofactorless equation
``[S]B = R + [k]A``, as OpenSSL's. There is no secret input, so running time need not be constant.
Tests compare it against `cryptography` on random keys and messages, and against RFC 8032's vectors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Final

_P: Final = 2**255 - 19
_L: Final = 2**252 + 27742317777372353535851937790883648493
_D: Final = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1: Final = pow(2, (_P - 1) // 4, _P)

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z

# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 },
# BIT STRING (32 bytes) }; the raw key follows.
_SPKI_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")
_PEM_HEADER: Final = "-----BEGIN PUBLIC KEY-----"
_PEM_FOOTER: Final = "-----END PUBLIC KEY-----"


class PublicKeyError(ValueError):
    """Bytes that are not an Ed25519 public key."""


def _add(p: _Point, q: _Point) -> _Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _multiply(scalar: int, point: _Point) -> _Point:
    result: _Point = (0, 1, 1, 0)
    while scalar > 0:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _equal(p: _Point, q: _Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % _P == 0 and (p[1] * q[2] - q[1] * p[2]) % _P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


def _decompress(encoded: bytes) -> _Point | None:
    value = int.from_bytes(encoded, "little")
    sign, y = value >> 255, value & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % _P)


_BASE_Y: Final = 4 * pow(5, _P - 2, _P) % _P
_BASE_X: Final = _recover_x(_BASE_Y, 0)
assert _BASE_X is not None
_BASE: Final[_Point] = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % _P)


class PublicKey:
    """An Ed25519 public key that verifies signatures; built from its 32 raw bytes or a PEM file."""

    __slots__ = ("_point", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise PublicKeyError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
        point = _decompress(raw)
        if point is None:
            raise PublicKeyError("the bytes are not a point of the Ed25519 curve")
        self.raw = bytes(raw)
        self._point = point

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        """Read a ``-----BEGIN PUBLIC KEY-----`` block (SubjectPublicKeyInfo, RFC 8410)."""
        try:
            text = pem.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise PublicKeyError("a PEM public key is ASCII text") from exc
        if not (text.startswith(_PEM_HEADER) and text.endswith(_PEM_FOOTER)):
            raise PublicKeyError(f"not a PEM public key (no {_PEM_HEADER} block)")
        body = "".join(text[len(_PEM_HEADER) : -len(_PEM_FOOTER)].split())
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PublicKeyError("the PEM block is not base64") from exc
        if len(der) != len(_SPKI_PREFIX) + 32 or not der.startswith(_SPKI_PREFIX):
            raise PublicKeyError("the PEM block does not hold an Ed25519 public key")
        return cls(der[len(_SPKI_PREFIX) :])

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` (64 bytes) is this key's signature of ``message``."""
        if len(signature) != 64:
            return False
        encoded_r, s = signature[:32], int.from_bytes(signature[32:], "little")
        if s >= _L:
            return False
        r = _decompress(encoded_r)
        if r is None:
            return False
        k = int.from_bytes(hashlib.sha512(encoded_r + self.raw + message).digest(), "little") % _L
        return _equal(_multiply(s, _BASE), _add(r, _multiply(k, self._point)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.raw.hex()})"
