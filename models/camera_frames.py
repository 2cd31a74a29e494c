"""Camera frames rendered by the simulator's camera modality, labelled by how many objects they show.

``firmware_sim.camera.CameraScene`` draws circles and boxes that drift over a lit, noisy background and
labels each frame ``objects_<n>``. Parts may not import one another, so the frames are rendered by the
simulator in a child process of the same interpreter (as the anomaly tasks read aeon's data) and handed
over as an ``.npz`` file. Each frame comes from its own scene (seeded), moved on a random number of
steps; frames whose objects touch or overlap are drawn again, so that every label can be read off the
frame, and each label gets the same share of the frames. The frames are as a camera delivers them through
OpenCV: BGR, ``uint8``, ``[height, width, 3]``.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from models.datasets import WindowDataset

HEIGHT, WIDTH = 48, 64
MAX_OBJECTS = 3
LABELS = tuple(f"objects_{count}" for count in range(MAX_OBJECTS + 1))
TRAIN_FRAMES = 3200
TEST_FRAMES = 600
TRAIN_SEED, TEST_SEED = 1, 2

_RENDER = """
import sys
import numpy as np
import cv2
from firmware_sim.camera import CameraScene

count, seed, height, width, most, out = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                         int(sys.argv[5]), sys.argv[6])

def apart(boxes):
    for index, (_, x0, y0, x1, y1) in enumerate(boxes):
        for _, u0, v0, u1, v1 in boxes[index + 1:]:
            if x0 <= u1 + 1 and u0 <= x1 + 1 and y0 <= v1 + 1 and v0 <= y1 + 1:
                return False
    return True

quota = [count // (most + 1) + (label < count % (most + 1)) for label in range(most + 1)]
frames, labels = [], []
attempt = 0
while len(frames) < count:
    rng = np.random.default_rng((seed, attempt))
    attempt += 1
    scene = CameraScene(rng, width=width, height=height, max_objects=most)
    for _ in range(int(rng.integers(0, 30))):
        scene.step()
    if quota[len(scene.shapes)] == 0 or not apart(scene.boxes()):
        continue
    quota[len(scene.shapes)] -= 1
    frames.append(cv2.cvtColor(scene.frame(), cv2.COLOR_GRAY2BGR))
    labels.append(len(scene.shapes))
np.savez_compressed(out, frames=np.stack(frames), labels=np.asarray(labels, dtype=np.int64))
"""


def render_frames(count: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` labelled frames ``[count, HEIGHT, WIDTH, 3]`` (BGR uint8) and their object counts."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "frames.npz"
        arguments = [str(count), str(seed), str(HEIGHT), str(WIDTH), str(MAX_OBJECTS), str(out)]
        result = subprocess.run(
            [sys.executable, "-c", _RENDER, *arguments], capture_output=True, text=True, check=False, timeout=600
        )
        if result.returncode != 0:
            raise RuntimeError(f"the simulator could not render camera frames: {result.stderr[-500:]}")
        with np.load(out) as data:
            return np.asarray(data["frames"]), np.asarray(data["labels"])


@functools.cache  # a process (a build, a test session) renders the frames once
def load_camera() -> WindowDataset:
    """Simulated camera frames: train and test from different scenes (different seeds)."""
    train, train_labels = render_frames(TRAIN_FRAMES, seed=TRAIN_SEED)
    test, test_labels = render_frames(TEST_FRAMES, seed=TEST_SEED)
    return WindowDataset("simulated camera frames", train, train_labels, test, test_labels, LABELS)
