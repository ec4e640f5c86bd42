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
    """A fact that only the user can supply: its value, or an explicit note that it is missing."""

    status: Literal["provided", "missing"]
    """Whether the user supplied the fact; a missing fact is shown in red in the PDF."""
    value: str | None = None
    """The user's statement, when provided."""


class MetricValue(_Model):
    """A metric that may fail to compute: a finite value, or a status that gives the reason."""

    status: Literal["ok", "non_finite", "not_computed"]
    """'ok' with a finite value, or why there is no value."""
    value: float | None = None
    """The metric's value when 'status' is 'ok'."""
    detail: str | None = None
    """Reason the value is missing, when it is."""


class MetricDefinition(_Model):
    """Metadata of one metric so that readers need not guess its direction or range."""

    name: str
    """Metric name as used in the per-round records."""
    description: str
    """Computation of the metric and how to read it."""
    higher_is_better: bool
    """Direction in which the metric improves. For a metric with an ideal value, the
    direction on the side of the ideal where values usually fall."""
    ideal: float | None = None
    """Value at which the metric is best, when it has one (1 for a ratio to the target)."""
    lower_bound: float | None = None
    """Smallest possible value, if bounded."""
    upper_bound: float | None = None
    """Largest possible value, if bounded."""
    unit: str
    """Unit of the values."""


# --------------------------------------------------------------------------------------------
# The audited setting
# --------------------------------------------------------------------------------------------


class TargetDistribution(_Model):
    """The global distribution the pipeline should stay close to."""

    source: str
    """Source of the target ('sklearn:digits', 'gaussian' or a file)."""
    description: str
    """Human-readable summary of the target data."""
    samples: int
    """Number of target samples used as the global distribution."""
    dimension: int
    """Feature dimension after the transform."""
    transform: str
    """Feature transform fitted on the target only."""
    mode_shares: list[Share]
    """Global share p*(m) of each mode."""


class ClientReference(_Model):
    """One silo's local reference."""

    client: int
    """Client (silo) index."""
    size: int
    """Reference size M_k."""
    mode_shares: list[Share]
    """Share of each mode in this client's reference."""
    total_variation: Share
    """Total-variation distance between this client's mode shares and the global ones."""


class NonIidSeverity(_Model):
    """How far the client references are from the global mode shares."""

    rule: str
    """Partition rule that cut the references."""
    parameters: dict[str, float | int | str | list[int]]
    """Parameters of the rule (for example alpha, classes per client)."""
    mean_total_variation: Share
    """Mean over clients of the total-variation distance to the global mode shares."""
    max_total_variation: Share
    """Largest client total-variation distance to the global mode shares."""


class CandidateGeneration(_Model):
    """Process that produced the candidates each round."""

    process: Literal["re-run", "replay"]
    """'re-run': this tool re-ran the loop; 'replay': candidates logged by the pipeline."""
    generator: str
    """Generator kind (for a replay: as stated by the user)."""
    parameters: dict[str, float | int | str | None]
    """Generator or log parameters."""
    paradigm: Literal["replace", "accumulate", "accumulate_subsample"] | None
    """Rule that updates the training pool each round."""
    rounds: int
    """Number of rounds T."""
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
    """n / N."""


class BaselineStatus(_Model):
    """Whether a kind of baseline ran and under which labels."""

    ran: bool
    """Whether this kind of baseline ran in the audit."""
    selectors: list[str]
    """Labels of the selector runs of this kind."""
    note: str | None = None
    """How to add the baseline when it did not run, or how it ran."""


class Environment(_Model):
    """Compute environment of the audit."""

    python: str
    """Python version."""
    platform: str
    """Operating system and architecture."""
    torch: str
    """PyTorch version."""
    device: str
    """Device the selectors and metrics ran on."""
    cpu_count: int
    """Logical CPUs of the machine."""
    packages: dict[str, str]
    """Versions of the numerical and signing libraries."""
    deterministic_algorithms: bool
    """Whether torch's deterministic-algorithms mode was on."""
    ot_dtype: str
    """Floating type of the selectors' OT solves."""


class CodeRevision(_Model):
    """Revisions of this tool and of the audited pipeline."""

    tool_version: str
    """Version of selbias-audit."""
    tool_revision: str
    """Git commit of selbias-audit when run from a checkout, else a note that the tool was
    installed from a package (the version above then identifies it)."""
    pipeline_revision: Provided
    """Revision of the audited pipeline, as stated in the run description."""


