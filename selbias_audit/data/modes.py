"""Mode assignment (labels, k-means cells, a classifier) and the choice of tail modes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from selbias_audit.errors import SpecError
from selbias_audit.spec import TailSpec


class LabelModes:
    """Modes are the class labels the samples carry."""

    kind = "labels"

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.description = f"class labels carried by the samples ({len(names)} classes)"

    def assign(self, features: Tensor, labels: Tensor | None) -> Tensor:
        """Return the labels; samples without labels are an error."""
        if labels is None:
            raise ValueError("labels mode needs samples that carry labels")
        return labels.to(torch.int64)


class ClusterModes:
    """Modes are k-means cells fitted on the target; a sample goes to its nearest centroid."""

    kind = "clusters"

    def __init__(self, target: np.ndarray, k: int, seed: int) -> None:
        from sklearn.cluster import KMeans

        if k > target.shape[0]:
            raise SpecError(f"modes.clusters = {k} exceeds the {target.shape[0]} target samples")
        model = KMeans(n_clusters=k, n_init=4, random_state=seed % 2**32).fit(target)
        self.centroids = torch.as_tensor(model.cluster_centers_, dtype=torch.float64)
        self.names = [f"cell {i}" for i in range(k)]
        self.description = (
            f"k-means cells fitted on the transformed target (k = {k}, seed {seed % 2**32}); "
            "a sample belongs to the cell of its nearest centroid"
        )

    def assign(self, features: Tensor, labels: Tensor | None) -> Tensor:
        """Return the index of the nearest centroid of each row."""
        distances = torch.cdist(features.to(torch.float64), self.centroids.to(features.device))
        return distances.argmin(dim=1)


class ClassifierModes:
    """Modes are labels predicted by a k-nearest-neighbour classifier fitted on the target.

    Used when modes are labels but the samples carry none (an unlabelled generator or
    a replay without labels). The held-out accuracy is recorded in the description.
    """

    kind = "classifier"

    def __init__(self, target: np.ndarray, labels: np.ndarray, names: list[str], seed: int):
        from sklearn.model_selection import train_test_split
        from sklearn.neighbors import KNeighborsClassifier

        train_x, test_x, train_y, test_y = train_test_split(
            target, labels, test_size=0.2, random_state=seed % 2**32, stratify=labels
        )
        held_out = KNeighborsClassifier(n_neighbors=5).fit(train_x, train_y)
        self.accuracy = float(held_out.score(test_x, test_y))
        self.model = KNeighborsClassifier(n_neighbors=5).fit(target, labels)
        self.names = names
        self.description = (
            "labels predicted by a 5-nearest-neighbour classifier fitted on the target "
            f"(held-out accuracy {self.accuracy:.3f} on 20% of the target)"
        )

    def assign(self, features: Tensor, labels: Tensor | None) -> Tensor:
        """Return the predicted label of each row; carried labels are ignored."""
        predicted = self.model.predict(features.detach().cpu().double().numpy())
        return torch.as_tensor(predicted, dtype=torch.int64, device=features.device)


@dataclass(frozen=True)
class TailSet:
    """The modes whose erosion the gate watches, fixed once per audit."""

    modes: list[int]
    reasons: dict[int, list[str]]
    reference_shares: np.ndarray | None
    rule: str


def choose_tail(
    target_shares: np.ndarray, reference_shares: np.ndarray | None, spec: TailSpec
) -> TailSet:
    """Pick the tail modes: globally rare ones plus those the verifier's reference lacks.

    Globally rare: walking from the rarest mode up, every mode while the running sum of
    target shares stays within ``spec.rare_mass``. Under-represented: the reference's
    share is below ``spec.underrepresented_ratio`` times the global share.
    """
    reasons: dict[int, list[str]] = {}
    running = 0.0
    for mode in np.argsort(target_shares, kind="stable"):
        share = float(target_shares[mode])
        if share <= 0 or running + share > spec.rare_mass + 1e-12:
            break
        running += share
        reasons.setdefault(int(mode), []).append("globally_rare")
    if reference_shares is not None:
        for mode, share in enumerate(target_shares):
            if share > 0 and reference_shares[mode] < spec.underrepresented_ratio * share:
                reasons.setdefault(mode, []).append("underrepresented_by_verifier")
    if not reasons:
        raise SpecError(
            "modes.tail: no mode qualifies as a tail mode (rare_mass = "
            f"{spec.rare_mass}, underrepresented_ratio = {spec.underrepresented_ratio}), so "
            "the gate would compare nothing; raise modes.tail.rare_mass (for example 0.2) "
            "or set modes.tail.reference_client to a skewed client"
        )
    rule = (
        f"globally rare: the rarest modes holding at most {spec.rare_mass:.0%} of target mass; "
        f"under-represented: share in the verifier's reference below "
        f"{spec.underrepresented_ratio:g} x the global share"
    )
    return TailSet(sorted(reasons), reasons, reference_shares, rule)


def tail_retention(shares: np.ndarray, target_shares: np.ndarray, tail: list[int]) -> float:
    """Return sum over tail modes of min(p_t(m), p*(m)) divided by sum of p*(m).

    1 means the tail is intact and 0 that it is gone. An empty tail retains everything.
    """
    if not tail:
        return 1.0
    kept = np.minimum(shares[tail], target_shares[tail]).sum()
    return float(min(max(kept / target_shares[tail].sum(), 0.0), 1.0))
