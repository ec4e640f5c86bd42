"""Shared fixtures: small run descriptions written to a temporary folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
assert EXAMPLES.is_dir(), f"examples folder missing at {EXAMPLES}"


def small_run(**overrides: Any) -> dict[str, Any]:
    """Return a small, fast run description on digits as a plain mapping."""
    run: dict[str, Any] = {
        "name": "small",
        "seed": 3,
        "device": "cpu",
        "target": {"source": "sklearn:digits", "transform": {"standardize": True, "pca": 16}},
        "references": {
            "clients": 10, "per_client": 60,
            "partition": {"rule": "exdir", "classes_per_client": 1, "alpha": 0.1},
        },
        "generator": {"kind": "class_gaussian"},
        "loop": {
            "paradigm": "accumulate_subsample", "rounds": 3, "select": 40, "candidates": 160,
            "initial_size": 200,
        },
        "selection": {"audited": {"method": "center_match", "client": 0}, "random_seeds": 3},
        "solver": {"divergence_metric": False},
        "governance": {
            "pooling_restriction": "silos may not share raw records",
            "license": {"data": "CC BY 4.0", "model": "none"},
            "pipeline_revision": "abc123",
        },
        "output": {"dir": "out"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(run.get(key), dict):
            run[key] = {**run[key], **value}
        else:
            run[key] = value
    return run


@pytest.fixture
def write_run(tmp_path: Path) -> Callable[..., Path]:
    """Return a factory that writes a run description and returns its path."""

    def write(name: str = "run.yaml", **overrides: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(small_run(**overrides), sort_keys=False))
        return path

    return write


@pytest.fixture(autouse=True)
def private_key_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the per-user signing key at a temporary folder so tests never touch ~/.config."""
    home = tmp_path_factory.mktemp("keyhome")
    monkeypatch.setenv("SELBIAS_KEY", str(home / "signing-key.pem"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    os.environ.pop("SELBIAS_LOGLEVEL", None)
    return home
