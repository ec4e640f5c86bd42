"""The wheel ships the templates and schemas the installed tool needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_wheel_contains_templates_and_schemas(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), "-q"],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("selbias_audit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (ROOT / "templates").iterdir():
        assert f"selbias_audit/_templates/{template.name}" in names
    for schema in (ROOT / "schemas").glob("*.json"):
        assert f"selbias_audit/_schemas/{schema.name}" in names
    assert "selbias_audit/py.typed" in names
