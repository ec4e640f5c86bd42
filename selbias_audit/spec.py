"""Run description: the pydantic models of ``run.yaml`` and their loading.

A run description says what the global target is, how the client references are cut
from it, how candidates are generated, which selector is audited against which
baselines, how modes and tail modes are defined, and the gate policy. Unknown keys
are rejected so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selbias_audit.errors import SpecError

SCHEMA_VERSION = "1"

# Upper bound on N per round: the loop holds N x d float64 candidates per selector run,
# and larger pools belong in a replay that streams them.
MAX_CANDIDATES = 5_000_000


class _Model(BaseModel):
    # strict: YAML's true, "10" or 2.0 are not silently read as the integer a field needs.
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, use_attribute_docstrings=True,
        strict=True,
    )


# --------------------------------------------------------------------------------------------
# Target
# --------------------------------------------------------------------------------------------


class TransformSpec(_Model):
    """Feature transform fitted on the target only and applied to every feature set."""

    standardize: bool = True
    """Centre and scale each feature by the target's mean and standard deviation."""
    pca: Annotated[int, Field(ge=1)] | None = None
    """Keep this many principal components of the (standardised) target."""


class GaussianTargetSpec(_Model):
    """The synthetic Gaussian construction of the collapse theory (d-dimensional)."""

    dim: Annotated[int, Field(ge=1, le=512)] = 10
    """Dimension d."""
    size: Annotated[int, Field(ge=10)] = 2000
    """Number of target samples drawn to stand for the global distribution."""
    seed: int | None = None
    """Seed of the construction (mu*, Sigma*, biased target); defaults to the run seed."""


class TargetSpec(_Model):
    """The global distribution that the pipeline should stay close to."""

    source: str
    """``sklearn:<name>`` (digits, iris, wine, breast_cancer), ``gaussian``, or a ``.npz`` path."""
    gaussian: GaussianTargetSpec = GaussianTargetSpec()
    """Parameters of ``source: gaussian``."""
    transform: TransformSpec = TransformSpec()
    """Feature transform fitted on the target."""
    max_samples: Annotated[int, Field(ge=10)] | None = None
    """Use a seeded uniform subsample of at most this many target rows."""

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if value == "gaussian" or value.startswith("sklearn:") or value.endswith(".npz"):
            return value
        raise ValueError(
            f"unknown target source {value!r}; use 'sklearn:digits' (or another scikit-learn "
            "bundled data set), 'gaussian', or the path of a .npz file with arrays X and y"
        )


# --------------------------------------------------------------------------------------------
# References and partition
# --------------------------------------------------------------------------------------------


class IidPartition(_Model):
    """Uniform random split: every client sees the global mode shares."""

    rule: Literal["iid"] = "iid"


class DirichletPartition(_Model):
    """Label skew: for each class, client shares drawn from Dir(alpha)."""

    rule: Literal["dirichlet"] = "dirichlet"
    alpha: Annotated[float, Field(gt=0)] = 0.5
    """Concentration; small values give clients dominated by one or two classes."""


class ExDirPartition(_Model):
    """Extended Dirichlet: each client owns C classes, shares within a class from Dir(alpha)."""

    rule: Literal["exdir"] = "exdir"
    classes_per_client: Annotated[int, Field(ge=1)] = 1
    """C, the number of distinct classes each client owns."""
    alpha: Annotated[float, Field(gt=0)] = 0.1
    """Concentration of the split of one class among its owners."""


class SingleClassPartition(_Model):
    """One class per client: client k gets class ``labels[k]``."""

    rule: Literal["single_class"] = "single_class"
    labels: list[int] | None = None
    """Class of each client in client order; defaults to classes 0, 1, 2, ... in order."""


PartitionSpec = Annotated[
    Union[IidPartition, DirichletPartition, ExDirPartition, SingleClassPartition],
    Field(discriminator="rule"),
]


class ReferencesSpec(_Model):
    """How the target is cut into per-client (per-silo) local references."""

    clients: Annotated[int, Field(ge=1, le=1000)] = 10
    """Number of clients K."""
    per_client: Annotated[int, Field(ge=1)] = 100
    """Reference size M per client (a client with fewer rows keeps all of them)."""
    partition: PartitionSpec = IidPartition()
    """Partition rule."""


# --------------------------------------------------------------------------------------------
# Generator and loop
# --------------------------------------------------------------------------------------------


