"""JSON Schemas of every wire message and of the model manifest, for clients in other languages."""

from __future__ import annotations

from typing import Any

from protocol.manifest import ModelManifest
from protocol.messages import MESSAGE_TYPES, WIRE_REQUIRED


def json_schemas() -> dict[str, dict[str, Any]]:
    """Schema per wire type name (plus ``model.manifest``), using wire names."""
    schemas: dict[str, dict[str, Any]] = {}
    for cls in MESSAGE_TYPES:
        schema = cls.model_json_schema(by_alias=True, mode="validation")
        schema["$id"] = f"https://edgefleet.dev/schemas/v{cls.SCHEMA_VERSION}/{cls.TYPE}.json"
        # Defaults that help Python senders are still required on the wire (see Message).
        schema["required"] = [
            *WIRE_REQUIRED,
            *(name for name in schema.get("required", []) if name not in WIRE_REQUIRED),
        ]
        schemas[cls.TYPE] = schema
    manifest = ModelManifest.model_json_schema(mode="validation")
    manifest["$id"] = "https://edgefleet.dev/schemas/v1/model.manifest.json"
    schemas["model.manifest"] = manifest
    return schemas
