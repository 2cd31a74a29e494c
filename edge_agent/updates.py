"""Fetching a rolled-out model from the hub, checked on chain, before it goes live.

On an ``update_model`` command the agent's :class:`ModelUpdater` answers ``accepted``, then its
:class:`ModelFetcher`:

1. reads the manifest from the hub with the device's own token, and refuses one that names another
   model or version or is not signed by a trusted key;
2. when a chain is known (configured, or named by the hub's ``GET /api/v1/chain``), checks that the
   sha256 anchored for ``<name>@<version>`` is the manifest's, before downloading anything large;
3. streams the artifact into a staging directory beside the model directory, hashing it as it comes
   and stopping at the manifest's size, fsyncs it, and renames the whole directory into place: the
   agent never loads from a half-written file;
4. hands the manifest's path to the agent's ``swap_model`` (which checks sha256 and signature again,
   self-tests the model and puts it live on probation without stopping the readings).

The agent then answers ``ok`` with the model now live, or ``rejected`` with the reason. Network
errors, timeouts, 429 and 5xx answers are retried with jittered exponential backoff; other refusals
are final. Standard library only (urllib in a worker thread): the agent needs no HTTP client.

::

    fetcher = ModelFetcher(settings.updates, hub=UrllibHub(...), trusted_keys=keys)
    manifest_path = await fetcher.fetch(UpdateRequest.from_command(command))
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, TypeVar

from pydantic import ValidationError

from edge_agent.chain import ChainReader, ChainReadError, NotarizationError
from edge_agent.errors import AgentError
from edge_agent.settings import UpdateSettings
from protocol.ed25519 import PublicKey
from protocol.manifest import ModelManifest
from protocol.messages import Command, CommandArgument, CommandName, ReplyStatus
from protocol.notary import NotaryAbiError, model_anchor_id
from protocol.signing import SignatureError, verify

log = logging.getLogger("edgefleet.agent.updates")

MAX_MANIFEST_BYTES = 1 << 20
CHUNK_BYTES = 1 << 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RETRIED_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
T = TypeVar("T")


class UpdateError(AgentError):
    """A model update was refused; the reason says why. The running model is unchanged."""


class HubUnavailableError(UpdateError):
    """The hub (or the chain's node) could not be reached, or answered 429 or 5xx: worth another try."""


class HubRefusedError(UpdateError):
    """The hub answered with a client error (401, 403, 404, …); trying again will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# What the fetcher talks to ------------------------------------------------------------------------


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class Hub(Protocol):
    """The hub's model routes, as the fetcher needs them. Paths are absolute (``/api/v1/...``)."""

    def read(self, path: str, *, limit: int) -> bytes:
        """The body of ``GET path``; HubRefusedError, HubUnavailableError, or UpdateError when over ``limit``."""
        ...

    def download(self, path: str, sink: Sink, *, limit: int) -> int:
        """Stream ``GET path`` into ``sink``; the byte count. UpdateError past ``limit`` bytes."""
        ...


class Anchors(Protocol):
    """The notary's model anchors (:class:`edge_agent.chain.ChainReader` is one)."""

    contract_address: str

    def verify_model(self, model_id: str, sha256: bytes) -> None:
        """Raise NotarizationError unless ``sha256`` is anchored for ``model_id``."""
        ...


class UrllibHub:
    """:class:`Hub` over HTTP(S) with urllib; the device's token is read from its file at every request."""

    def __init__(self, base_url: str, *, token_file: Path | None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_file = token_file
        self.timeout_s = timeout_s

    def _request(self, path: str) -> urllib.request.Request:
        headers = {"Accept": "*/*", "User-Agent": "edgefleet-agent"}
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise UpdateError(f"cannot read the device token {self.token_file}: {exc.strerror or exc}") from exc
            headers["Authorization"] = f"Bearer {token}"
        return urllib.request.Request(urllib.parse.urljoin(self.base_url + "/", path.lstrip("/")), headers=headers)

    def _open(self, path: str) -> IO[bytes]:
        request = self._request(path)
        try:
            response: IO[bytes] = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            detail = _problem_detail(exc.read(4096)) or exc.reason
            exc.close()
            message = f"GET {path}: the hub answered {exc.code}: {detail}"
            if exc.code in _RETRIED_STATUS:
                raise HubUnavailableError(message) from exc
            raise HubRefusedError(exc.code, message) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise HubUnavailableError(f"GET {path}: cannot reach the hub at {self.base_url}: {reason}") from exc
        return response

    def read(self, path: str, *, limit: int) -> bytes:
        with self._open(path) as response:
            try:
                body = response.read(limit + 1)
            except OSError as exc:
                raise HubUnavailableError(f"GET {path}: the answer broke off: {exc}") from exc
        if len(body) > limit:
            raise UpdateError(f"GET {path}: the answer is larger than {limit} bytes")
        return body

    def download(self, path: str, sink: Sink, *, limit: int) -> int:
        received = 0
        with self._open(path) as response:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except OSError as exc:
                    raise HubUnavailableError(f"GET {path}: the download broke off after {received} bytes") from exc
                if not chunk:
                    return received
                received += len(chunk)
                if received > limit:
                    raise UpdateError(f"GET {path}: the artifact is larger than {limit} bytes")
                sink.write(chunk)


def _problem_detail(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    detail = document.get("detail") if isinstance(document, dict) else None
    return str(detail)[:300] if detail is not None else None


@dataclass
class InMemoryHub:
    """A :class:`Hub` serving files from a dict, for tests; ``failures`` network errors come first."""

    files: dict[str, bytes] = field(default_factory=dict)
    failures: int = 0
    requests: list[str] = field(default_factory=list)

    def _get(self, path: str) -> bytes:
        self.requests.append(path)
        if self.failures > 0:
            self.failures -= 1
            raise HubUnavailableError(f"GET {path}: cannot reach the hub: connection refused")
        if path not in self.files:
            raise HubRefusedError(404, f"GET {path}: the hub answered 404: not found")
        return self.files[path]

    def read(self, path: str, *, limit: int) -> bytes:
        body = self._get(path)
        if len(body) > limit:
            raise UpdateError(f"GET {path}: the answer is larger than {limit} bytes")
        return body

    def download(self, path: str, sink: Sink, *, limit: int) -> int:
        body = self._get(path)
        if len(body) > limit:
            sink.write(body[: limit + 1])
            raise UpdateError(f"GET {path}: the artifact is larger than {limit} bytes")
        sink.write(body)
        return len(body)


@dataclass
class InMemoryAnchors:
    """:class:`Anchors` from a dict of model id → sha256, for tests."""

    anchors: dict[str, bytes] = field(default_factory=dict)
    contract_address: str = "0x" + "ab" * 20

    def verify_model(self, model_id: str, sha256: bytes) -> None:
        anchored = self.anchors.get(model_id)
        if anchored is None:
            raise NotarizationError(f"model {model_id} is not anchored on chain")
        if anchored != sha256:
            raise NotarizationError(
                f"model {model_id}: sha256 {sha256.hex()} differs from the anchored {anchored.hex()}"
            )


# The fetcher -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """What an ``update_model`` command asks for."""

    model: str
    version: str
    manifest_url: str
    artifact_url: str

    @classmethod
    def from_command(cls, command: Command) -> UpdateRequest:
        args = command.args
        model, version = args.get("model"), args.get("version")
        if not isinstance(model, str) or not _NAME.match(model):
            raise UpdateError(f"update_model needs a 'model' name, not {model!r}")
        if not isinstance(version, str) or not _NAME.match(version):
            raise UpdateError(f"update_model needs a 'version', not {version!r}")
        manifest_url = args.get("manifest_url", f"/api/v1/models/{model}/{version}/manifest")
        artifact_url = args.get("artifact_url", f"/api/v1/models/{model}/{version}/artifact")
        for name, url in (("manifest_url", manifest_url), ("artifact_url", artifact_url)):
            # Only paths on the hub: a command must not send the device's token elsewhere.
            if not isinstance(url, str) or not url.startswith("/") or url.startswith("//"):
                raise UpdateError(f"update_model's {name} must be a path on the hub, not {url!r}")
        assert isinstance(manifest_url, str) and isinstance(artifact_url, str)
        return cls(model=model, version=version, manifest_url=manifest_url, artifact_url=artifact_url)


class ModelFetcher:
    """Fetches, checks and stages one model version at a time (see the module's docstring)."""

    def __init__(
        self,
        settings: UpdateSettings,
        *,
        hub: Hub,
        anchors: Anchors | None = None,
        trusted_keys: Sequence[PublicKey] = (),
        backend: str = "onnxruntime",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self._anchors = anchors
        self._chain_resolved = anchors is not None
        self.trusted_keys = list(trusted_keys)
        self.backend = backend
        self._sleep = sleep
        self.attempts = 0
        self.anchor_checks = 0

    @classmethod
    def from_settings(
        cls, settings: UpdateSettings, *, trusted_keys: Sequence[PublicKey] = (), backend: str = "onnxruntime"
    ) -> ModelFetcher:
        hub = UrllibHub(settings.hub_url, token_file=settings.token_file, timeout_s=settings.timeout_s)
        anchors = None
        if settings.chain_url is not None:
            if settings.contract_address is None:
                raise UpdateError("[agent.updates] chain_url needs contract_address")
            anchors = ChainReader(settings.chain_url, settings.contract_address, timeout_s=settings.timeout_s)
        return cls(settings, hub=hub, anchors=anchors, trusted_keys=trusted_keys, backend=backend)

    def version_dir(self, model: str, version: str) -> Path:
        return self.settings.model_dir / f"{model}-{version}"

    async def _retried(self, what: str, action: Callable[[], T]) -> T:
        delay = self.settings.backoff_s
        for attempt in range(self.settings.retries + 1):
            self.attempts += 1
            try:
                return await asyncio.to_thread(action)
            except (HubUnavailableError, ChainReadError) as exc:
                if attempt == self.settings.retries:
                    raise UpdateError(f"{what}: gave up after {attempt + 1} attempts: {exc}") from exc
                wait = delay * random.uniform(0.5, 1.5)
                log.warning("update_retry what=%s attempt=%d wait_s=%.2f reason=%s", what, attempt + 1, wait, exc)
                await self._sleep(wait)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def anchors(self) -> Anchors | None:
        """The chain to check anchors on: configured, else the hub's (once known), else None."""
        if self._chain_resolved:
            return self._anchors
        settings = self.settings
        if not settings.discover_chain:
            self._chain_resolved = True
            return None
        try:
            body = await self._retried(
                "asking the hub for its chain", lambda: self.hub.read("/api/v1/chain", limit=MAX_MANIFEST_BYTES)
            )
        except HubRefusedError as exc:
            if exc.status != 404:
                raise
            return None  # the hub anchors nothing (yet: asked again at the next update)
        try:
            document = json.loads(body)
            rpc_url, address = str(document["rpc_url"]), str(document["contract_address"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UpdateError(f"the hub's /api/v1/chain answer makes no sense: {exc}") from exc
        if settings.contract_address is not None and address.lower() != settings.contract_address.lower():
            raise UpdateError(
                f"the hub names notary {address}, but this device trusts only {settings.contract_address}"
            )
        try:
            self._anchors = ChainReader(rpc_url, address, timeout_s=settings.timeout_s)
        except (ValueError, NotaryAbiError) as exc:
            raise UpdateError(f"the hub's chain is unusable: {exc}") from exc
        self._chain_resolved = True
        log.info("chain_discovered rpc_url=%s contract=%s", rpc_url, address)
        return self._anchors

    async def fetch(self, request: UpdateRequest) -> Path:
        """Fetch and check the model; the path of its manifest in the model directory."""
        label = f"model {request.model} {request.version}"
        raw = await self._retried(
            f"fetching the manifest of {label}",
            lambda: self.hub.read(request.manifest_url, limit=MAX_MANIFEST_BYTES),
        )
        manifest = self._check_manifest(request, raw)
        anchors = await self.anchors()
        if anchors is not None:
            model_id = model_anchor_id(manifest.name, manifest.version)
            digest = bytes.fromhex(manifest.sha256)
            try:
                await self._retried(f"checking the anchor of {label}", lambda: anchors.verify_model(model_id, digest))
            except NotarizationError as exc:
                raise UpdateError(f"refusing {label}: {exc}") from exc
            self.anchor_checks += 1
        elif self.settings.require_anchor:
            raise UpdateError(f"refusing {label}: no chain is known to check its anchor (require_anchor is set)")
        if manifest.bytes > self.settings.max_download_bytes:
            raise UpdateError(
                f"refusing {label}: {manifest.bytes} bytes is more than this device takes "
                f"({self.settings.max_download_bytes})"
            )
        return await self._retried(f"downloading {label}", lambda: self._stage(request, raw, manifest))

    def _check_manifest(self, request: UpdateRequest, raw: bytes) -> ModelManifest:
        label = f"model {request.model} {request.version}"
        try:
            manifest = ModelManifest.model_validate_json(raw)
        except ValidationError as exc:
            raise UpdateError(f"the manifest of {label} is invalid: {exc.errors()[0]['msg']}") from exc
        if (manifest.name, manifest.version) != (request.model, request.version):
            raise UpdateError(f"the hub sent the manifest of {manifest.name} {manifest.version} for {label}")
        artifact = manifest.artifact
        if Path(artifact).name != artifact or artifact in (".", "..") or "\\" in artifact:
            raise UpdateError(f"the manifest of {label} names an artifact outside its directory: {artifact!r}")
        needed = [export for export in manifest.exports if export.backend == self.backend]
        if needed or self.backend not in ("onnxruntime", "openvino"):
            raise UpdateError(
                f"{label}: the {self.backend} backend loads an export, and the hub serves only the ONNX artifact"
            )
        if self.trusted_keys:
            try:
                verify(manifest, self.trusted_keys)
            except SignatureError as exc:
                raise UpdateError(f"refusing {label}: {exc}") from exc
        return manifest

    def _stage(self, request: UpdateRequest, raw: bytes, manifest: ModelManifest) -> Path:
        """Download into a staging directory and rename it into place (blocking; run in a thread)."""
        model_dir = self.settings.model_dir
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = model_dir / f".staging-{request.model}-{request.version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            artifact_path = staging / manifest.artifact
            digest = hashlib.sha256()
            with artifact_path.open("wb") as sink:
                hashing = _HashingWriter(sink, digest)
                received = self.hub.download(request.artifact_url, hashing, limit=manifest.bytes)
                sink.flush()
                os.fsync(sink.fileno())
            label = f"model {request.model} {request.version}"
            if received != manifest.bytes:
                raise UpdateError(f"refusing {label}: {received} bytes arrived, the manifest says {manifest.bytes}")
            if digest.hexdigest() != manifest.sha256:
                raise UpdateError(
                    f"refusing {label}: the artifact's sha256 is {digest.hexdigest()}, "
                    f"its manifest says {manifest.sha256}"
                )
            manifest_path = staging / f"{request.model}-{request.version}.manifest.json"
            with manifest_path.open("wb") as sink:
                sink.write(raw)  # as signed: the signature covers the manifest's content
                sink.flush()
                os.fsync(sink.fileno())
            target = self.version_dir(request.model, request.version)
            if target.exists():
                # A version fetched before (a retried rollout): the new copy replaces it whole.
                retired = model_dir / f".retired-{target.name}-{uuid.uuid4().hex[:8]}"
                target.rename(retired)
                shutil.rmtree(retired, ignore_errors=True)
            staging.rename(target)
            _fsync_dir(model_dir)
            return target / manifest_path.name
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _HashingWriter:
    """A sink that hashes what passes through it on its way to a file."""

    def __init__(self, sink: IO[bytes], digest: _Digest) -> None:
        self._sink, self._digest = sink, digest

    def write(self, data: bytes, /) -> int:
        self._digest.update(data)
        return self._sink.write(data)


def _fsync_dir(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not every platform opens directories
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# The command's life ------------------------------------------------------------------------------

Reply = Callable[[Command, ReplyStatus, str, dict[str, CommandArgument]], None]
Swap = Callable[[Path], Awaitable[object]]


class ModelUpdater:
    """Runs ``update_model`` commands one at a time: reply accepted, fetch, swap, reply ok or rejected."""

    def __init__(self, fetcher: ModelFetcher, *, current: Callable[[], tuple[str, str]]) -> None:
        self.fetcher = fetcher
        self._current = current
        self._lock = asyncio.Lock()
        self.updated = 0
        self.refused = 0

    async def run(self, command: Command, *, swap: Swap, reply: Reply) -> None:
        if command.name is not CommandName.UPDATE_MODEL:
            raise ValueError(f"not an update_model command: {command.name.value}")
        try:
            request = UpdateRequest.from_command(command)
        except UpdateError as exc:
            self._refuse(command, reply, str(exc))
            return
        label = {"model": request.model, "version": request.version}
        async with self._lock:
            if self._current() == (request.model, request.version):
                reply(command, ReplyStatus.OK, "already running this version", dict(label))
                return
            reply(command, ReplyStatus.ACCEPTED, "fetching the model from the hub", dict(label))
            log.info("update_started message_id=%s model=%s version=%s", command.message_id, *label.values())
            try:
                manifest_path = await self.fetcher.fetch(request)
                await swap(manifest_path)
            except (AgentError, OSError) as exc:
                self._refuse(command, reply, str(exc))
                return
            except Exception as exc:  # a failed update must never stop the agent: refuse it, say why
                log.exception("update_failed message_id=%s", command.message_id)
                self._refuse(command, reply, f"the update failed unexpectedly: {exc!r}")
                return
        self.updated += 1
        reply(command, ReplyStatus.OK, "the model is live (on probation)", dict(label))
        log.info("update_live message_id=%s model=%s version=%s", command.message_id, *label.values())

    def _refuse(self, command: Command, reply: Reply, reason: str) -> None:
        self.refused += 1
        log.warning("update_refused message_id=%s reason=%s", command.message_id, reason)
        reply(command, ReplyStatus.REJECTED, reason[:1024], {})