class GeneratorSpec(_Model):
    """How candidates are produced when the loop is re-run."""

    kind: Literal["gaussian", "class_gaussian"] = "class_gaussian"
    """``gaussian``: one MLE Gaussian; ``class_gaussian``: one Gaussian per mode with priors."""
    shrinkage: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Covariance shrinkage toward the scaled identity (class_gaussian)."""
    ridge: Annotated[float, Field(ge=0)] = 1e-6
    """Ridge added to every fitted covariance."""


class LoopSpec(_Model):
    """The recursive round loop."""

    paradigm: Literal["replace", "accumulate", "accumulate_subsample"] = "accumulate_subsample"
    """Replace trains on this round's selection only; Accumulate on all data so far;
    Accumulate-Subsample on a fixed-size uniform subsample of all data so far."""
    rounds: Annotated[int, Field(ge=1, le=10_000)] = 10
    """Number of rounds T."""
    select: Annotated[int, Field(ge=1, le=MAX_CANDIDATES)]
    """Samples kept per round, n."""
    candidates: Annotated[int, Field(ge=1, le=MAX_CANDIDATES)] | None = None
    """Candidates drawn per round, N; defaults to 4 n."""
    initial_size: Annotated[int, Field(ge=2)] | None = None
    """Size of the real training set D_0 drawn from the target; defaults to the whole target."""
    train_size: Annotated[int, Field(ge=2)] | None = None
    """Subsample size of accumulate_subsample; defaults to the size of D_0."""

    @property
    def candidate_count(self) -> int:
        """Return N, the candidates drawn per round."""
        return self.candidates if self.candidates is not None else 4 * self.select

    @model_validator(mode="after")
    def _check_budget(self) -> LoopSpec:
        if self.select > self.candidate_count:
            raise ValueError(
                f"select (n = {self.select}) is larger than candidates (N = "
                f"{self.candidate_count}); a selector keeps n of N, so set n <= N"
            )
        return self


# --------------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------------


# Entropic blur in standardised feature units. Below 1e-3 (epsilon 1e-6) a float32 solve
# rounds C / eps to whole units, so its potentials are noise. Above 1e3 every plan is the
# product of the marginals. Both ends make the annealing schedule overflow or vanish.
Blur = Annotated[float, Field(ge=1e-3, le=1e3)]


class _SelectorBase(_Model):
    label: str | None = None
    """Display name in the receipt; defaults to a name built from the method and options."""


class RandomSelectorSpec(_SelectorBase):
    """Uniform selection without replacement."""

    method: Literal["random"] = "random"


class CenterMatchSpec(_SelectorBase):
    """Keep the candidates closest to the mean of one client's reference."""

    method: Literal["center_match"] = "center_match"
    client: Annotated[int, Field(ge=0)] = 0
    """Client whose reference the verifier compares candidates with."""


class LocalSinkhornSpec(_SelectorBase):
    """Keep the candidates with the lowest debiased Sinkhorn score against one client."""

    method: Literal["local_sinkhorn"] = "local_sinkhorn"
    client: Annotated[int, Field(ge=0)] = 0
    blur: Blur = 0.05
    scaling: Annotated[float, Field(gt=0, lt=1)] = 0.9


class KMeansSpec(_SelectorBase):
    """k-means with k = n on the candidates, one representative per cluster."""

    method: Literal["kmeans"] = "kmeans"
    max_iter: Annotated[int, Field(ge=1)] = 100


class CovMatchSpec(_SelectorBase):
    """Greedy selection that matches one client's covariance (Frobenius) after PCA."""

    method: Literal["covmatch"] = "covmatch"
    client: Annotated[int, Field(ge=0)] = 0
    pca: Annotated[int, Field(ge=1)] = 32


class Scheme1Spec(_SelectorBase):
    """Collaborative scoring: per-client Sinkhorn potentials plus submodular greedy."""

    method: Literal["scheme1"] = "scheme1"
    blur: Blur = 0.05
    """Entropic blur sigma in standardised feature units; epsilon = blur ** 2."""
    scaling: Annotated[float, Field(gt=0, lt=1)] = 0.9
    """Epsilon-annealing factor of the Sinkhorn solver."""
    weights: Literal["uniform", "size"] = "uniform"
    """Silo weights: equal, or proportional to reference size."""
    proxy_t: Annotated[float, Field(gt=0, le=1)] | None = None
    """Geodesic proxy: score against ((1 - t) Id + t T)#candidates instead of the reference."""


