"""The replay log format: folder layout, file names and the manifest model.

A replay log is a folder written by the audited pipeline::

    manifest.json                 this model, written last
    rounds/round_0001.npz         one file per round t = 1..T: candidates, kept,
    rounds/round_0002.npz         optional labels and scores
    ...
    clients/client_000.npz        one file per client reference: features, optional labels
    initial.npz                   optional real training set D_0: features, optional labels

Round numbers have at least four digits and client numbers at least three, zero-padded.
Every ``.npz`` is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "selbias-replay"
FORMAT_VERSION = 1
ROUNDS_DIR = "rounds"
CLIENTS_DIR = "clients"
INITIAL_NAME = "initial.npz"

# Arrays each kind of file may hold: (required, optional). Unknown names are rejected so
# that a misspelled optional array (``label`` for ``labels``) is never silently dropped.
ROUND_ARRAYS = (("candidates", "kept"), ("labels", "scores"))
SET_ARRAYS = (("features",), ("labels",))


def round_name(t: int) -> str:
    """Return the file name of round ``t`` (1-based), for example ``round_0007.npz``."""
    return f"round_{t:04d}.npz"


def client_name(k: int) -> str:
    """Return the file name of client ``k`` (0-based), for example ``client_003.npz``."""
    return f"client_{k:03d}.npz"


def round_path(folder: Path, t: int) -> Path:
    """Return the path of round ``t`` inside the log ``folder``."""
    return folder / ROUNDS_DIR / round_name(t)


def client_path(folder: Path, k: int) -> Path:
    """Return the path of client ``k``'s reference inside the log ``folder``."""
    return folder / CLIENTS_DIR / client_name(k)


class ReplayManifest(BaseModel):
    """``manifest.json`` of a replay log: the folder's contents and how the pipeline ran.

    Parsed strictly: numbers must be JSON integers, not strings or floats.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, use_attribute_docstrings=True
    )

    format: Literal["selbias-replay"]
    """Marks the folder as a selbias-audit replay log."""
    format_version: Literal[1]
    """Version of this layout; readers reject versions they do not know."""
    rounds: Annotated[int, Field(ge=1, le=100_000)]
    """Number of logged rounds T; ``rounds/round_0001.npz`` to ``round_T.npz`` must exist."""
    dimension: Annotated[int, Field(ge=1)]
    """Feature dimension d of every logged feature array (before the run's transform)."""
    clients: Annotated[int, Field(ge=1, le=1000)]
    """Number of client references K; ``clients/client_000.npz`` to ``client_{K-1}`` exist."""
    initial: bool = False
    """Whether ``initial.npz`` (the real training set D_0) is logged."""
    paradigm: Literal["replace", "accumulate", "accumulate_subsample"] | None = None
    """Pool rule of the pipeline: the training pool after round t is the kept batch
    (replace) or D_0 plus every kept batch so far (accumulate, accumulate_subsample)."""
    label_names: Annotated[list[str], Field(min_length=1)] | None = None
    """Name of each label id, indexed by id; logged labels must be below its length."""
    generator: str | None = None
    """The pipeline's generator, for the receipt (for example a model name and version)."""
    description: str | None = None
    """Free text about the pipeline run that produced the log."""


def manifest_text(manifest: ReplayManifest) -> str:
    """Return the JSON text of a manifest, with sorted keys and a final newline."""
    data = manifest.model_dump(mode="json", exclude_none=True)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def replay_manifest_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of ``manifest.json``."""
    schema = ReplayManifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "selbias-audit replay log manifest"
    return schema
