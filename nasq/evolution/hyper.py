"""Hyperparameters searched beside the genome (joint NAS + HPO), without Ray.

The Tune adapter (:mod:`nasq.searchers.genome`) turns ``ray.tune`` search domains into these
small descriptions; the evolution core samples them for the initial population and mutates one
of them as the extra mutation kind :data:`HPARAMS_KIND` (issue 7, §2), always with its own seeded
``numpy.random.Generator``. Values are plain ``float``/``int``/JSON scalars, so they travel in
configs and JSON state as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from nasq.errors import ConfigError

HPARAMS_KIND = "hparams"
# A mutated number moves by a normal step of this fraction of its (log-)range.
PERTURB_SCALE = 0.2


@dataclass(frozen=True)
class NumberParam:
    """A float or integer in ``[low, high]`` (both inclusive), uniform or log-uniform, optionally
    rounded to a multiple of ``q`` (Ray Tune's ``uniform``/``loguniform``/``quniform``/``randint``...)."""

    name: str
    low: float
    high: float
    integer: bool = False
    log: bool = False
    q: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ConfigError(f"hyperparameter {self.name!r}: bounds [{self.low}, {self.high}] are not a range")
        if self.log and self.low <= 0:
            raise ConfigError(f"hyperparameter {self.name!r}: a log-uniform range needs low > 0, got {self.low}")
        if self.q is not None and not self.q > 0:
            raise ConfigError(f"hyperparameter {self.name!r}: quantum q must be > 0, got {self.q}")

    def _to_unit(self, value: float) -> float:
        return math.log(value) if self.log else value

    def _from_unit(self, u: float) -> float | int:
        lo, hi = self._to_unit(self.low), self._to_unit(self.high)
        value = math.exp(min(max(u, lo), hi)) if self.log else min(max(u, lo), hi)
        if self.q is not None:
            value = round(value / self.q) * self.q
            if value > self.high:
                value -= self.q
            if value < self.low:
                value += self.q
        if self.integer:
            value = int(round(value))
            return min(max(value, math.ceil(self.low)), math.floor(self.high))
        return float(min(max(value, self.low), self.high))

    def sample(self, rng: np.random.Generator) -> float | int:
        """A uniform (or log-uniform) draw in the range."""
        lo, hi = self._to_unit(self.low), self._to_unit(self.high)
        if not self.log and (self.integer or self.q is not None):  # uniform over the grid points
            q = self.q or 1.0
            k = int(rng.integers(math.ceil(self.low / q - 1e-9), math.floor(self.high / q + 1e-9) + 1))
            return int(round(k * q)) if self.integer else float(min(max(k * q, self.low), self.high))
        return self._from_unit(float(rng.uniform(lo, hi)))

    def mutate(self, value: Any, rng: np.random.Generator) -> float | int:
        """A normal step of ``PERTURB_SCALE`` of the (log-)range around ``value``, kept in range
        (reflected at the bounds); on a grid (integers, ``q``) it moves at least one grid step."""
        lo, hi = self._to_unit(self.low), self._to_unit(self.high)
        step = float(rng.normal(0.0, PERTURB_SCALE * (hi - lo)))
        u = self._to_unit(float(value)) + step
        if u > hi:
            u = 2 * hi - u
        if u < lo:
            u = 2 * lo - u
        new = self._from_unit(u)
        grid = self.q or (1 if self.integer else None)
        if grid is not None and new == value and self.high - self.low >= grid:
            moved = value + grid if step >= 0 else value - grid
            if not self.low <= moved <= self.high:
                moved = value - grid if step >= 0 else value + grid
            new = int(round(moved)) if self.integer else float(moved)
        return new

    def check(self, value: Any) -> float | int:
        """Validate a user-given value (``points_to_evaluate``) and return it typed."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"hyperparameter {self.name!r}: {value!r} is not a number")
        if self.integer and float(value) != int(value):
            raise ConfigError(f"hyperparameter {self.name!r}: {value!r} is not an integer")
        if not self.low <= value <= self.high:
            raise ConfigError(f"hyperparameter {self.name!r}: {value!r} is outside [{self.low}, {self.high}]")
        return int(value) if self.integer else float(value)

    def to_json(self) -> dict:
        """Plain-JSON form (kept in searcher state)."""
        return {"type": "int" if self.integer else "float", "name": self.name, "low": self.low,
                "high": self.high, "log": self.log, "q": self.q}


@dataclass(frozen=True)
class ChoiceParam:
    """One of a few JSON scalar values (Ray Tune's ``choice``)."""

    name: str
    values: tuple

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError(f"hyperparameter {self.name!r}: a choice needs at least one value")
        for v in self.values:
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise ConfigError(f"hyperparameter {self.name!r}: choice value {v!r} is not a str, number, "
                                  "bool or None; use those (or index a list in your trainable)")

    def sample(self, rng: np.random.Generator) -> Any:
        """A uniform draw among the values."""
        return self.values[int(rng.integers(len(self.values)))]

    def mutate(self, value: Any, rng: np.random.Generator) -> Any:
        """A different value, uniformly (the same one when there is only one)."""
        others = [v for v in self.values if not _same(v, value)]
        if not others:
            return value
        return others[int(rng.integers(len(others)))]

    def check(self, value: Any) -> Any:
        """Validate a user-given value (``points_to_evaluate``)."""
        for v in self.values:
            if _same(v, value):
                return v
        raise ConfigError(f"hyperparameter {self.name!r}: {value!r} is not one of {list(self.values)}")

    def to_json(self) -> dict:
        """Plain-JSON form (kept in searcher state)."""
        return {"type": "choice", "name": self.name, "values": list(self.values)}


Param = Union[NumberParam, ChoiceParam]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


class HyperSpace:
    """The hyperparameters searched beside the genome, in a fixed order."""

    def __init__(self, params: Sequence[Param] = ()) -> None:
        self.params: tuple[Param, ...] = tuple(params)
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ConfigError(f"hyperparameter names repeat: {names}")

    def __bool__(self) -> bool:
        return bool(self.params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HyperSpace) and self.params == other.params

    @property
    def names(self) -> list[str]:
        """The parameter names."""
        return [p.name for p in self.params]

    def sample(self, rng: np.random.Generator) -> dict:
        """Draw every parameter (initial population, random search)."""
        return {p.name: p.sample(rng) for p in self.params}

    def mutate(self, values: dict, rng: np.random.Generator) -> dict:
        """The extra mutation kind ``hparams``: perturb (number) or re-draw (choice) one parameter."""
        if not self.params:
            return dict(values)
        p = self.params[int(rng.integers(len(self.params)))]
        out = dict(values)
        out[p.name] = p.mutate(values[p.name], rng) if p.name in values else p.sample(rng)
        return out

    def complete(self, values: dict, rng: np.random.Generator, where: str = "a point") -> dict:
        """Validate user-given values and draw the missing ones; unknown names are refused."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            raise ConfigError(f"{where} sets {unknown}, which are not search domains of the param_space "
                              f"(domains: {self.names}); drop them or add tune domains for them")
        return {p.name: p.check(values[p.name]) if p.name in values else p.sample(rng) for p in self.params}

    def to_json(self) -> list[dict]:
        """Plain-JSON form (kept in searcher state)."""
        return [p.to_json() for p in self.params]

    @classmethod
    def from_json(cls, data: Any) -> "HyperSpace":
        """Inverse of :meth:`to_json`; ``ValueError``/``KeyError``/``TypeError`` when malformed."""
        if not isinstance(data, list):
            raise TypeError("hyperparameters are not a list")
        params: list[Param] = []
        for d in data:
            if d["type"] == "choice":
                params.append(ChoiceParam(str(d["name"]), tuple(d["values"])))
            elif d["type"] in ("float", "int"):
                q = d.get("q")
                params.append(NumberParam(str(d["name"]), float(d["low"]), float(d["high"]),
                                          integer=d["type"] == "int", log=bool(d["log"]),
                                          q=None if q is None else float(q)))
            else:
                raise ValueError(f"unknown hyperparameter type {d['type']!r}")
        return cls(params)


__all__ = ["ChoiceParam", "HPARAMS_KIND", "HyperSpace", "NumberParam", "Param"]
