"""Build a selector from its spec, and describe what it scores by."""

from __future__ import annotations

from typing import Any, Literal

from selbias_audit.selectors.base import Selector

Scope = Literal["local", "collaborative", "none"]

# Scoring rule of each method, for the receipt's "scoring metric" field.
SCORING = {
    "random": "none (uniform draw without replacement)",
    "center_match": "Euclidean distance to the mean of one client's reference (lower kept)",
    "local_sinkhorn": "calibrated debiased Sinkhorn potential against one client's reference",
    "kmeans": "distance to the k-means centroid of each candidate cluster (one kept per cluster)",
    "covmatch": "Frobenius distance between the selection's and one client's covariance (PCA)",
    "scheme1": "per-client debiased Sinkhorn calibrated gradients, submodular greedy over silos",
    "scheme2": "calibrated Sinkhorn score against a collaborative Wasserstein barycenter",
    "top_alpha": "Mahalanobis distance to a biased target mean under its covariance",
}

CITATIONS = {
    "center_match": ["[he2023] He et al. 2023, CenterMatch"],
    "kmeans": ["[lin2023] Lin et al. 2023, k-means selection"],
    "scheme1": [
        "[qiao2026] Qiao et al. 2026, When Sample Selection Bias Precipitates Model Collapse",
        "[feydy2019] Feydy et al. 2019, Interpolating between OT and MMD (debiased Sinkhorn)",
        "[nemhauser1978] Nemhauser, Wolsey and Fisher 1978, greedy submodular maximisation",
    ],
    "scheme2": [
        "[qiao2026] Qiao et al. 2026, When Sample Selection Bias Precipitates Model Collapse",
        "[cuturi2014] Cuturi and Doucet 2014, fast computation of Wasserstein barycenters",
    ],
    "local_sinkhorn": ["[feydy2019] Feydy et al. 2019, debiased Sinkhorn divergences"],
    "top_alpha": ["[qiao2026] Qiao et al. 2026, Gaussian model of selection-induced collapse"],
}


def selector_scope(spec: Any) -> Scope:
    """Return which references a selector uses: one client's, all of them, or none."""
    if spec.method in ("scheme1", "scheme2"):
        return "collaborative"
    if spec.method in ("random", "kmeans"):
        return "none"
    return "local"


def build_selector(spec: Any) -> Selector:
    """Return a fresh selector instance for ``spec`` (one per run: selectors keep state)."""
    method = spec.method
    if method == "random":
        from selbias_audit.selectors.baselines import RandomSelector

        return RandomSelector(spec)
    if method == "center_match":
        from selbias_audit.selectors.baselines import CenterMatchSelector

        return CenterMatchSelector(spec)
    if method == "local_sinkhorn":
        from selbias_audit.selectors.local import LocalSinkhornSelector

        return LocalSinkhornSelector(spec)
    if method == "kmeans":
        from selbias_audit.selectors.kmeans import KMeansSelector

        return KMeansSelector(spec)
    if method == "covmatch":
        from selbias_audit.selectors.covmatch import CovMatchSelector

        return CovMatchSelector(spec)
    if method == "scheme1":
        from selbias_audit.selectors.scheme1 import Scheme1Selector

        return Scheme1Selector(spec)
    if method == "scheme2":
        from selbias_audit.selectors.scheme2 import Scheme2Selector

        return Scheme2Selector(spec)
    if method == "top_alpha":
        from selbias_audit.selectors.top_alpha import TopAlphaSelector

        return TopAlphaSelector(spec)
    raise AssertionError(f"unhandled selector method {method!r}")
