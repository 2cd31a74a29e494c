"""The model registry: artifacts with their manifests (and cards), checked before they are kept.

An upload is kept only if the artifact has the size and sha256 its manifest states and the manifest
carries an Ed25519 signature (:mod:`protocol.signing`) by one of the hub's trusted keys. A demo hub
with no trusted keys accepts unsigned models; any other hub refuses them. Uploading the same name
and version again is accepted when the bytes are the same (a retried upload) and refused otherwise.

Artifacts live in the database beside their manifests, so every hub worker serves every model.

With a notary, the registry anchors each new model's sha256 on chain under
:func:`protocol.notary.model_anchor_id` (``<name>@<version>``) *before* it stores the model, and keeps
the contract, transaction and block in the model's row. A chain that cannot be reached refuses the
upload (:class:`ModelNotAnchoredError`, HTTP 503) and stores nothing, so a registered model is always
anchored; the retried upload anchors it. A model anchored by an earlier attempt whose row was not
stored (the hub stopped in between) is found on chain and stored without a transaction hash. An id
already anchored with another sha256 is a conflict: that name and version can never be registered.
A model registered before the hub had a notary is anchored when it is uploaded again.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import defer

from cloud_hub.errors import ConflictError, HubError, HubStartupError, ModelRejectedError, NotFoundError
from cloud_hub.notary.errors import ModelAlreadyAnchoredError, NotaryError
from cloud_hub.notary.interface import Notary
from cloud_hub.store import ModelVersion, Page, Store, page_of, utc_now
from protocol.ed25519 import PublicKey
from protocol.manifest import ModelManifest
from protocol.notary import NotaryAbiError, model_anchor_id
from protocol.signing import SignatureError, load_public_key, verify


class ModelNotAnchoredError(HubError):
    """The notary could not anchor a model's sha256 (chain unreachable, timed out, refused): HTTP 503."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where a model's sha256 is anchored; ``tx_hash`` and ``block_number`` are None when an earlier
    attempt anchored it."""

    contract: str
    tx_hash: str | None
    block_number: int | None


def read_trusted_keys(paths: list[Path]) -> list[PublicKey]:
    """The public keys in ``paths`` (PEM); :class:`HubStartupError` if one cannot be read."""
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except OSError as exc:
            raise HubStartupError(f"cannot read trusted model key {path}: {exc.strerror or exc}") from exc
        except SignatureError as exc:
            raise HubStartupError(f"trusted model key {path}: {exc}") from exc
    return keys


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    version: str
    sha256: str
    data: bytes


class ModelRegistry:
    """Upload, list, describe and download model versions."""

    def __init__(
        self,
        store: Store,
        *,
        trusted_keys: list[PublicKey],
        allow_unsigned: bool = False,
        max_bytes: int = 64 * 1024 * 1024,
        notary: Notary | None = None,
    ) -> None:
        self._store = store
        self._keys = trusted_keys
        self._allow_unsigned = allow_unsigned and not trusted_keys
        self._max_bytes = max_bytes
        self.notary = notary
        # One anchoring at a time: the notary's transactions are serialised anyway, and two uploads of the
        # same model must not both send one.
        self._anchoring = asyncio.Lock()

    async def anchor(self, name: str, version: str, sha256: str) -> Anchor:
        """Anchor ``sha256`` for the model on chain (see the module's docstring for the cases)."""
        notary = self.notary
        if notary is None:
            raise HubError("the registry has no notary")
        model_id = model_anchor_id(name, version)
        digest = bytes.fromhex(sha256)
        async with self._anchoring:
            try:
                receipt = await asyncio.to_thread(notary.anchor_model, model_id, digest)
            except ModelAlreadyAnchoredError:
                anchored = await self._read_anchor(notary, model_id)
                if anchored != digest:
                    raise ConflictError(
                        f"model {name} {version} is anchored on chain {notary.address} with sha256 "
                        f"{anchored.hex() if anchored else '(none)'}, not {sha256}; give the model a new version"
                    ) from None
                return Anchor(contract=notary.address, tx_hash=None, block_number=None)
            except (NotaryError, NotaryAbiError) as exc:
                raise ModelNotAnchoredError(f"model {name} {version} was not anchored on chain: {exc}") from exc
        return Anchor(contract=notary.address, tx_hash="0x" + receipt.tx_hash.hex(), block_number=receipt.block_number)

    @staticmethod
    async def _read_anchor(notary: Notary, model_id: str) -> bytes | None:
        try:
            return await asyncio.to_thread(notary.model_anchor, model_id)
        except (NotaryError, NotaryAbiError) as exc:
            raise ModelNotAnchoredError(f"reading the anchor of {model_id}: {exc}") from exc

    def check(self, manifest: ModelManifest, artifact: bytes) -> None:
        """Raise :class:`ModelRejectedError` unless ``artifact`` is what ``manifest`` describes, signed."""
        label = f"model {manifest.name} {manifest.version}"
        if len(artifact) > self._max_bytes:
            raise ModelRejectedError(f"{label}: {len(artifact)} bytes is more than the hub takes ({self._max_bytes})")
        if len(artifact) != manifest.bytes:
            raise ModelRejectedError(
                f"{label}: the artifact has {len(artifact)} bytes, its manifest says {manifest.bytes}"
            )
        digest = hashlib.sha256(artifact).hexdigest()
        if digest != manifest.sha256:
            raise ModelRejectedError(f"{label}: the artifact's sha256 is {digest}, its manifest says {manifest.sha256}")
        if self._allow_unsigned and manifest.signature is None:
            return
        if not self._keys:
            raise ModelRejectedError(
                f"{label}: the hub has no trusted model keys (trusted_model_keys), so it takes none"
            )
        try:
            verify(manifest, self._keys)
        except SignatureError as exc:
            raise ModelRejectedError(str(exc)) from exc

    async def upload(
        self, manifest: ModelManifest, artifact: bytes, *, card: dict[str, Any] | None = None, uploaded_by: int | None
    ) -> tuple[ModelVersion, bool]:
        """Check, anchor (with a notary) and keep a model; return it and whether it is new (``False``: the
        same upload again)."""
        self.check(manifest, artifact)
        existing = await self._find(manifest)
        if existing is not None and (self.notary is None or existing.anchor_contract is not None):
            return existing, False
        anchor = await self.anchor(manifest.name, manifest.version, manifest.sha256) if self.notary else None
        async with self._store.transaction("store a model") as session:
            existing = await session.scalar(
                select(ModelVersion)
                .options(defer(ModelVersion.artifact))
                .where(ModelVersion.name == manifest.name, ModelVersion.version == manifest.version)
            )
            if existing is not None:
                self._same_bytes(existing, manifest)
                if anchor is not None and existing.anchor_contract is None:
                    existing.anchor_contract = anchor.contract
                    existing.anchor_tx = anchor.tx_hash
                    existing.anchor_block = anchor.block_number
                return existing, False
            row = ModelVersion(
                name=manifest.name,
                version=manifest.version,
                role=manifest.role,
                task=manifest.task,
                sha256=manifest.sha256,
                size_bytes=manifest.bytes,
                manifest=manifest.model_dump(mode="json"),
                card=card,
                artifact=artifact,
                uploaded_at=utc_now(),
                uploaded_by=uploaded_by,
                anchor_contract=anchor.contract if anchor else None,
                anchor_tx=anchor.tx_hash if anchor else None,
                anchor_block=anchor.block_number if anchor else None,
            )
            session.add(row)
            await session.flush()
        return row, True

    async def _find(self, manifest: ModelManifest) -> ModelVersion | None:
        """The registered row of the manifest's name and version; ConflictError if its bytes differ."""
        async with self._store.transaction("read a model") as session:
            existing = await session.scalar(
                select(ModelVersion)
                .options(defer(ModelVersion.artifact))
                .where(ModelVersion.name == manifest.name, ModelVersion.version == manifest.version)
            )
        if existing is not None:
            self._same_bytes(existing, manifest)
        return existing

    @staticmethod
    def _same_bytes(existing: ModelVersion, manifest: ModelManifest) -> None:
        if existing.sha256 != manifest.sha256:
            raise ConflictError(
                f"model {manifest.name} {manifest.version} is already registered with other bytes "
                f"(sha256 {existing.sha256}); give the new model a new version"
            )

    async def list(self, *, name: str | None = None, limit: int = 100, offset: int = 0) -> Page[ModelVersion]:
        conditions = [ModelVersion.name == name] if name is not None else []
        async with self._store.transaction("list models") as session:
            query = (
                select(ModelVersion)
                .options(defer(ModelVersion.artifact))
                .order_by(ModelVersion.name, ModelVersion.uploaded_at.desc(), ModelVersion.id.desc())
            )
            return await page_of(session, query, ModelVersion, conditions, limit=limit, offset=offset)

    async def get(self, name: str, version: str) -> ModelVersion:
        """The model version without its artifact; :class:`NotFoundError` if it is not registered."""
        async with self._store.transaction("read a model") as session:
            row = await session.scalar(
                select(ModelVersion)
                .options(defer(ModelVersion.artifact))
                .where(ModelVersion.name == name, ModelVersion.version == version)
            )
        if row is None:
            raise NotFoundError(f"model {name!r} version {version!r} is not in the registry")
        return row

    async def artifact(self, name: str, version: str) -> Artifact:
        async with self._store.transaction("read a model artifact") as session:
            row = (
                await session.execute(
                    select(ModelVersion.sha256, ModelVersion.artifact).where(
                        ModelVersion.name == name, ModelVersion.version == version
                    )
                )
            ).first()
        if row is None:
            raise NotFoundError(f"model {name!r} version {version!r} is not in the registry")
        return Artifact(name=name, version=version, sha256=row[0], data=bytes(row[1]))
