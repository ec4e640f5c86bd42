"""The selection-bias receipt: what an audit found, as a typed, signable document.

Every governance fact has its own typed field. A fact that only the user can supply
and did not is a :class:`Provided` with ``status = "missing"``, never an absent key, and
a baseline the audit did not run is a :class:`BaselineStatus` with ``ran = False``.
Floats are finite by construction (``allow_inf_nan=False``): a metric that could not
be computed carries an explicit status instead of NaN.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RECEIPT_SCHEMA_VERSION = "1"
PREDICATE_TYPE = "https://selbias-audit.dev/selection-bias-receipt/v1"

Share = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True
    )


class Provided(_Model):
    """A fact only the user knows: its value, or an explicit note that it is missing."""

    status: Literal["provided", "missing"]
    value: str | None = None
    """The user's statement, when provided."""


class MetricValue(_Model):
    """A metric that may fail to compute: a finite value, or a status that says why not."""

    status: Literal["ok", "non_finite", "not_computed"]
    value: float | None = None
    detail: str | None = None
    """Why the value is missing, when it is."""


class MetricDefinition(_Model):
    """Metadata of one metric so that readers need not guess its direction or range."""

    name: str
    description: str
    higher_is_better: bool
    lower_bound: float | None = None
    upper_bound: float | None = None
    unit: str


# --------------------------------------------------------------------------------------------
# The audited setting
# --------------------------------------------------------------------------------------------


class TargetDistribution(_Model):
    """The global distribution the pipeline should stay close to."""

    source: str
    """Where the target came from (``sklearn:digits``, ``gaussian`` or a file)."""
    description: str
    samples: int
    dimension: int
    """Feature dimension after the transform."""
    transform: str
    """Feature transform fitted on the target only."""
    mode_shares: list[Share]
    """Global share p*(m) of each mode."""


class ClientReference(_Model):
    """One silo's local reference."""

    client: int
    size: int
    mode_shares: list[Share]
    total_variation: Share
    """Total-variation distance between this client's mode shares and the global ones."""


class NonIidSeverity(_Model):
    """How far the client references are from the global mode shares."""

    rule: str
    parameters: dict[str, float | int | str | list[int]]
    mean_total_variation: Share
    """Mean over clients of the total-variation distance to the global mode shares."""
    max_total_variation: Share


class CandidateGeneration(_Model):
    """How candidates were produced each round."""

    process: Literal["re-run", "replay"]
    """``re-run``: this tool re-ran the loop; ``replay``: candidates logged by the pipeline."""
    generator: str
    parameters: dict[str, float | int | str | None]
    paradigm: Literal["replace", "accumulate", "accumulate_subsample"] | None
    rounds: int
    initial_size: int | None
    """Size of the real training set D_0."""
    train_size: int | None
    """Subsample size of accumulate_subsample."""


class SelectionBudget(_Model):
    """The selection budget n/N."""

    select: int
    """Samples kept per round, n."""
    candidates: int
    """Candidates per round, N."""
    ratio: Share


class BaselineStatus(_Model):
    """Whether a kind of baseline ran and under which labels."""

    ran: bool
    selectors: list[str]
    note: str | None = None


class Environment(_Model):
    """Compute environment of the audit."""

    python: str
    platform: str
    torch: str
    device: str
    cpu_count: int
    packages: dict[str, str]
    deterministic_algorithms: bool
    ot_dtype: str


class CodeRevision(_Model):
    """Revisions of this tool and of the audited pipeline."""

    tool_version: str
    tool_revision: Provided
    """Git revision of selbias-audit when run from a checkout."""
    pipeline_revision: Provided
    """Revision of the audited pipeline, as stated in the run description."""


class Licenses(_Model):
    """License status of data and model."""

    data: Provided
    model: Provided


class FileDigest(_Model):
    """A file and its SHA-256 digest."""

    path: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    role: str


