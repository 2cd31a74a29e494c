"""Judging escalated windows with the full (cloud) model.

:class:`Judge` is synchronous and batch-oriented: a list of escalations in, one :class:`Outcome` each out.
:class:`BatchingJudge` is its asyncio front: concurrent callers each ask for one escalation and are
served together, up to ``max_batch`` at a time, waiting at most ``max_wait_ms`` for a batch to fill.

Inference runs on the event loop while batches are fast and moves to a worker thread once they are not.
Measured on the project's machine: a small model takes 5-30 µs a batch inline, and handing a call to
``asyncio.to_thread`` alone costs about 80-110 µs, so a thread pays off only for models that take
about a millisecond a batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Generic, Self, TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pydantic import ValidationError

from cloud_hub.errors import HubError, JudgeError, ModelLoadError, StoreError, WindowError
from cloud_hub.store import Store
from protocol.manifest import ModelManifest
from protocol.messages import Escalation, Outcome, Verdict
from protocol.preprocessing import PreprocessingError, preprocess


class Judge:
    """The full model behind a :class:`ModelManifest`, checked against the manifest's sha256."""

    def __init__(self, manifest: ModelManifest, session: ort.InferenceSession) -> None:
        self._manifest = manifest
        self._session = session
        self._labels = list(manifest.output.labels)
        self._feature_shape = _feature_shape(manifest)
        self._outputs = [manifest.output.probabilities]
        if manifest.output.anomaly_score is not None:
            self._outputs.append(manifest.output.anomaly_score)
        _check_session(manifest, session)

    @classmethod
    def load(cls, manifest_path: Path, *, threads: int = 1) -> Judge:
        """Read the manifest, verify the artifact's size and sha256, and open an ONNX Runtime session.

        Raises :class:`ModelLoadError` if anything is missing, does not match, or will not load.
        """
        try:
            manifest = ModelManifest.model_validate_json(manifest_path.read_bytes())
        except OSError as exc:
            raise ModelLoadError(f"cannot read model manifest {manifest_path}: {exc.strerror or exc}") from exc
        except ValidationError as exc:
            raise ModelLoadError(f"model manifest {manifest_path} is invalid: {exc}") from exc
        artifact = Path(manifest.artifact)
        if artifact.is_absolute() or ".." in artifact.parts:
            raise ModelLoadError(f"model manifest {manifest_path} names an artifact outside its directory")
        path = manifest_path.parent / artifact
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read model artifact {path}: {exc.strerror or exc}") from exc
        if len(data) != manifest.bytes:
            raise ModelLoadError(
                f"model artifact {path} has {len(data)} bytes but its manifest says {manifest.bytes}; refusing to load"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.sha256:
            raise ModelLoadError(
                f"model artifact {path} has sha256 {digest} but its manifest says {manifest.sha256}; refusing to load"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            # From the verified bytes, not the path: what runs is what was checked.
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's errors derive from Exception directly
            raise ModelLoadError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        return cls(manifest, session)

    @property
    def manifest(self) -> ModelManifest:
        return self._manifest

    @property
    def window_size(self) -> int:
        return self._manifest.input.window_size

    def check(self, escalation: Escalation) -> None:
        """Raise :class:`WindowError` unless the escalation's window fits the model's input."""
        size = len(escalation.window.values)
        if size != self.window_size:
            raise WindowError(
                f"window of escalation {escalation.message_id!r} has {size} samples; "
                f"model {self._manifest.name} {self._manifest.version} takes {self.window_size}"
            )
        # Refused here, alone, rather than failing the batch it would join.
        try:
            preprocess(np.asarray(escalation.window.values, dtype=np.float64), self._manifest.input.preprocessing)
        except PreprocessingError as exc:
            raise WindowError(f"window of escalation {escalation.message_id!r} cannot be preprocessed: {exc}") from exc

    def judge(self, escalations: Sequence[Escalation]) -> list[Outcome]:
        """One outcome per escalation, in order, from one run of the model."""
        if not escalations:
            return []
        for escalation in escalations:
            self.check(escalation)
        return self.judge_windows(np.asarray([escalation.window.values for escalation in escalations]))

    def judge_windows(self, windows: npt.ArrayLike) -> list[Outcome]:
        """Judge raw windows, shape ``[batch, window_size]``."""
        data = np.asarray(windows, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.window_size:
            raise WindowError(f"windows of shape {data.shape} do not fit a model taking {self.window_size} samples")
        try:
            batch = preprocess(data, self._manifest.input.preprocessing)
        except PreprocessingError as exc:
            raise WindowError(f"a window cannot be preprocessed for model {self._manifest.name}: {exc}") from exc
        batch = batch.reshape((data.shape[0], *self._feature_shape))
        try:
            results = self._session.run(self._outputs, {self._manifest.input.name: batch})
        except Exception as exc:  # onnxruntime's errors derive from Exception directly
            raise JudgeError(f"model {self._manifest.name} failed on a batch of {data.shape[0]}: {exc}") from exc
        probabilities = np.asarray(results[0], dtype=np.float64)
        if probabilities.shape != (data.shape[0], len(self._labels)):
            raise JudgeError(
                f"model {self._manifest.name} returned probabilities of shape {probabilities.shape}; "
                f"expected {(data.shape[0], len(self._labels))}"
            )
        scores = np.asarray(results[1], dtype=np.float64).reshape(-1) if len(results) > 1 else np.zeros(len(data))
        if scores.shape != (data.shape[0],):
            raise JudgeError(f"model {self._manifest.name} returned {scores.size} anomaly scores for {data.shape[0]}")
        if not (np.isfinite(probabilities).all() and np.isfinite(scores).all()):
            raise JudgeError(f"model {self._manifest.name} returned a value that is not finite")
        # float32 rounding can step just outside [0, 1]; anomaly scores are distances, never negative.
        probabilities = np.clip(probabilities, 0.0, 1.0)
        scores = np.maximum(scores, 0.0)
        outcomes = []
        for row, score in zip(probabilities, scores, strict=True):
            best = int(np.argmax(row))
            outcomes.append(
                Outcome(
                    model=self._manifest.name,
                    model_version=self._manifest.version,
                    label=self._labels[best],
                    confidence=float(row[best]),
                    anomaly_score=float(score),
                    probabilities=[float(p) for p in row],
                )
            )
        return outcomes


def _feature_shape(manifest: ModelManifest) -> tuple[int, ...]:
    shape = manifest.input.shape[1:]
    if any(dimension is None for dimension in shape):
        raise ModelLoadError(
            f"model {manifest.name}: only the batch dimension of input shape {manifest.input.shape} may be open"
        )
    dimensions = tuple(int(dimension) for dimension in shape if dimension is not None)
    if math.prod(dimensions) != manifest.input.window_size:
        raise ModelLoadError(
            f"model {manifest.name}: input shape {manifest.input.shape} does not hold a window of "
            f"{manifest.input.window_size} samples"
        )
    return dimensions


def _check_session(manifest: ModelManifest, session: ort.InferenceSession) -> None:
    inputs = {node.name for node in session.get_inputs()}
    if manifest.input.name not in inputs:
        raise ModelLoadError(f"model {manifest.name} has no input {manifest.input.name!r} (it has {sorted(inputs)})")
    outputs = {node.name: node for node in session.get_outputs()}
    wanted = [manifest.output.probabilities]
    if manifest.output.anomaly_score is not None:
        wanted.append(manifest.output.anomaly_score)
    for name in wanted:
        if name not in outputs:
            raise ModelLoadError(f"model {manifest.name} has no output {name!r} (it has {sorted(outputs)})")
    classes = outputs[manifest.output.probabilities].shape[-1]
    if isinstance(classes, int) and classes != len(manifest.output.labels):
        raise ModelLoadError(
            f"model {manifest.name} gives {classes} probabilities "
            f"but its manifest names {len(manifest.output.labels)} labels"
        )


Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Request(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]


@dataclass
class BatchingStats:
    batches: int = 0
    judged: int = 0
    largest_batch: int = 0
    offloaded_batches: int = 0
    last_batch_ms: float = 0.0


BatchObserver = Callable[[int, float], None]
"""Called after each batch with its size and its duration in seconds (metrics)."""


class MicroBatcher(ABC, Generic[Item, Result]):
    """Dynamic batching: concurrent :meth:`submit` calls are served together by :meth:`_serve`.

    A batch starts with the first waiting request and takes every request that arrives within
    ``max_wait_ms``, up to ``max_batch``; at most ``max_pending`` requests queue (callers wait beyond
    that: the backpressure knob). An async context manager owning its batch task.
    """

    def __init__(
        self,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_pending: int | None = None,
        observer: BatchObserver | None = None,
        name: str = "hub-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._queue: asyncio.Queue[_Request[Item, Result]] = asyncio.Queue(maxsize=max_pending or 8 * max_batch)
        self._observer = observer
        self._name = name
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self.stats = BatchingStats()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize()

    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._runner = self._tasks.create_task(self._run(), name=self._name)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tasks is not None and self._runner is not None, "not entered"
        self._runner.cancel()
        try:
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            while not self._queue.empty():
                request = self._queue.get_nowait()
                if not request.future.done():
                    request.future.set_exception(JudgeError("the judge is shutting down"))
            self._tasks = self._runner = None

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` and wait for its result (served in a batch with concurrent callers)."""
        if self._runner is None:
            raise JudgeError("the batching judge is not running (use it as an async context manager)")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait_s
            while len(batch) < self._max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        batch.append(await self._queue.get())
                except TimeoutError:
                    break
            live = [request for request in batch if not request.future.done()]  # callers may have given up
            if not live:
                continue
            start = time.perf_counter()
            try:
                results = await self._serve([request.item for request in live])
            except Exception as exc:  # a failed batch fails its callers, never the batch task
                error = exc if isinstance(exc, HubError) else JudgeError(f"judging a batch failed: {exc!r}")
                if error is not exc:
                    error.__cause__ = exc
                for request in live:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            elapsed = time.perf_counter() - start
            self.stats.batches += 1
            self.stats.judged += len(live)
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            if self._observer is not None:
                self._observer(len(live), elapsed)
            for request, result in zip(live, results, strict=True):
                if request.future.done():
                    continue
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)

    @abstractmethod
    async def _serve(self, items: list[Item]) -> Sequence[Result | BaseException]:
        """One result (or the exception for that item) per item, in order."""


class _InferenceMixin:
    """Runs the judge inline while batches are fast, in a worker thread once they are not."""

    _judge: Judge
    _offload: bool
    _offload_after_s: float
    stats: BatchingStats

    async def _infer(self, escalations: list[Escalation]) -> list[Outcome]:
        if self._offload:
            outcomes, elapsed = await asyncio.to_thread(self._timed_judge, escalations)
            self.stats.offloaded_batches += 1
        else:
            outcomes, elapsed = self._timed_judge(escalations)
        self._offload = elapsed > self._offload_after_s
        self.stats.last_batch_ms = elapsed * 1000.0
        return outcomes

    def _timed_judge(self, escalations: list[Escalation]) -> tuple[list[Outcome], float]:
        start = time.perf_counter()
        outcomes = self._judge.judge(escalations)
        return outcomes, time.perf_counter() - start


class BatchingJudge(_InferenceMixin, MicroBatcher[Escalation, Outcome]):
    """Serves concurrent :meth:`judge` calls in batches; an async context manager owning its batch task.

    ``max_batch`` bounds a batch, ``max_wait_ms`` how long the first request of a batch waits for others,
    and ``max_pending`` how many requests may queue (callers wait beyond that: the backpressure knob).
    Batches slower than ``offload_after_ms`` move inference to a worker thread.
    """

    def __init__(
        self,
        judge: Judge,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_pending: int | None = None,
        offload_after_ms: float = 1.0,
        observer: BatchObserver | None = None,
    ) -> None:
        super().__init__(
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_pending=max_pending,
            observer=observer,
            name="hub-batching-judge",
        )
        self._judge = judge
        self._offload = False
        self._offload_after_s = offload_after_ms / 1000.0

    @property
    def judge_model(self) -> Judge:
        return self._judge

    async def judge(self, escalation: Escalation) -> Outcome:
        """The model's outcome for one escalation, judged in a batch with concurrent callers.

        Raises :class:`WindowError` at once if the window does not fit the model.
        """
        if self._runner is None:
            raise JudgeError("the batching judge is not running (use it as an async context manager)")
        self._judge.check(escalation)
        return await self.submit(escalation)

    async def _serve(self, items: list[Escalation]) -> Sequence[Outcome | BaseException]:
        return await self._infer(items)


@dataclass(frozen=True, slots=True)
class Adjudication:
    """The verdict on one escalation, and whether the escalation had been judged and stored before."""

    verdict: Verdict
    duplicate: bool


class Adjudicator(_InferenceMixin, MicroBatcher[Escalation, Adjudication]):
    """Judges and stores escalations in batches: the hub's one path for MQTT and HTTPS alike.

    Per batch: one query for verdicts stored before (a repeated message id is answered with its
    stored verdict, never judged again), one run of the model over the new windows, and one
    transaction storing them (:meth:`Store.record_escalations`). When another worker stored an
    escalation first, its verdict is the answer. ``max_batch`` and ``max_wait_ms`` are the knobs.
    """

    def __init__(
        self,
        judge: Judge,
        store: Store,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_pending: int | None = None,
        offload_after_ms: float = 1.0,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_pending=max_pending,
            observer=observer,
            name="hub-adjudicator",
        )
        self._judge = judge
        self._store = store
        self._clock = clock
        self._offload = False
        self._offload_after_s = offload_after_ms / 1000.0

    @property
    def judge_model(self) -> Judge:
        return self._judge

    async def adjudicate(self, escalation: Escalation) -> Adjudication:
        """The verdict on ``escalation``; :class:`WindowError` at once if its window does not fit the model."""
        if self._runner is None:
            raise JudgeError("the adjudicator is not running (use it as an async context manager)")
        self._judge.check(escalation)
        return await self.submit(escalation)

    async def _serve(self, items: list[Escalation]) -> Sequence[Adjudication | BaseException]:
        stored = await self._store.stored_verdicts([escalation.message_id for escalation in items])
        fresh: dict[str, Escalation] = {}
        for escalation in items:
            if escalation.message_id not in stored:
                fresh.setdefault(escalation.message_id, escalation)
        verdicts: dict[str, Verdict] = {}
        if fresh:
            outcomes = await self._infer(list(fresh.values()))
            now = self._clock()
            pairs = []
            for escalation, outcome in zip(fresh.values(), outcomes, strict=True):
                verdict = Verdict(
                    device_id=escalation.device_id,
                    timestamp=now,
                    escalation_id=escalation.message_id,
                    cloud=outcome,
                    agrees_with_edge=outcome.label == escalation.edge.label,
                )
                pairs.append((escalation, verdict))
            inserted = await self._store.record_escalations(pairs)
            lost = [escalation.message_id for (escalation, _), kept in zip(pairs, inserted, strict=True) if not kept]
            # Another worker stored these between our look-up and our insert: answer as it did.
            stored.update(await self._store.stored_verdicts(lost))
            verdicts = {
                escalation.message_id: verdict
                for (escalation, verdict), kept in zip(pairs, inserted, strict=True)
                if kept
            }
        results: list[Adjudication | BaseException] = []
        answered: set[str] = set()
        for escalation in items:
            message_id = escalation.message_id
            if message_id in verdicts and message_id not in answered:
                answered.add(message_id)
                results.append(Adjudication(verdict=verdicts[message_id], duplicate=False))
            elif message_id in stored:
                results.append(Adjudication(verdict=stored[message_id], duplicate=True))
            elif message_id in verdicts:  # the same message twice in one batch
                results.append(Adjudication(verdict=verdicts[message_id], duplicate=True))
            else:
                results.append(StoreError(f"escalation {message_id!r} was neither stored nor found stored"))
        return results
