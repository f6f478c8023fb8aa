"""Population bookkeeping shared by the evolutionary strategies (no Ray here)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np


@dataclass
class Individual:
    """An evaluated genome: its string, its normalised score (higher is better) and birth number."""

    genome: str
    score: float
    birth: int

    def to_json(self) -> dict:
        """Plain-JSON form used in searcher state files."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Individual":
        """Inverse of :meth:`to_json`."""
        return cls(genome=str(data["genome"]), score=float(data["score"]), birth=int(data["birth"]))


class Population:
    """Individuals ordered by birth, with a multiset of their genomes for O(1) duplicate checks."""

    def __init__(self, members: Iterable[Individual] = ()) -> None:
        self.members: list[Individual] = sorted(members, key=lambda ind: ind.birth)
        self.genomes: Counter[str] = Counter(ind.genome for ind in self.members)

    def __len__(self) -> int:
        return len(self.members)

    def add(self, ind: Individual) -> None:
        """Append a newborn (births only increase, so order by birth is kept)."""
        self.members.append(ind)
        self.genomes[ind.genome] += 1

    def remove(self, ind: Individual) -> None:
        """Remove one individual (identity, not equality)."""
        for i, other in enumerate(self.members):
            if other is ind:
                del self.members[i]
                break
        else:  # pragma: no cover - internal invariant
            raise AssertionError("individual not in population")
        self.genomes[ind.genome] -= 1
        if self.genomes[ind.genome] <= 0:
            del self.genomes[ind.genome]

    def oldest(self) -> Individual:
        """The individual with the smallest birth number (aging evolution's victim)."""
        return self.members[0]

    def sample(self, size: int, rng: np.random.Generator) -> list[Individual]:
        """Draw ``min(size, len)`` distinct individuals uniformly at random."""
        n = len(self.members)
        k = min(size, n)
        if k == n:
            idx = rng.permutation(n)
        else:
            idx = rng.choice(n, size=k, replace=False)
        return [self.members[i] for i in idx]

    def best(self) -> Individual | None:
        """The highest-scoring member, or None when empty."""
        return max(self.members, key=lambda ind: ind.score, default=None)


def best_of(sample: list[Individual]) -> Individual:
    """Highest score in a sample; ties go to the earliest drawn (tournament winner)."""
    return max(sample, key=lambda ind: ind.score)


def worst_of(sample: list[Individual]) -> Individual:
    """Lowest score in a sample; ties go to the earliest drawn."""
    return min(sample, key=lambda ind: ind.score)


def is_valid_score(value: object) -> bool:
    """True for a finite real number: failed, missing, NaN and inf results are not individuals."""
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
