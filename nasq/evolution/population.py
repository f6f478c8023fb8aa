"""Population bookkeeping shared by the evolutionary strategies (no Ray here).

Scores and births live in numpy arrays kept in birth order, so a tournament draw, the best,
the worst and the oldest are vectorised and a step at P = 500 stays cheap (issue 7, §8).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

_MIN_CAPACITY = 64
_TIE_MULT = 2654435761  # Knuth's multiplicative hash: ties broken by a scrambled birth number


def _rank_key(ind: "Individual") -> tuple:
    """Sort key of the ranking: best first; equal scores in a birth-scrambled (arbitrary) order.
    Births are unique, so the individual itself (last) is never compared."""
    return (-ind.score, (ind.birth * _TIE_MULT) & 0xFFFFFFFF, ind.birth, ind)


@functools.lru_cache(maxsize=64)
def _min_rank_cdf(n: int, k: int) -> list[float]:
    """CDF of the smallest rank in a uniform k-subset of ranks 0..n-1:
    P(min >= r) = C(n - r, k) / C(n, k), built by the ratio (n - r - k) / (n - r)."""
    cdf, survive = [], 1.0
    for r in range(n - k + 1):
        survive *= (n - r - k) / (n - r)
        cdf.append(1.0 - survive)
    cdf[-1] = 1.0
    return cdf


@dataclass
class Individual:
    """An evaluated genome: its string, its normalised score (higher is better), birth number and
    the hyperparameters sampled beside the genome (empty without Tune search domains)."""

    genome: str
    score: float
    birth: int
    hparams: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """Plain-JSON form used in searcher state files."""
        out = {"genome": self.genome, "score": self.score, "birth": self.birth}
        if self.hparams:
            out["hparams"] = dict(self.hparams)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Individual":
        """Inverse of :meth:`to_json`."""
        hparams = data.get("hparams", {})
        if not isinstance(hparams, dict):
            raise TypeError(f"hparams of {data.get('genome')!r} is not an object")
        return cls(genome=str(data["genome"]), score=float(data["score"]), birth=int(data["birth"]),
                   hparams=dict(hparams))


class Population:
    """Individuals ordered by birth; scores and births mirrored in numpy arrays.

    ``genomes`` maps each living genome string to how many living individuals carry it (a
    multiset, O(1) membership). The score ranking that :meth:`tournament_winner` needs is built on
    its first call and kept up to date from then on, so strategies that never ask for it never pay.
    """

    def __init__(self, members: Iterable[Individual] = ()) -> None:
        inds = sorted(members, key=lambda ind: ind.birth)
        births = [ind.birth for ind in inds]
        if len(set(births)) != len(births):
            raise ValueError("two individuals share a birth number")
        self._inds: list[Individual] = inds
        self._alive: dict[int, Individual] = {ind.birth: ind for ind in inds}
        cap = max(_MIN_CAPACITY, 2 * len(inds))
        self._scores = np.empty(cap, dtype=float)
        self._births = np.empty(cap, dtype=np.int64)
        self._head, self._tail = 0, len(inds)
        self._scores[:len(inds)] = [ind.score for ind in inds]
        self._births[:len(inds)] = births
        self.genomes: dict[str, int] = {}
        for ind in inds:
            self.genomes[ind.genome] = self.genomes.get(ind.genome, 0) + 1
        self._ranked: list[tuple] | None = None

    def __len__(self) -> int:
        return len(self._inds)

    @property
    def members(self) -> list[Individual]:
        """The living individuals in birth order (a copy)."""
        return list(self._inds)

    @property
    def scores(self) -> np.ndarray:
        """Scores of the living individuals in birth order (a view: do not modify)."""
        return self._scores[self._head:self._tail]

    def is_alive(self, ind: Individual) -> bool:
        """True when ``ind`` itself (not only its genome) is a living member."""
        return self._alive.get(ind.birth) is ind

    def add(self, ind: Individual) -> None:
        """Append a newborn (births only increase, so order by birth is kept)."""
        inds = self._inds
        if inds and ind.birth <= inds[-1].birth:  # pragma: no cover - internal invariant
            raise AssertionError("births must increase")
        tail = self._tail
        if tail == self._scores.shape[0]:
            self._compact()
            tail = self._tail
        self._scores[tail] = ind.score
        self._births[tail] = ind.birth
        self._tail = tail + 1
        inds.append(ind)
        self._alive[ind.birth] = ind
        genomes = self.genomes
        genomes[ind.genome] = genomes.get(ind.genome, 0) + 1
        if self._ranked is not None:
            bisect.insort(self._ranked, _rank_key(ind))

    def _compact(self) -> None:
        n = len(self._inds)
        if self._head == 0 or n > len(self._scores) // 2:
            scores, births = np.empty(2 * len(self._scores)), np.empty(2 * len(self._scores), dtype=np.int64)
        else:
            scores, births = self._scores, self._births
        scores[:n] = self._scores[self._head:self._tail]
        births[:n] = self._births[self._head:self._tail]
        self._scores, self._births, self._head, self._tail = scores, births, 0, n

    def remove(self, ind: Individual) -> None:
        """Remove one individual (found by its birth number, which is unique)."""
        inds = self._inds
        if inds and inds[0] is ind:
            i = 0
            self._head += 1
        else:
            i = int(self._births[self._head:self._tail].searchsorted(ind.birth))
            if i >= len(inds) or inds[i] is not ind:  # pragma: no cover - internal invariant
                raise AssertionError("individual not in population")
            lo, tail = self._head + i, self._tail
            self._scores[lo:tail - 1] = self._scores[lo + 1:tail]
            self._births[lo:tail - 1] = self._births[lo + 1:tail]
            self._tail = tail - 1
        del inds[i]
        del self._alive[ind.birth]
        if self._ranked is not None:
            del self._ranked[bisect.bisect_left(self._ranked, _rank_key(ind))]
        genomes = self.genomes
        left = genomes[ind.genome] - 1
        if left:
            genomes[ind.genome] = left
        else:
            del genomes[ind.genome]

    def oldest(self) -> Individual:
        """The individual with the smallest birth number (aging evolution's victim)."""
        return self._inds[0]

    def sample_index(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """Positions (in birth order) of ``min(size, len)`` distinct individuals drawn uniformly,
        in draw order (the head of one uniform permutation: half the cost of ``rng.choice``)."""
        n = len(self._inds)
        return rng.permutation(n) if size >= n else rng.permutation(n)[:size]

    def sample(self, size: int, rng: np.random.Generator) -> list[Individual]:
        """Draw ``min(size, len)`` distinct individuals uniformly at random."""
        inds = self._inds
        return [inds[i] for i in self.sample_index(size, rng).tolist()]

    def tournament(self, size: int, rng: np.random.Generator) -> tuple[Individual, list[int]]:
        """Draw a sample as :meth:`sample` does; return its best (ties: earliest drawn) and its births."""
        best, _, births = self.tournament_extremes(size, rng)
        return best, births

    def tournament_extremes(self, size: int, rng: np.random.Generator
                            ) -> tuple[Individual, Individual, list[int]]:
        """:meth:`tournament` plus the sample's worst (ties: earliest drawn), in one draw: the parent
        and the individual that leaves in JASQ Algorithm 1 (Chen et al. 2018)."""
        idx = self.sample_index(size, rng)
        head = self._head
        scores = self._scores[head:self._tail][idx]
        inds = self._inds
        return (inds[int(idx[scores.argmax()])], inds[int(idx[scores.argmin()])],
                self._births[head:self._tail][idx].tolist())

    def worst_among(self, births: list[int], exclude: Individual | None = None) -> Individual | None:
        """The lowest-scoring living individual whose birth is in ``births`` (ties: first listed),
        skipping ``exclude``; None when none is alive."""
        if not births or not self._inds:
            return None
        view = self._births[self._head:self._tail]
        wanted = np.asarray(births, dtype=np.int64)
        idx = np.minimum(view.searchsorted(wanted), len(view) - 1)
        alive = view[idx] == wanted
        if exclude is not None:
            alive &= view[idx] != exclude.birth
        if not alive.any():
            return None
        idx = idx[alive]
        return self._inds[int(idx[int(self.scores[idx].argmin())])]

    def tournament_winner(self, size: int, rng: np.random.Generator) -> Individual:
        """The best of ``min(size, len)`` distinct individuals drawn uniformly, drawn directly.

        The winner's rank is the smallest rank of a uniform k-subset, sampled from its exact
        distribution with one uniform number (regularized evolution's parent, Real et al. 2019,
        in O(log P) instead of drawing the whole sample). Ties: an arbitrary but fixed order.
        """
        ranked = self._ranked
        if ranked is None:
            ranked = self._ranked = sorted(_rank_key(ind) for ind in self._inds)
        n = len(ranked)
        rank = bisect.bisect_right(_min_rank_cdf(n, size if size < n else n), rng.random())
        return ranked[rank][3]

    def best(self) -> Individual | None:
        """The highest-scoring member (ties: the oldest), or None when empty."""
        if not self._inds:
            return None
        return self._inds[int(self.scores.argmax())]

    def worst(self) -> Individual | None:
        """The lowest-scoring member (ties: the oldest), or None when empty."""
        if not self._inds:
            return None
        return self._inds[int(self.scores.argmin())]


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
