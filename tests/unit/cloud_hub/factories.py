"""Test doubles for the hub: a tiny ONNX model of the cloud model's signature, and message factories.

The tiny model says "winter" when the first half of a (z-normalized) window is higher than the second
half and "summer" otherwise; its anomaly score is the window's largest absolute z-score divided by 3.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protocol.manifest import InputSpec, ModelManifest, OutputSpec, ZNormalize
from protocol.messages import (
    DeviceBirth,
    DeviceDeath,
    DeviceHealth,
    ErrorCode,
    ErrorEvent,
    Escalation,
    EscalationReason,
    Outcome,
    SensorKind,
    StreamInfo,
    Verdict,
    Window,
    new_message_id,
)

WINDOW = 24
LABELS = ["winter", "summer"]
WINTER = [float(value) for value in [5] * 12 + [1] * 12]  # first half higher
SUMMER = [float(value) for value in [1] * 12 + [5] * 12]


def tiny_model_bytes(window: int = WINDOW) -> bytes:
    half = window // 2
    sign = np.concatenate([np.ones(half), -np.ones(window - half)]).astype(np.float32)
    weights = np.stack([sign, -sign], axis=1)  # [window, 2]
    nodes = [
        helper.make_node("MatMul", ["window", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("Abs", ["window"], ["magnitude"]),
        helper.make_node("ReduceMax", ["magnitude"], ["peak"], axes=[1], keepdims=0),
        helper.make_node("Div", ["peak", "three"], ["anomaly_score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cloud",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, [None, window])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, [None]),
        ],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(np.array(3.0, np.float32), "three")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgefleet-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def write_tiny_model(directory: Path, *, name: str = "tiny_cloud", input_name: str = "window") -> Path:
    """Write the tiny model and its manifest into ``directory``; return the manifest's path."""
    directory.mkdir(parents=True, exist_ok=True)
    data = tiny_model_bytes()
    artifact = directory / f"{name}.onnx"
    artifact.write_bytes(data)
    manifest = ModelManifest(
        name=name,
        version="test-1",
        task="classification",
        role="cloud",
        artifact=artifact.name,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        input=InputSpec(
            name=input_name,
            shape=[None, WINDOW],
            sensor=SensorKind.POWER,
            unit="kW",
            window_size=WINDOW,
            hop=WINDOW,
            preprocessing=[ZNormalize()],
        ),
        output=OutputSpec(probabilities="probabilities", labels=LABELS, anomaly_score="anomaly_score"),
        parameters=2 * WINDOW,
        data="synthetic",
        rebuild="tests/unit/cloud_hub/factories.py",
    )
    path = directory / f"{name}.manifest.json"
    path.write_text(manifest.model_dump_json(indent=2))
    return path


def edge_outcome(label: str = "winter", confidence: float = 0.55) -> Outcome:
    return Outcome(
        model="tiny_edge",
        model_version="edge-1",
        label=label,
        confidence=confidence,
        anomaly_score=0.2,
        probabilities=[confidence, 1 - confidence] if label == "winter" else [1 - confidence, confidence],
    )


def escalation(
    *,
    device: str = "dev-1",
    site: str = "site-1",
    values: list[float] | None = None,
    edge_label: str = "winter",
    message_id: str | None = None,
    timestamp: float | None = None,
    stream: str = "power",
) -> Escalation:
    return Escalation(
        message_id=message_id or new_message_id(),
        device_id=device,
        timestamp=timestamp if timestamp is not None else time.time(),
        site=site,
        window=Window(
            stream=stream,
            sensor=SensorKind.POWER,
            unit="kW",
            start_seq=0,
            sample_rate_hz=1.0,
            values=values if values is not None else list(WINTER),
        ),
        edge=edge_outcome(edge_label),
        reasons=[EscalationReason.LOW_CONFIDENCE],
    )


def verdict_for(esc: Escalation, *, label: str = "winter", timestamp: float | None = None) -> Verdict:
    cloud = Outcome(
        model="tiny_cloud",
        model_version="test-1",
        label=label,
        confidence=0.9,
        anomaly_score=0.5,
        probabilities=[0.9, 0.1] if label == "winter" else [0.1, 0.9],
    )
    return Verdict(
        device_id=esc.device_id,
        timestamp=timestamp if timestamp is not None else esc.timestamp + 0.1,
        escalation_id=esc.message_id,
        cloud=cloud,
        agrees_with_edge=label == esc.edge.label,
    )


def birth(
    *, device: str = "dev-1", site: str = "site-1", timestamp: float | None = None, fw: str = "1.0.0"
) -> DeviceBirth:
    return DeviceBirth(
        device_id=device,
        timestamp=timestamp if timestamp is not None else time.time(),
        site=site,
        firmware_version=fw,
        streams=[StreamInfo(name="power", sensor=SensorKind.POWER, unit="kW", sample_rate_hz=1.0)],
    )


def death(*, device: str = "dev-1", timestamp: float | None = None, reason: str = "connection lost") -> DeviceDeath:
    return DeviceDeath(device_id=device, timestamp=timestamp if timestamp is not None else time.time(), reason=reason)


def health(*, device: str = "dev-1", timestamp: float | None = None, uptime_s: float = 12.0) -> DeviceHealth:
    return DeviceHealth(
        device_id=device,
        timestamp=timestamp if timestamp is not None else time.time(),
        uptime_s=uptime_s,
        messages_sent=7,
        cpu_percent=3.5,
    )


def error_event(*, device: str = "dev-1", timestamp: float | None = None) -> ErrorEvent:
    return ErrorEvent(
        device_id=device,
        timestamp=timestamp if timestamp is not None else time.time(),
        code=ErrorCode.OUT_OF_RANGE,
        reason="power reading -5 kW is below the minimum 0",
        topic="edgefleet/site-1/dev-1/telemetry/power",
        stream="power",
        payload_excerpt='{"value": -5}',
    )
