from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.model import LoadedModel
from tests import fakes
from tests.services import Mosquitto, running_mosquitto

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", help="run hardware-in-the-loop tests against a real rig")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="hardware test: pass --hardware to run it against a rig")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A Mosquitto shared by the session's integration tests, on a free port."""
    with running_mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def own_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto for one test alone (for tests that stop and restart it)."""
    with running_mosquitto(tmp_path) as broker:
        yield broker


@pytest.fixture
def fake_model() -> LoadedModel:
    """A model whose backend is a plain function (see tests/fakes.py)."""
    return fakes.fake_model()