class Scheme2Spec(_SelectorBase):
    """Collaborative free-support Wasserstein barycenter as the reference."""

    method: Literal["scheme2"] = "scheme2"
    blur: Blur = 0.05
    scaling: Annotated[float, Field(gt=0, lt=1)] = 0.9
    weights: Literal["uniform", "size"] = "uniform"
    projection: Literal["debiased", "barycentric"] = "debiased"
    """``debiased``: map x - N grad S_eps (as published); ``barycentric``: pure projection."""
    max_iter: Annotated[int, Field(ge=1)] = 10
    """Maximum barycenter steps."""
    tol: Annotated[float, Field(ge=0)] = 0.0
    """Stop when the mean support displacement falls below tol (0: run max_iter steps)."""
    reuse: bool = False
    """Warm-start each round's barycenter from the previous round's support."""


class TopAlphaSpec(_SelectorBase):
    """Top-alpha selection toward a biased target (negative Mahalanobis distance)."""

    method: Literal["top_alpha"] = "top_alpha"
    client: Annotated[int, Field(ge=0)] | None = None
    """Use this client's reference mean and covariance as the biased target; None uses the
    biased target of the Gaussian construction (``target.source: gaussian`` only)."""


SelectorSpec = Annotated[
    Union[
        RandomSelectorSpec,
        CenterMatchSpec,
        LocalSinkhornSpec,
        KMeansSpec,
        CovMatchSpec,
        Scheme1Spec,
        Scheme2Spec,
        TopAlphaSpec,
    ],
    Field(discriminator="method"),
]


def selector_label(spec: Any) -> str:
    """Return the display name of a selector spec."""
    if spec.label:
        return str(spec.label)
    client = getattr(spec, "client", None)
    if client is not None:
        return f"{spec.method}[client {client}]"
    return str(spec.method)


class SelectionSpec(_Model):
    """The audited selector and the baselines run beside it on the same candidates."""

    audited: SelectorSpec | None = None
    """The selector under audit; required for a re-run. A replay audits the logged selection
    instead and takes no ``audited``."""
    compare: list[SelectorSpec] = []
    """Baselines run beside it; the random baseline is always run in addition."""
    random_seeds: Annotated[int, Field(ge=2, le=100)] = 5
    """Number of seeds of the random baseline (its spread sets the default gate margin)."""


# --------------------------------------------------------------------------------------------
# Modes, gate, governance, output
# --------------------------------------------------------------------------------------------


class TailSpec(_Model):
    """How tail modes are chosen, once per audit."""

    rare_mass: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Globally rare: the rarest modes that together hold at most this share of target mass."""
    underrepresented_ratio: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Locally unfamiliar: modes whose share in the audited verifier's reference is below this
    fraction of their global share."""
    reference_client: Annotated[int, Field(ge=0)] | None = None
    """Client whose reference defines 'under-represented'; defaults to the audited selector's."""


class ModesSpec(_Model):
    """How samples are put into modes."""

    kind: Literal["labels", "clusters", "shells"] = "labels"
    """``labels``: classes or topics; ``clusters``: k-means cells fitted on the target;
    ``shells``: shells of Mahalanobis radius under the target's Gaussian fit, cut at
    quantiles of the target so each shell holds a known share of mass (outer shells are
    the rare tail)."""
    clusters: Annotated[int, Field(ge=2, le=1000)] = 10
    """k for ``kind: clusters``."""
    tail: TailSpec = TailSpec()


class GateSpec(_Model):
    """The CI policy: when the audited selector fails."""

    rounds: Literal["all", "last"] | list[Annotated[int, Field(ge=1)]] = "all"
    """Rounds at which tail retention is compared with random."""
    margin: Literal["auto"] | Annotated[float, Field(ge=0)] = "auto"
    """Allowed shortfall below the random mean; ``auto`` is the random baseline's standard
    deviation across seeds at that round."""
    max_frechet: Annotated[float, Field(gt=0)] | None = None
    """Also fail when the audited selector's final Frechet distance exceeds this."""
    require_governance: bool = False
    """Fail when a governance field that only the user knows is missing."""
    fail_on_nonconvergence: bool = False
    """Fail when any OT solve of the audited selector did not converge."""


class LicenseSpec(_Model):
    """License status of the data and the model."""

    data: str | None = None
    model: str | None = None


