"""Description of a Gaussian theory run: the pydantic model and its YAML loading.

The defaults are the published setting of the collapse experiment: d = 10, T = 300
rounds, n = 300 samples kept per round, selection ratio 0.05 (N = 6,000 candidates)
and ten seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from selbias_audit.errors import SpecError
from selbias_audit.metrics.decay import MIN_FIT_POINTS

# Same YAML rules as a run description: safe loading, and a repeated key is an error.
from selbias_audit.spec import _UniqueKeyLoader

SettingName = Literal["replace", "replace_select", "accumulate", "accumulate_select"]

SETTING_LABELS: dict[str, str] = {
    "replace": "Replace",
    "replace_select": "Replace + Select",
    "accumulate": "Accumulate",
    "accumulate_select": "Accumulate + Select",
}
"""Display name of each setting."""

PUBLISHED_SEEDS = [42, 123, 456, 789, 2023, 2024, 2025, 3141, 1618, 9999]

DEFAULT_FIT_START = 20
"""First round of the default psi window. In the first rounds the fitted mean is still
moving from mu* toward the biased target, so the trace ratio follows a power law only after
that transient. In one run of the published setting (10 seeds, Accumulate + Select) the
smallest per-run R^2 was 0.87 over rounds 1 to 300 and 0.99 over rounds 20 to 300."""


# Memory one round of the theory run may take, an estimate sized for a 16 GiB machine.
MAX_ROUND_BYTES = 8 * 2**30


class TheorySpec(BaseModel):
    """Parameters of the four-setting Gaussian collapse experiment."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    dim: Annotated[int, Field(ge=1, le=512)] = 10
    """Dimension d of the Gaussian."""
    rounds: Annotated[int, Field(ge=1, le=100_000)] = 300
    """Number of rounds T after round 0."""
    select: Annotated[int, Field(ge=2)] = 300
    """Samples kept per round, n. Settings without selection draw exactly n samples."""
    ratio: Annotated[float, Field(gt=0, le=1)] = 0.05
    """Selection ratio alpha. The selecting settings draw N = round(n / alpha) candidates."""
    seeds: Annotated[list[Annotated[int, Field(ge=0, lt=2**63)]], Field(min_length=1)] = list(
        PUBLISHED_SEEDS
    )
    """One run per seed. A seed fixes the construction (mu*, Sigma*, biased target) and the
    random stream that every setting of that run reuses."""
    settings: Annotated[list[SettingName], Field(min_length=1)] = [
        "replace",
        "replace_select",
        "accumulate",
        "accumulate_select",
    ]
    """Settings to run, in this order."""
    fit_window: tuple[int, int] | None = None
    """Inclusive rounds (start, end) of the psi fit. Defaults to (20, T), or to (1, T)
    when T < 24."""
    real_samples: Annotated[int, Field(ge=0)] = 0
    """Size of a real training set D_0 drawn from the truth before round 1. With 0, the
    published design, the model of round 0 is the truth itself, and round 1's draws are the
    first data, which Accumulate + Select filters too. With m > 0, round 0 is the MLE fit on
    D_0, and the accumulating settings keep D_0 unfiltered in their pool."""
    ridge: Annotated[float, Field(ge=0)] = 1e-6
    """Ridge added to every refitted covariance."""
    output: Annotated[str, Field(min_length=1)] = "out/gaussian-theory"
    """Output folder, relative to the YAML file's folder unless absolute."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` uses CUDA when it is available."""

    @property
    def candidates(self) -> int:
        """Return N, the candidates drawn per round by the selecting settings."""
        return max(self.select, round(self.select / self.ratio))

    @model_validator(mode="after")
    def _check_memory(self) -> TheorySpec:
        # One round holds seeds x N x d float64 candidates (plus a few same-sized
        # temporaries); refuse sizes that cannot fit a workstation instead of being killed.
        needed = 4 * len(self.seeds) * self.candidates * self.dim * 8
        if needed > MAX_ROUND_BYTES:
            raise ValueError(
                f"ratio = {self.ratio} gives N = {self.candidates} candidates per round, about "
                f"{needed / 2**30:.1f} GiB per round for {len(self.seeds)} seeds in {self.dim} "
                f"dimensions (limit {MAX_ROUND_BYTES / 2**30:.0f} GiB); raise ratio or use fewer "
                "seeds"
            )
        return self

    @property
    def window(self) -> tuple[int, int]:
        """Return the psi fit window with the default filled in."""
        if self.fit_window is not None:
            return self.fit_window
        start = DEFAULT_FIT_START if self.rounds >= DEFAULT_FIT_START + MIN_FIT_POINTS - 1 else 1
        return (start, self.rounds)

    @field_validator("seeds", "settings")
    @classmethod
    def _check_distinct(cls, values: list[Any]) -> list[Any]:
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise ValueError(f"values must be distinct, but these repeat: {repeated}")
        return values

    @field_validator("fit_window")
    @classmethod
    def _check_window(
        cls, window: tuple[int, int] | None, info: ValidationInfo
    ) -> tuple[int, int] | None:
        if window is None:
            return None
        # rounds is declared before fit_window, so it is validated first. It is absent
        # from info.data only when it was itself invalid.
        rounds = info.data.get("rounds")
        start, end = window
        if start < 1 or end < start or (rounds is not None and end > rounds):
            raise ValueError(f"fit_window must satisfy 1 <= start <= end <= rounds ({rounds})")
        if end - start + 1 < MIN_FIT_POINTS:
            raise ValueError(
                f"fit_window contains {end - start + 1} rounds, but a psi fit needs at least "
                f"{MIN_FIT_POINTS}"
            )
        return window


def load_theory_spec(path: str | Path) -> TheorySpec:
    """Load and validate a theory description from YAML.

    Raises
    ------
    SpecError
        When the file cannot be read, is not YAML, is not a mapping, or a field is
        invalid. The message names the file, each failing field and the value received.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: theory description not found") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: theory description is not UTF-8 text") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read theory description ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        raise SpecError(
            f"{path}: theory description is empty",
            hint="start from examples/gaussian-theory.yaml (an explicit {} uses every default)",
        )
    if not isinstance(data, dict):
        raise SpecError(
            f"{path}: a theory description is a YAML mapping, got {type(data).__name__}",
            hint="start from examples/gaussian-theory.yaml",
        )
    try:
        return TheorySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe_errors(path, exc)) from None


def resolve_output_dir(spec: TheorySpec, spec_path: str | Path) -> Path:
    """Return ``spec.output`` as a path, resolved against the YAML file's folder if relative."""
    output = Path(spec.output).expanduser()
    return output if output.is_absolute() else Path(spec_path).parent / output


def _describe_errors(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid theory description ({error.error_count()} problem(s))"]
    for item in error.errors():
        field = _field_path(item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            known = ", ".join(TheorySpec.model_fields)
            lines.append(f"  {field}: unknown key; the known keys are {known}")
            continue
        received = _shorten(repr(item.get("input")))
        lines.append(f"  {field}: {item['msg']} (received {received})")
    return "\n".join(lines)


def _field_path(location: tuple[Any, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
