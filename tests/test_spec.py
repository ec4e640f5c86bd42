"""Run description: loading, rejection of bad input, and the published schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selbias_audit.errors import SpecError
from selbias_audit.schemas import all_schemas, schema_text
from selbias_audit.spec import RunSpec, load_spec
from tests.conftest import EXAMPLES, ROOT


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_are_valid(name: str) -> None:
    path = EXAMPLES / name
    if "theory" in name:
        pytest.skip("a theory description, checked in test_theory")
    spec, raw = load_spec(path)
    if spec.loop is not None:
        assert spec.loop.select <= spec.loop.candidate_count
    else:
        assert spec.replay is not None
    assert raw == path.read_bytes()


def test_schema_files_match_models() -> None:
    for name, schema in all_schemas().items():
        on_disk = (ROOT / "schemas" / name).read_text()
        assert on_disk == schema_text(schema), f"schemas/{name} is stale; run `selbias schema`"


def test_schema_round_trip(write_run) -> None:
    spec, _ = load_spec(write_run())
    dumped = spec.model_dump(mode="json")
    again = RunSpec.model_validate(json.loads(json.dumps(dumped)))
    assert again == spec


def test_misspelled_key_names_field(write_run) -> None:
    path = write_run(loop={"rounds": 3, "selct": 40, "select": 40})
    with pytest.raises(SpecError, match=r"loop\.selct: unknown key"):
        load_spec(path)


def test_select_above_candidates_rejected(write_run) -> None:
    path = write_run(loop={"select": 500, "candidates": 100})
    with pytest.raises(SpecError, match=r"select \(n = 500\) is larger than candidates"):
        load_spec(path)


def test_client_out_of_range_rejected(write_run) -> None:
    path = write_run(selection={"audited": {"method": "center_match", "client": 12}})
    with pytest.raises(SpecError, match=r"client = 12 but there are only 10 clients"):
        load_spec(path)


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_duplicate_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(SpecError, match="duplicate key 'seed'"):
        load_spec(path)


def test_non_mapping_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="YAML mapping"):
        load_spec(path)


def test_nan_value_rejected(write_run) -> None:
    path = write_run(gate={"margin": float("nan")})
    with pytest.raises(SpecError, match="non-finite"):
        load_spec(path)


def test_unsafe_yaml_tag_rejected(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(path)


def test_coerced_values_rejected(write_run) -> None:
    path = write_run(seed=True)
    with pytest.raises(SpecError, match="seed"):
        load_spec(path)
    path = write_run(references={"clients": "10"})
    with pytest.raises(SpecError, match=r"references\.clients"):
        load_spec(path)


def test_gate_rounds_beyond_loop_rejected(write_run) -> None:
    path = write_run(gate={"rounds": [5]})
    with pytest.raises(SpecError, match=r"gate\.rounds \[5\] exceed loop\.rounds = 3"):
        load_spec(path)


@pytest.mark.parametrize("blur", [1e-30, 1e-4, 2e3, 1e200])
def test_blur_out_of_range_rejected(write_run, blur: float) -> None:
    path = write_run(
        selection={
            "audited": {"method": "center_match", "client": 0},
            "compare": [{"method": "scheme2", "blur": blur}],
        }
    )
    with pytest.raises(SpecError, match=r"blur") as info:
        load_spec(path)
    assert str(path) in info.value.message


def test_metric_blur_out_of_range_rejected(write_run) -> None:
    path = write_run(solver={"metric_blur": 1e200})
    with pytest.raises(SpecError, match=r"solver\.metric_blur"):
        load_spec(path)