class GovernanceSpec(_Model):
    """Facts that only the user can supply; the receipt marks missing ones as missing."""

    pooling_restriction: str | None = None
    """Why raw data cannot be pooled across silos."""
    license: LicenseSpec = LicenseSpec()
    pipeline_revision: str | None = None
    """Code revision of the audited pipeline (for example a git commit)."""
    owner: str | None = None
    """Team or person responsible for the pipeline."""


class OutputSpec(_Model):
    """Where the receipt, its envelope and the PDF go."""

    dir: str = "out"
    """Output folder, relative to the run description's folder unless absolute."""
    pdf: bool = True
    """Render the PDF receipt."""


class ReplaySpec(_Model):
    """Audit the rounds that the user's own pipeline logged instead of re-running the loop.

    The log folder contains ``manifest.json``, one ``rounds/round_NNNN.npz`` per round, one
    ``clients/client_NNN.npz`` per client reference and optionally ``initial.npz`` (the
    real training set D_0). Logged features are in the target's raw feature space, and
    ``target.transform`` is applied to them as to the target.
    """

    log: Annotated[str, Field(min_length=1)]
    """Log folder, relative to the run description's folder unless absolute."""
    verifier_scope: Literal["local", "collaborative", "none"]
    """What the pipeline's selector compared candidates with: one silo's reference
    (``local``), every silo's reference (``collaborative``) or none (``none``)."""
    verifier_client: Annotated[int, Field(ge=0)] | None = None
    """Client whose logged reference the pipeline's local verifier used; it decides which
    modes count as under-represented by the verifier."""
    scoring_metric: str | None = None
    """What the pipeline's selector scores candidates by, as stated in the receipt."""
    partition: str | None = None
    """How the logged client references were formed (for example one site per client)."""
    paradigm: Literal["replace", "accumulate", "accumulate_subsample"] | None = None
    """Pool rule of the pipeline; needed when the manifest states none, and must agree with
    the manifest when both do. Accumulate-Subsample measures the same pool as Accumulate."""
    label: Annotated[str, Field(min_length=1, max_length=200)] = "logged"
    """Display name of the logged selection in the receipt."""
    use_logged_labels: bool = True
    """Use the logged labels as modes when every logged set carries them. ``false`` predicts
    modes with a classifier fitted on the target even then, for example when the logged
    labels are the classes a generator was conditioned on rather than what samples show."""

    @model_validator(mode="after")
    def _check_client_scope(self) -> ReplaySpec:
        if self.verifier_client is not None and self.verifier_scope != "local":
            raise ValueError(
                f"replay.verifier_client = {self.verifier_client} but replay.verifier_scope = "
                f"{self.verifier_scope!r}; only a local verifier reads one client's reference"
            )
        return self


class SolverSpec(_Model):
    """Numerical settings shared by every OT solve."""

    dtype: Literal["float32", "float64"] = "float32"
    """Floating type of the Sinkhorn solves (float32 is checked against float64 in the tests)."""
    divergence_metric: bool = True
    """Compute the debiased Sinkhorn divergence of each pool to the target every round."""
    metric_blur: Blur = 0.5
    """Blur of the divergence metric, in standardised feature units."""


