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


def _birth(ind: "Individual") -> int:
    return ind.birth


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


@dataclass(slots=True)
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
    """Individuals ordered by birth.

    ``genomes`` maps each living genome string to how many living individuals carry it (a
    multiset, O(1) membership). Two derived structures are built on first use and kept up to date
    from then on, so strategies that never ask for them never pay: the score ranking that
    :meth:`tournament_winner` needs (aging evolution), and numpy mirrors of the scores and births
    that the vectorised draws need (:meth:`tournament_extremes`, tournament selection).
    """

    def __init__(self, members: Iterable[Individual] = ()) -> None:
        inds = sorted(members, key=_birth)
        births = [ind.birth for ind in inds]
        if len(set(births)) != len(births):
            raise ValueError("two individuals share a birth number")
        self._inds: list[Individual] = inds
        self.genomes: dict[str, int] = {}
        for ind in inds:
            self.genomes[ind.genome] = self.genomes.get(ind.genome, 0) + 1
        self._ranked: list[tuple] | None = None
        self._mirrored = False
        self._scores = self._births = np.empty(0)
        self._head = self._tail = 0

    def __len__(self) -> int:
        return len(self._inds)

    @property
    def members(self) -> list[Individual]:
        """The living individuals in birth order (a copy)."""
        return list(self._inds)

    @property
    def scores(self) -> np.ndarray:
        """Scores of the living individuals in birth order (a view: do not modify)."""
        self._mirror()
        return self._scores[self._head:self._tail]

    def _mirror(self) -> None:
        """Build the numpy mirrors of scores and births (once; :meth:`add`/:meth:`remove` keep them)."""
        if self._mirrored:
            return
        inds, cap = self._inds, max(_MIN_CAPACITY, 2 * len(self._inds))
        self._scores = np.empty(cap, dtype=float)
        self._births = np.empty(cap, dtype=np.int64)
        self._scores[:len(inds)] = [ind.score for ind in inds]
        self._births[:len(inds)] = [ind.birth for ind in inds]
        self._head, self._tail, self._mirrored = 0, len(inds), True

    def _position(self, ind: Individual) -> int:
        """Index of ``ind`` in birth order, or -1 when it is not a living member."""
        inds = self._inds
        if self._mirrored:
            i = int(self._births[self._head:self._tail].searchsorted(ind.birth))
        else:
            i = bisect.bisect_left(inds, ind.birth, key=_birth)
        return i if i < len(inds) and inds[i] is ind else -1

    def is_alive(self, ind: Individual) -> bool:
        """True when ``ind`` itself (not only its genome) is a living member."""
        inds = self._inds
        return bool(inds) and (inds[0] is ind or self._position(ind) >= 0)

    def add(self, ind: Individual) -> None:
        """Append a newborn (births only increase, so order by birth is kept)."""
        inds = self._inds
        if inds and ind.birth <= inds[-1].birth:  # pragma: no cover - internal invariant
            raise AssertionError("births must increase")
        if self._mirrored:
            tail = self._tail
            if tail == len(self._scores):
                self._compact()
                tail = self._tail
            self._scores[tail] = ind.score
            self._births[tail] = ind.birth
            self._tail = tail + 1
        inds.append(ind)
        genomes = self.genomes
        genomes[ind.genome] = genomes.get(ind.genome, 0) + 1
        if self._ranked is not None:
            bisect.insort(self._ranked, (-ind.score, (ind.birth * _TIE_MULT) & 0xFFFFFFFF, ind.birth, ind))

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
        """Remove one living individual (found by its birth number, which is unique)."""
        inds = self._inds
        if inds and inds[0] is ind:
            i = 0
            if self._mirrored:
                self._head += 1
        else:
            i = self._position(ind)
            if i < 0:  # pragma: no cover - internal invariant
                raise AssertionError("individual not in population")
            if self._mirrored:
                lo, tail = self._head + i, self._tail
                self._scores[lo:tail - 1] = self._scores[lo + 1:tail]
                self._births[lo:tail - 1] = self._births[lo + 1:tail]
                self._tail = tail - 1
        del inds[i]
        ranked = self._ranked
        if ranked is not None:
            del ranked[bisect.bisect_left(ranked, (-ind.score, (ind.birth * _TIE_MULT) & 0xFFFFFFFF, ind.birth))]
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
        self._mirror()
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
        self._mirror()
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
    if type(value) is float:  # the common case, without the calls below
        return -math.inf < value < math.inf
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
