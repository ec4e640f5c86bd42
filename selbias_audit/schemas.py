"""Generate the JSON Schemas of the run description, the receipt and the replay manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selbias_audit.io import atomic_write_text
from selbias_audit.receipt.model import Receipt
from selbias_audit.replay.manifest import replay_manifest_json_schema
from selbias_audit.spec import run_json_schema


def receipt_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the receipt."""
    schema = Receipt.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "selbias-audit selection-bias receipt"
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    """Return every published schema by file name."""
    return {
        "run.schema.json": run_json_schema(),
        "receipt.schema.json": receipt_json_schema(),
        "replay-manifest.schema.json": replay_manifest_json_schema(),
    }


def schema_text(schema: dict[str, Any]) -> str:
    """Return the stable text form of a schema (sorted keys, two-space indent)."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Write every schema into ``folder`` and return the paths."""
    return [atomic_write_text(folder / name, schema_text(s)) for name, s in all_schemas().items()]