class RunSpec(_Model):
    """A whole audit."""

    schema_version: Literal["1"] = "1"
    name: Annotated[str, Field(min_length=1, max_length=200)] = "audit"
    seed: Annotated[int, Field(ge=0, lt=2**52)] = 0
    """Root seed; every random stream's seed is derived from it and recorded."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    target: TargetSpec
    references: ReferencesSpec = ReferencesSpec()
    generator: GeneratorSpec = GeneratorSpec()
    """Candidate generator of a re-run; ignored by a replay."""
    loop: LoopSpec | None = None
    """Round loop of a re-run; ignored by a replay. One of ``loop`` and ``replay`` is needed."""
    replay: ReplaySpec | None = None
    """Logged rounds to audit instead of re-running the loop."""
    selection: SelectionSpec
    modes: ModesSpec = ModesSpec()
    gate: GateSpec = GateSpec()
    governance: GovernanceSpec = GovernanceSpec()
    solver: SolverSpec = SolverSpec()
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _check_run_kind(self) -> RunSpec:
        if self.replay is None:
            if self.loop is None:
                raise ValueError(
                    "loop: missing; give loop: to re-run the pipeline inside the tool, or "
                    "replay: to audit rounds that the pipeline logged"
                )
            if self.selection.audited is None:
                raise ValueError(
                    "selection.audited: missing; a re-run needs the selector under audit"
                )
            return self
        if self.selection.audited is not None:
            raise ValueError(
                "selection.audited: a replay audits the selection the pipeline logged; remove "
                "selection.audited and list other selectors under selection.compare"
            )
        if "references" in self.model_fields_set:
            raise ValueError(
                "references: a replay takes the client references from the log instead of "
                "cutting them from the target; remove references: (describe the logged ones "
                "in replay.partition)"
            )
        return self

    @model_validator(mode="after")
    def _check_gate_rounds(self) -> RunSpec:
        rounds = self.gate.rounds
        total = self.loop.rounds if self.loop is not None else None
        if isinstance(rounds, list):
            if not rounds:
                raise ValueError("gate.rounds is an empty list; use all, last or round numbers")
            beyond = [r for r in rounds if total is not None and r > total]
            if beyond:
                raise ValueError(
                    f"gate.rounds {beyond} exceed loop.rounds = {total}; gate rounds 1 to {total}"
                )
        return self

    @model_validator(mode="after")
    def _check_clients(self) -> RunSpec:
        if self.replay is not None:
            # The client count of a replay is in the log; the replay setup checks it there.
            return self
        k = self.references.clients
        for path, spec in self.selector_specs_with_paths():
            client = getattr(spec, "client", None)
            if client is not None and client >= k:
                raise ValueError(
                    f"{path}.client = {client} but there are only {k} clients (0 to {k - 1})"
                )
        tail_client = self.modes.tail.reference_client
        if tail_client is not None and tail_client >= k:
            raise ValueError(f"modes.tail.reference_client = {tail_client} but clients = {k}")
        return self

    def selector_specs_with_paths(self) -> list[tuple[str, Any]]:
        """Return (field path, spec) of the audited selector (when named) and every baseline."""
        pairs: list[tuple[str, Any]] = []
        if self.selection.audited is not None:
            pairs.append(("selection.audited", self.selection.audited))
        pairs += [(f"selection.compare[{i}]", s) for i, s in enumerate(self.selection.compare)]
        return pairs

    @property
    def rerun_loop(self) -> LoopSpec:
        """Return ``loop`` of a re-run; raise ValueError for a replay, which has none."""
        if self.loop is None:
            raise ValueError("this run description replays logged rounds and has no loop")
        return self.loop

    @property
    def audited_selector(self) -> Any:
        """Return ``selection.audited`` of a re-run; raise ValueError for a replay."""
        if self.selection.audited is None:
            raise ValueError("this run description replays logged rounds; it names no selector")
        return self.selection.audited


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that rejects duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid run description ({error.error_count()} problem(s))"]
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"] if not isinstance(part, int) or True)
        loc = loc.replace(".[", "[")
        received = item.get("input")
        if item["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (check the spelling; see schemas/run.schema.json)")
            continue
        if not loc:
            # A check across several fields names them in its own message.
            lines.append(f"  {item['msg'].removeprefix('Value error, ')}")
            continue
        shown = repr(received)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  {loc}: {item['msg']} (received {shown})")
    return "\n".join(lines)


def load_spec(path: str | Path) -> tuple[RunSpec, bytes]:
    """Load and validate a run description; return the model and the file's bytes.

    Raises :class:`SpecError` naming the file, the field path and the value received.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: run description not found") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read run description ({exc.strerror})") from None
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except UnicodeDecodeError:
        raise SpecError(f"{path}: run description is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(
            f"{path}: a run description is a YAML mapping, got {type(data).__name__}",
            hint="start from examples/digits.yaml",
        )
    _reject_non_finite(path, data, "")
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(path, exc)) from None
    return spec, raw


def _reject_non_finite(path: Path, node: Any, where: str) -> None:
    # YAML reads .nan and .inf as floats; no field of a run description accepts them.
    if isinstance(node, float) and not math.isfinite(node):
        raise SpecError(f"{path}: {where.lstrip('.')}: non-finite number {node!r}")
    if isinstance(node, dict):
        for key, value in node.items():
            _reject_non_finite(path, value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _reject_non_finite(path, value, f"{where}[{i}]")


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 digest of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def run_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the run description."""
    schema = RunSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "selbias-audit run description"
    return schema
