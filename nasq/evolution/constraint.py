"""Hardware constraints known before evaluation (constraint-aware evolution, issue 7 §3).

A :class:`Constraint` is the cost of a genome string (a latency-table lookup, a latency
predictor, a size formula) and a limit. In ``hard`` mode the strategies sample the initial
population inside the limit and re-draw children over it, so an infeasible genome never costs
an evaluation (HELP, Lee et al. NeurIPS 2021, searches the same way with its predicted
latency). In ``penalty`` mode every genome may be proposed and an over-limit score is scaled as
in JASQ's Eq. 1 (Chen et al. 2018): ``F = score * (cost / limit) ** gamma`` with ``gamma < 0``.
Constraints known only after evaluation stay with the trainable (a result without fitness is a
failed individual).

Boundary draws (hard mode, ``draws > 1``): each proposal draws ``draws`` feasible, never-proposed
candidates the usual way (random for the initial population, children of the one parent after) and
proposes the costliest, leaving the others unseen. Under a latency or size limit the most accurate
models sit near the limit (bigger models are more accurate; the reason JASQ's Eq. 1 and
latency-aware NAS reward using the budget), so this pushes the search to the boundary at the price
of ``draws`` cost look-ups per proposal. It is a bias, not a guarantee: when cost and quality are
unrelated it only narrows the search. Measured on latency-constrained NAS-Bench-201
(``benchmarks/bench_nb201_constrained.py --draws``): see ``benchmarks/results/nb201_constrained*.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from nasq.errors import ConfigError, ConstraintError
from nasq.fitness import DEFAULT_GAMMA

MODES = ("hard", "penalty")
_CACHE_SIZE = 1 << 16

Cost = Callable[[str], float]


@dataclass(frozen=True)
class Constraint:
    """``cost(genome) <= limit``, enforced in the evolution core.

    Attributes:
        cost: genome string -> cost (e.g. latency in ms); must pickle if the searcher is shipped.
        limit: the largest feasible cost.
        mode: ``"hard"`` (never propose an infeasible genome) or ``"penalty"`` (JASQ Eq. 1).
        gamma: the penalty exponent (< 0) of ``penalty`` mode.
        name: what the cost is, for messages (e.g. ``"latency_ms"``).
        draws: hard mode: feasible new candidates drawn per proposal, the costliest proposed
            (boundary draws, module docstring); 1 proposes the first, as plain rejection does.
    """

    cost: Cost
    limit: float
    mode: str = "hard"
    gamma: float = DEFAULT_GAMMA
    name: str = "cost"
    draws: int = 1
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not callable(self.cost):
            raise ConfigError(f"constraint cost must be a callable genome -> float, got {self.cost!r}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, (int, float)) \
                or not math.isfinite(self.limit):
            raise ConfigError(f"constraint limit must be a finite number, got {self.limit!r}; set max_cost")
        if self.mode not in MODES:
            raise ConfigError(f"constraint mode {self.mode!r} is not one of {list(MODES)}")
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise ConfigError(f"constraint draws must be an integer >= 1, got {self.draws!r}")
        if self.mode == "penalty" and (self.limit <= 0 or not self.gamma < 0):
            raise ConfigError(f"penalty mode needs limit > 0 and gamma < 0 (JASQ Eq. 1), got limit "
                              f"{self.limit} and gamma {self.gamma}")

    def cost_of(self, genome: str) -> float:
        """The (memoised) cost of ``genome``; ``ConstraintError`` when it is not a finite number."""
        value = self._memo.get(genome)
        if value is None:
            try:
                value = float(self.cost(genome))
            except (TypeError, ValueError) as exc:
                raise ConstraintError(f"the {self.name} of {genome!r} could not be computed ({exc}); "
                                      "check the constraint's table or predictor") from exc
            if math.isnan(value):
                raise ConstraintError(f"the {self.name} of {genome!r} is NaN; check the constraint's table "
                                      "or predictor")
            if len(self._memo) >= _CACHE_SIZE:
                self._memo.clear()
            self._memo[genome] = value
        return value

    def feasible(self, genome: str) -> bool:
        """True when ``cost(genome) <= limit``."""
        return self.cost_of(genome) <= self.limit

    def penalised(self, score: float, genome: str) -> float:
        """JASQ Eq. 1 on a normalised score (higher is better): unchanged inside the limit, else
        scaled by ``(cost / limit) ** gamma`` toward worse (divided when the score is negative)."""
        cost = self.cost_of(genome)
        if cost <= self.limit:
            return score
        factor = (cost / self.limit) ** self.gamma
        return score * factor if score >= 0 else score / factor

    def params(self) -> dict:
        """What the searcher state records (checked on restore)."""
        out = {"limit": float(self.limit), "mode": self.mode, "name": self.name}
        if self.mode == "penalty":
            out["gamma"] = float(self.gamma)
        if self.draws != 1:
            out["draws"] = self.draws
        return out

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("cost", "limit", "mode", "gamma", "name", "draws")}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "draws", 1)  # pickles made before boundary draws existed
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_memo", {})


def as_constraint(constraint: Constraint | Cost | None, max_cost: float | None = None,
                  mode: str = "hard") -> Constraint | None:
    """Accept a :class:`Constraint`, or a cost callable with ``max_cost``, or None."""
    if constraint is None:
        if max_cost is not None:
            raise ConfigError("max_cost was given without a constraint; pass constraint=<genome -> cost>")
        return None
    if isinstance(constraint, Constraint):
        if max_cost is not None:
            raise ConfigError("max_cost was given twice: a Constraint already holds its limit")
        return constraint
    if max_cost is None:
        raise ConfigError("a constraint needs a limit: pass max_cost=<largest feasible cost>")
    return Constraint(constraint, max_cost, mode=mode)


__all__ = ["Constraint", "MODES", "as_constraint"]
