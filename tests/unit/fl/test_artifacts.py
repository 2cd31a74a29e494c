"""The committed federated artifacts are the ones their description names, and reproduce its figures."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cloud_hub.fl.evaluation import embed
from tests.unit.fl.conftest import BACKBONE_INT8, COMMITTED, DESCRIPTION


def test_the_files_match_their_description() -> None:
    description = json.loads(DESCRIPTION.read_text())
    for part in ("backbone_int8", "backbone_fp32", "initial_head", "calibration"):
        entry = description[part]
        assert hashlib.sha256((COMMITTED / entry["file"]).read_bytes()).hexdigest() == entry["sha256"], part
    with np.load(COMMITTED / description["initial_head"]["file"]) as head:
        assert head["weight"].shape == (len(description["labels"]), description["features"])
    assert np.load(COMMITTED / description["calibration"]["file"]).shape[1:] == (512,)


def test_the_starting_head_scores_what_the_description_says() -> None:
    pytest.importorskip("sktime", reason="PLAID comes with sktime (the sim or train extra)")
    from models.federated import preprocessed_plaid

    data, _, test = preprocessed_plaid()
    description = json.loads(DESCRIPTION.read_text())
    with np.load(COMMITTED / description["initial_head"]["file"]) as head:
        logits = embed(BACKBONE_INT8, test) @ head["weight"].T + head["bias"]
    accuracy = float(np.mean(np.argmax(logits, axis=1) == data.test_labels))
    assert accuracy == pytest.approx(description["test_accuracy"]["initial_head_on_int8_backbone"], abs=1e-6)