class Licenses(_Model):
    """License status of data and model."""

    data: Provided
    """License of the data (target and references)."""
    model: Provided
    """License of the generative model."""


class FileDigest(_Model):
    """A file and its SHA-256 digest."""

    path: str
    """Path as given to the audit."""
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """SHA-256 of the file's bytes, lowercase hex."""
    role: str
    """Role of the file in the audit."""


class Governance(_Model):
    """The governance standard's fields, one typed field each."""

    target_distribution: TargetDistribution
    """The global distribution the pipeline should stay close to."""
    local_references: list[ClientReference]
    """Each silo's local reference distribution."""
    pooling_restriction: Provided
    """Reason raw data cannot be pooled."""
    candidate_generation: CandidateGeneration
    """Process that produced the candidates each round."""
    selection_budget: SelectionBudget
    """Samples kept per round over candidates per round."""
    scoring_metric: str
    """Score the audited selector ranks candidates by."""
    verifier_scope: Literal["local", "collaborative", "none"]
    """Scope of the audited verifier: one silo's reference, all of them, or none."""
    partition_rule: str
    """How the target was cut into client references."""
    client_count: int
    """Number of clients K."""
    reference_size_per_client: int
    """Reference size M requested per client."""
    non_iid_severity: NonIidSeverity
    """Partition parameters and the measured divergence of client mode shares."""
    random_baseline: BaselineStatus
    """Uniform selection on the same candidates, several seeds."""
    local_selection_baseline: BaselineStatus
    """Selectors that see one client's reference."""
    collaborative_proxy_baseline: BaselineStatus
    """Selectors that score against all silos (Scheme I, Scheme II)."""
    compute_environment: Environment
    """Machine and library versions."""
    code_revision: CodeRevision
    """Revisions of this tool and of the audited pipeline."""
    artifacts: list[FileDigest]
    """Files this audit generated beside the receipt (figures, tables)."""
    licenses: Licenses
    """License status of data and model."""


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


class TailMode(_Model):
    """A mode in the tail set, and why it is there."""

    mode: int
    """Mode id."""
    name: str
    """Mode name (class label or cell)."""
    target_share: Share
    """Global share p*(m)."""
    reference_share: Share | None
    """Share in the audited verifier's reference, when it has one."""
    reasons: list[Literal["globally_rare", "underrepresented_by_verifier"]]
    """Why the mode is in the tail set."""


class Modes(_Model):
    """How samples were put into modes and which modes form the tail."""

    kind: str
    """How samples are put into modes (labels, clusters, classifier, shells)."""
    description: str
    """One sentence on the mode definition."""
    names: list[str]
    """Name of each mode."""
    tail: list[TailMode]
    """The tail set, fixed once for every selector."""
    tail_rule: str
    """The rule that chose the tail set."""


SAMPLE_METRICS = ("precision", "recall", "density", "coverage", "vendi_ratio")
"""Names of the sample-level metric fields of RoundMetrics, in reporting order."""


class RoundMetrics(_Model):
    """Metrics of one selector run at one round."""

    round: int
    """Round t, from 1."""
    tail_retention: Share
    """Sum over tail modes of min(pool share, target share) over the tail's target mass."""
    trace_ratio: Annotated[float, Field(ge=0.0)]
    """Covariance trace of the pool over that of the target."""
    frechet_distance: MetricValue
    """Frechet distance between Gaussian fits of pool and target."""
    sinkhorn_divergence: MetricValue
    """Debiased Sinkhorn divergence between pool and target."""
    precision: MetricValue | None = None
    """Share of pool points inside the target's k-nearest-neighbour balls."""
    recall: MetricValue | None = None
    """Share of target points inside the pool's k-nearest-neighbour balls."""
    density: MetricValue | None = None
    """Target balls around each pool point, averaged and divided by k."""
    coverage: MetricValue | None = None
    """Share of target points whose own ball contains a pool point."""
    vendi_ratio: MetricValue | None = None
    """Vendi score of the pool over that of the target, cosine kernel."""
    pool_size: int
    """Samples in the training pool after the round."""
    pool_mode_shares: list[Share]
    """Share of each mode in the training pool."""
    selected_mode_shares: list[Share]
    """Share of each mode in this round's kept batch."""


