from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cloud_hub.adjudication import BatchingJudge, Judge
from cloud_hub.errors import JudgeError, ModelLoadError, WindowError
from tests.unit.cloud_hub import factories
from tests.unit.cloud_hub.factories import SUMMER, WINTER, write_tiny_model


def test_judges_a_batch(judge: Judge) -> None:
    escalations = [factories.escalation(values=values) for values in (WINTER, SUMMER, WINTER)]

    outcomes = judge.judge(escalations)

    assert [outcome.label for outcome in outcomes] == ["winter", "summer", "winter"]
    for outcome in outcomes:
        assert outcome.model == "tiny_cloud"
        assert outcome.model_version == "test-1"
        assert len(outcome.probabilities) == 2
        assert sum(outcome.probabilities) == pytest.approx(1.0, abs=1e-6)
        assert outcome.confidence == max(outcome.probabilities)
        assert outcome.confidence > 0.99
        # z-scores of a two-level window are ±1; the tiny model divides the peak by 3.
        assert outcome.anomaly_score == pytest.approx(1 / 3, abs=1e-5)


def test_empty_batch(judge: Judge) -> None:
    assert judge.judge([]) == []


def test_window_of_the_wrong_length_is_rejected(judge: Judge) -> None:
    short = factories.escalation(values=[1.0] * 10)
    with pytest.raises(WindowError, match="has 10 samples; model tiny_cloud test-1 takes 24"):
        judge.check(short)
    with pytest.raises(WindowError):
        judge.judge([factories.escalation(), short])
    with pytest.raises(WindowError):
        judge.judge_windows([[1.0] * 23])


def test_sha256_mismatch_is_refused(tiny_manifest: Path) -> None:
    artifact = tiny_manifest.parent / "tiny_cloud.onnx"
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    artifact.write_bytes(bytes(data))

    with pytest.raises(ModelLoadError, match=r"sha256 \w+ but its manifest says \w+; refusing to load"):
        Judge.load(tiny_manifest)


def test_size_mismatch_is_refused(tiny_manifest: Path) -> None:
    artifact = tiny_manifest.parent / "tiny_cloud.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match="bytes but its manifest says"):
        Judge.load(tiny_manifest)


def test_missing_manifest_and_artifact(tmp_path: Path, tiny_manifest: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read model manifest"):
        Judge.load(tmp_path / "nowhere.manifest.json")
    (tiny_manifest.parent / "tiny_cloud.onnx").unlink()
    with pytest.raises(ModelLoadError, match="cannot read model artifact"):
        Judge.load(tiny_manifest)


def test_invalid_manifest(tmp_path: Path) -> None:
    path = tmp_path / "bad.manifest.json"
    path.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelLoadError, match="is invalid"):
        Judge.load(path)


def test_manifest_that_does_not_describe_the_model(tmp_path: Path) -> None:
    manifest = write_tiny_model(tmp_path, input_name="samples")
    with pytest.raises(ModelLoadError, match="has no input 'samples'"):
        Judge.load(manifest)


def test_artifact_outside_the_manifest_directory_is_refused(tiny_manifest: Path) -> None:
    document = json.loads(tiny_manifest.read_text())
    document["artifact"] = "../elsewhere.onnx"
    tiny_manifest.write_text(json.dumps(document))
    with pytest.raises(ModelLoadError, match="outside its directory"):
        Judge.load(tiny_manifest)


async def test_batching_judge_serves_concurrent_callers_in_batches(judge: Judge) -> None:
    escalations = [factories.escalation(values=WINTER if index % 2 else SUMMER) for index in range(10)]

    async with BatchingJudge(judge, max_batch=4, max_wait_ms=50.0) as batching:
        outcomes = await asyncio.gather(*(batching.judge(esc) for esc in escalations))

    assert outcomes == judge.judge(escalations)
    assert batching.stats.judged == 10
    assert batching.stats.largest_batch == 4
    assert batching.stats.batches == 3


async def test_batching_judge_fills_a_batch_from_callers_already_waiting(judge: Judge) -> None:
    async with BatchingJudge(judge, max_batch=5, max_wait_ms=0.0) as batching:
        await asyncio.gather(*(batching.judge(factories.escalation()) for _ in range(5)))
    assert batching.stats.batches == 1
    assert batching.stats.largest_batch == 5


async def test_batching_judge_rejects_a_bad_window_at_once(judge: Judge) -> None:
    async with BatchingJudge(judge) as batching:
        with pytest.raises(WindowError):
            await batching.judge(factories.escalation(values=[1.0] * 5))
        assert (await batching.judge(factories.escalation())).label == "winter"


async def test_a_window_of_extreme_values_is_refused_alone_and_its_batch_is_judged(judge: Judge) -> None:
    # Finite, so the protocol accepts it, but its mean and variance overflow float64.
    extreme = factories.escalation(values=[-1.7e308, 1.7e308, 3.0] * 8)
    with pytest.raises(WindowError, match="cannot be preprocessed"):
        judge.check(extreme)
    with pytest.raises(WindowError, match="cannot be preprocessed"):
        judge.judge_windows([[-1.7e308, 1.7e308, 3.0] * 8])
    async with BatchingJudge(judge, max_batch=4, max_wait_ms=20.0) as batching:
        good = [batching.judge(factories.escalation(values=WINTER)) for _ in range(3)]
        results = await asyncio.gather(batching.judge(extreme), *good, return_exceptions=True)
    assert isinstance(results[0], WindowError)
    assert [outcome.label for outcome in results[1:]] == ["winter"] * 3  # type: ignore[union-attr]


async def test_batching_judge_is_unusable_outside_its_context(judge: Judge) -> None:
    batching = BatchingJudge(judge)
    with pytest.raises(JudgeError, match="not running"):
        await batching.judge(factories.escalation())
    async with batching:
        pass
    with pytest.raises(JudgeError, match="not running"):
        await batching.judge(factories.escalation())


async def test_a_failing_batch_fails_its_callers_not_the_judge(judge: Judge, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = judge.judge

    def flaky(escalations: list[object]) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return real(escalations)  # type: ignore[arg-type]

    monkeypatch.setattr(judge, "judge", flaky)
    async with BatchingJudge(judge, max_batch=1) as batching:
        with pytest.raises(JudgeError, match="boom"):
            await batching.judge(factories.escalation())
        assert (await batching.judge(factories.escalation(values=SUMMER))).label == "summer"