class Governance(_Model):
    """The governance standard's fields, one typed field each."""

    target_distribution: TargetDistribution
    local_references: list[ClientReference]
    pooling_restriction: Provided
    """Why raw data cannot be pooled."""
    candidate_generation: CandidateGeneration
    selection_budget: SelectionBudget
    scoring_metric: str
    """What the audited selector scores candidates by."""
    verifier_scope: Literal["local", "collaborative", "none"]
    """Whether the audited verifier sees one silo's reference or all of them."""
    partition_rule: str
    client_count: int
    reference_size_per_client: int
    non_iid_severity: NonIidSeverity
    random_baseline: BaselineStatus
    local_selection_baseline: BaselineStatus
    collaborative_proxy_baseline: BaselineStatus
    compute_environment: Environment
    code_revision: CodeRevision
    artifacts: list[FileDigest]
    """Files this audit generated beside the receipt (figures, tables)."""
    licenses: Licenses


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


class TailMode(_Model):
    """A mode in the tail set, and why it is there."""

    mode: int
    name: str
    target_share: Share
    reference_share: Share | None
    reasons: list[Literal["globally_rare", "underrepresented_by_verifier"]]


class Modes(_Model):
    """How samples were put into modes and which modes form the tail."""

    kind: str
    description: str
    names: list[str]
    tail: list[TailMode]
    tail_rule: str


class RoundMetrics(_Model):
    """Metrics of one selector run at one round."""

    round: int
    tail_retention: Share
    trace_ratio: Annotated[float, Field(ge=0.0)]
    frechet_distance: MetricValue
    sinkhorn_divergence: MetricValue
    pool_size: int
    pool_mode_shares: list[Share]
    selected_mode_shares: list[Share]


class DecayFit(_Model):
    """Power-law fit Tr(Sigma_t) ~ t^-psi over a window of rounds."""

    status: Literal["ok", "too_few_rounds", "non_positive"]
    psi: float | None = None
    stderr: float | None = None
    r_squared: float | None = None
    window: list[int]


class SolveSummary(_Model):
    """Health of one OT solve."""

    round: int
    purpose: str
    client: int | None
    backend: str
    dtype: str
    blur: float
    epsilon: float
    iterations: int
    converged: bool
    marginal_error: float


class SelectorRun(_Model):
    """One selector run over all rounds with one seed."""

    label: str
    method: str
    role: Literal["audited", "random", "baseline"]
    scope: Literal["local", "collaborative", "none"]
    options: dict[str, Any]
    seed: int
    """Seed of this run's selection stream."""
    rounds: list[RoundMetrics]
    decay: DecayFit
    solves: list[SolveSummary]
    seconds: Annotated[float, Field(ge=0.0)]


class Band(_Model):
    """The random baseline's spread at one round."""

    round: int
    mean: float
    std: float
    min: float
    max: float


class GateCheck(_Model):
    """One rule of the gate and its outcome."""

    name: str
    passed: bool
    rule: str
    detail: str
    rounds_failed: list[int] = []


class Verdict(_Model):
    """The outcome of the gate."""

    passed: bool
    summary: str
    checks: list[GateCheck]


class Seeds(_Model):
    """Every seed the audit used."""

    run: int
    streams: dict[str, int]
    """Derived seed of each random stream, by purpose."""


class Receipt(_Model):
    """The selection-bias receipt."""

    schema_version: Literal["1"] = RECEIPT_SCHEMA_VERSION
    tool: str = "selbias-audit"
    run_name: str
    created_at: str
    """UTC time the audit finished (ISO 8601)."""
    started_at: str
    audited_selector: str
    verdict: Verdict
    governance: Governance
    modes: Modes
    runs: list[SelectorRun]
    random_band: list[Band]
    """Tail retention of the random baseline across seeds, per round."""
    metrics: list[MetricDefinition]
    seeds: Seeds
    run_description: FileDigest
    inputs: list[FileDigest]
    counterfactual_note: str | None = None
    """Present for replays: baselines were applied to the logged candidate pools."""
    signing_key_id: str
    """SHA-256 of the raw Ed25519 public key that signs the envelope."""
    citations: list[str]