class DecayFit(_Model):
    """Power-law fit Tr(Sigma_t) ~ t^-psi over a window of rounds."""

    status: Literal["ok", "too_few_rounds", "non_positive"]
    """'ok', or why no exponent was fitted."""
    psi: float | None = None
    """Decay exponent; positive means the trace shrinks."""
    stderr: float | None = None
    """Standard error of psi from the least-squares fit."""
    r_squared: float | None = None
    """Goodness of fit on log-log."""
    window: list[int]
    """First and last round of the fit."""


class SolveSummary(_Model):
    """Health of one OT solve."""

    round: int
    """Round of the solve."""
    purpose: str
    """What the solve computed (potentials, a barycenter step, scores)."""
    client: int | None
    """Client whose reference was involved; none for a server-side solve."""
    backend: str
    """Solver implementation."""
    dtype: str
    """Floating type of the solve."""
    blur: float
    """Entropic blur sigma in standardised feature units."""
    epsilon: float
    """Entropic regularisation epsilon = blur ** 2."""
    iterations: int
    """Sinkhorn iterations, annealing steps included."""
    converged: bool
    """Whether the marginal error fell below the solver tolerance."""
    marginal_error: float
    """L1 error of the plan's marginals after the last iteration."""


class SelectorRun(_Model):
    """One selector run over all rounds with one seed."""

    label: str
    """Display name of the selector run."""
    method: str
    """Selector method."""
    role: Literal["audited", "random", "baseline"]
    """The audited selector, a random-baseline seed, or another baseline."""
    scope: Literal["local", "collaborative", "none"]
    """Which references the selector sees."""
    options: dict[str, Any]
    """The selector's options as given in the run description."""
    seed: int
    """Seed of this run's selection stream."""
    rounds: list[RoundMetrics]
    """Metrics per round."""
    decay: DecayFit
    """Power-law fit of the trace ratio over rounds."""
    solves: list[SolveSummary]
    """Health of every OT solve of this run."""
    seconds: Annotated[float, Field(ge=0.0)]
    """Wall time of the run."""


class Band(_Model):
    """The random baseline's spread at one round."""

    round: int
    """Round t."""
    mean: float
    """Mean tail retention across random seeds."""
    std: float
    """Sample standard deviation across seeds."""
    min: float
    """Lowest tail retention across seeds."""
    max: float
    """Highest tail retention across seeds."""


class GateCheck(_Model):
    """One rule of the gate and its outcome."""

    name: str
    """Rule name."""
    passed: bool
    """Whether the rule held."""
    rule: str
    """The rule in words."""
    detail: str
    """The numbers behind the outcome."""
    rounds_failed: list[int] = []
    """Rounds at which the rule failed."""


class Verdict(_Model):
    """The outcome of the gate."""

    passed: bool
    """True when every gate rule held."""
    summary: str
    """One-line verdict."""
    checks: list[GateCheck]
    """Each rule and its outcome."""


class Seeds(_Model):
    """Every seed the audit used."""

    run: int
    """Root seed of the run description."""
    streams: dict[str, int]
    """Derived seed of each random stream, by purpose."""


class Receipt(_Model):
    """The selection-bias receipt."""

    schema_version: Literal["1"] = RECEIPT_SCHEMA_VERSION
    """Version of this receipt schema."""
    tool: str = "selbias-audit"
    """Tool that issued the receipt."""
    run_name: str
    """Name of the run description."""
    created_at: str
    """UTC time the audit finished (ISO 8601)."""
    started_at: str
    """UTC time the audit started (ISO 8601)."""
    audited_selector: str
    """Label of the audited selector run."""
    verdict: Verdict
    """Outcome of the gate."""
    governance: Governance
    """The governance standard's fields."""
    modes: Modes
    """Mode definition and the tail set."""
    runs: list[SelectorRun]
    """Every selector run: the audited one, baselines and random seeds."""
    random_band: list[Band]
    """Tail retention of the random baseline across seeds, per round."""
    metrics: list[MetricDefinition]
    """Definitions of the reported metrics."""
    seeds: Seeds
    """Every seed the audit used."""
    run_description: FileDigest
    """The run description file and its digest."""
    inputs: list[FileDigest]
    """Every data file the audit read, with digests."""
    counterfactual_note: str | None = None
    """Present for replays: baselines were applied to the logged candidate pools."""
    signing_key_id: str
    """SHA-256 of the raw Ed25519 public key that signs the envelope."""
    citations: list[str]
    """References of the methods that ran."""
