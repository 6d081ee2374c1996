"""Deterministic subsets for cheap runs: first-N, seeded random, or seeded stratified samples.

A subset is described by a :class:`SubsetSpec` and produces a :class:`SubsetInfo`, a JSON-able record (strategy, n,
seed, total size, per-label counts, and a SHA-256 of the chosen indices) meant to be stored in the run's metadata so
that a run can be reproduced and two runs can be checked to have used the same examples.
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Hashable, Literal, Sequence, TypeVar

from ..errors import ConfigError

__all__ = ["SubsetInfo", "SubsetSpec", "apply_subset", "select_indices"]

T = TypeVar("T")
Strategy = Literal["first", "random", "stratified"]


@dataclass(frozen=True)
class SubsetSpec:
    """How to take a subset.

    Attributes:
        n: number of items to keep; ``None`` keeps everything (the subset is then the identity).
        strategy: ``"first"`` (the first ``n`` items, in order), ``"random"`` (``n`` items drawn without replacement
            with ``random.Random(seed)``, returned in their original order) or ``"stratified"`` (per-label counts
            proportional to the label frequencies, largest-remainder rounding, drawn per label with the seed;
            original order kept).
        seed: seed of the random strategies (ignored by ``"first"``).
    """

    n: int | None = None
    strategy: Strategy = "first"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in ("first", "random", "stratified"):
            raise ConfigError(f"subset strategy must be 'first', 'random' or 'stratified', not {self.strategy!r}")
        if self.n is not None and (not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 0):
            raise ConfigError(f"subset size n must be a non-negative integer or None, not {self.n!r}")


@dataclass(frozen=True)
class SubsetInfo:
    """What a subset selected; :meth:`to_dict` is the form stored in run metadata."""

    strategy: str
    n: int
    n_total: int
    seed: int | None
    indices_sha256: str
    label_counts: dict[str, int] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stratified(labels: Sequence[Hashable], n: int, rng: random.Random) -> list[int]:
    by_label: dict[Hashable, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    order = sorted(by_label, key=repr)  # deterministic label order, whatever the label type
    total = len(labels)
    quotas = {lab: n * len(by_label[lab]) / total for lab in order}
    counts = {lab: int(quotas[lab]) for lab in order}
    remainder = n - sum(counts.values())
    # largest remainders first; ties broken by the label order above
    for lab in sorted(order, key=lambda lab: -(quotas[lab] - counts[lab]))[:remainder]:
        counts[lab] += 1
    chosen: list[int] = []
    for lab in order:
        chosen.extend(rng.sample(by_label[lab], counts[lab]))
    return sorted(chosen)


def select_indices(n_total: int, spec: SubsetSpec, labels: Sequence[Hashable] | None = None) -> list[int]:
    """Indices (ascending) of the items ``spec`` keeps out of ``n_total``; ``labels`` is needed for stratified."""
    if spec.n is None or spec.n >= n_total:
        return list(range(n_total))
    if spec.strategy == "first":
        return list(range(spec.n))
    rng = random.Random(spec.seed)
    if spec.strategy == "random":
        return sorted(rng.sample(range(n_total), spec.n))
    if labels is None:
        raise ConfigError("a stratified subset needs the labels of the items")
    if len(labels) != n_total:
        raise ConfigError(f"got {len(labels)} labels for {n_total} items")
    return _stratified(labels, spec.n, rng)


def apply_subset(
    items: Sequence[T], spec: SubsetSpec, labels: Sequence[Hashable] | None = None
) -> tuple[list[T], SubsetInfo]:
    """The kept items (original order) and the :class:`SubsetInfo` to record."""
    indices = select_indices(len(items), spec, labels)
    digest = hashlib.sha256(",".join(map(str, indices)).encode("ascii")).hexdigest()
    label_counts = None
    if labels is not None:
        label_counts = {str(k): v for k, v in sorted(Counter(labels[i] for i in indices).items(), key=lambda kv: str(kv[0]))}
    info = SubsetInfo(
        strategy=spec.strategy if spec.n is not None else "all",
        n=len(indices),
        n_total=len(items),
        seed=spec.seed if spec.strategy != "first" and spec.n is not None else None,
        indices_sha256=digest,
        label_counts=label_counts,
    )
    return [items[i] for i in indices], info
