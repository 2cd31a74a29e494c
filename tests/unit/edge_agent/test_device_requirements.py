"""``requirements/edge-device.txt``, what a device installs with ``pip install --no-deps``: the same pins as
pyproject.toml, every distribution the agent imports at run time, and nothing a device must not need."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.device_runtime import NotInstalled, canonical, not_on_a_device, read_device_requirements

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"

# The distributions the agent imports at run time (`edgefleet-agent` with a model, MQTT and /metrics),
# as measured in an environment holding the lock file and the edgefleet wheel alone.
RUNTIME = {
    "onnxruntime", "numpy", "aiomqtt", "paho-mqtt", "prometheus-client", "pydantic", "pydantic-core",
    "pydantic-settings", "python-dotenv", "typing-extensions", "typing-inspection", "annotated-types",
}  # fmt: skip

# Declared requirements a device leaves out, and why.
LEFT_OUT = {
    "onnxruntime": {
        "protobuf": "onnxruntime's model-building tools (quantization, transformers, tools) only",
        "packaging": "onnxruntime's model-building tools only",
        "flatbuffers": "onnxruntime's ORT-format model tools only",
    },
}


def edge_requirements() -> list[Requirement]:
    """The base dependencies and the `edge` extra of pyproject.toml: what a device runs on."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [Requirement(line) for line in [*project["dependencies"], *project["optional-dependencies"]["edge"]]]


def test_the_lock_file_holds_the_pyproject_pins() -> None:
    pins = read_device_requirements()
    for requirement in edge_requirements():
        name = canonical(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in the device lock file"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} in the device lock file, {requirement.specifier} in pyproject.toml"
        )


def test_the_lock_file_names_every_runtime_distribution_and_no_other() -> None:
    assert set(read_device_requirements()) == RUNTIME


def test_every_declared_requirement_of_a_locked_distribution_is_locked_or_left_out_on_purpose() -> None:
    """Read from the installed distributions' metadata; the versions installed here are the locked ones."""
    pins = read_device_requirements()
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, f"{name}: this environment differs from the lock"
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra of that distribution, or another platform's or Python's
            needed = canonical(requirement.name)
            assert needed in pins or needed in LEFT_OUT.get(name, {}), f"{name} requires {needed}: lock it"
            if needed in pins:
                assert requirement.specifier.contains(pins[needed], prereleases=True), f"{name}: {requirement}"


@pytest.fixture(scope="module")
def finder() -> NotInstalled:
    return NotInstalled(not_on_a_device(read_device_requirements()))


# Installed here (onnxruntime declares the first three; pytest needs packaging), refused as on a device.
@pytest.mark.parametrize("module", ["google.protobuf", "packaging", "flatbuffers", "cryptography"])
def test_the_device_runtime_refuses_what_a_device_does_not_install(finder: NotInstalled, module: str) -> None:
    with pytest.raises(ModuleNotFoundError, match="not installed on a device"):
        finder.find_spec(module, None)


@pytest.mark.parametrize("module", ["onnxruntime", "numpy", "pydantic_core", "dotenv", "paho.mqtt", "edge_agent"])
def test_the_device_runtime_lets_the_agent_import_what_a_device_installs(finder: NotInstalled, module: str) -> None:
    assert finder.find_spec(module, None) is None  # left to the usual finders
