"""Device public keys by device id: what the coordinator checks update signatures with.

The hub's device registry is the source in production; a directory of ``<device-id>.pem`` files (Ed25519
public keys, as provisioning writes them) serves a SuperLink host without the hub's database, and
:class:`InMemoryDeviceKeys` serves tests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_hub.fl.errors import SettingsError

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class DeviceKeys(Protocol):
    def public_key(self, device_id: str) -> Ed25519PublicKey | None:
        """The device's update-signing key, or None for a device the hub does not know."""
        ...


class InMemoryDeviceKeys:
    def __init__(self, keys: dict[str, Ed25519PublicKey] | None = None) -> None:
        self.keys = dict(keys or {})

    def public_key(self, device_id: str) -> Ed25519PublicKey | None:
        return self.keys.get(device_id)


def read_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SettingsError("a device's update-signing key must be an Ed25519 key")
    return key


class DeviceKeyDirectory:
    """``<directory>/<device-id>.pem``, read when first asked for (a device added later is found)."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise SettingsError(f"device key directory {directory} does not exist")
        self.directory = directory
        self._cache: dict[str, Ed25519PublicKey] = {}

    def public_key(self, device_id: str) -> Ed25519PublicKey | None:
        if not DEVICE_ID.match(device_id):
            return None
        if device_id not in self._cache:
            path = self.directory / f"{device_id}.pem"
            if not path.is_file():
                return None
            self._cache[device_id] = read_public_key(path.read_bytes())
        return self._cache[device_id]
