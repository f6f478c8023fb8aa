"""Ray Tune search domains -> nasq's pure hyperparameter descriptions (issue 7 §2).

Supported: ``tune.uniform``/``quniform``/``loguniform``/``qloguniform`` (Float),
``tune.randint``/``qrandint``/``lograndint``/``qlograndint`` (Integer, with Tune's bounds:
upper exclusive for ``randint``/``lograndint`` and q = 1, inclusive otherwise) and
``tune.choice`` of JSON scalars (Categorical). Everything else that Tune would sample
(``sample_from``, ``grid_search``, ``randn``, domains nested in dicts or lists) is refused with a
:class:`nasq.errors.ConfigError` naming the key, so a trainable never receives an unsampled domain.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search.sample import Categorical, Domain, Float, Function, Integer, LogUniform, Quantized, Uniform

from nasq.errors import ConfigError
from nasq.evolution.hyper import ChoiceParam, HyperSpace, NumberParam, Param

SUPPORTED = ("tune.uniform", "tune.quniform", "tune.loguniform", "tune.qloguniform", "tune.randint",
             "tune.qrandint", "tune.lograndint", "tune.qlograndint", "tune.choice (of str/number/bool/None)")


def split_param_space(config: dict) -> tuple[dict, HyperSpace]:
    """Split a Tune ``param_space`` into constants and the searched hyperparameters.

    Raises:
        ConfigError: a key holds a domain nasq does not search.
    """
    constants: dict = {}
    params: list[Param] = []
    for key, value in config.items():
        if isinstance(value, Domain):
            params.append(to_param(str(key), value))
        else:
            _refuse_nested(str(key), value)
            constants[key] = value
    return constants, HyperSpace(params)


def _unsupported(key: str, what: str) -> ConfigError:
    return ConfigError(f"param_space[{key!r}] is {what}, which nasq's genome searchers do not search; "
                       f"use a constant or one of: {', '.join(SUPPORTED)}")


def _refuse_nested(key: str, value: Any) -> None:
    if isinstance(value, dict):
        if "grid_search" in value:
            raise _unsupported(key, "tune.grid_search")
        for k, v in value.items():
            if isinstance(v, Domain):
                raise _unsupported(f"{key}.{k}", "a search domain nested in a dict (only top-level keys)")
            _refuse_nested(f"{key}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if isinstance(v, Domain):
                raise _unsupported(f"{key}[{i}]", "a search domain nested in a list (only top-level keys)")
            _refuse_nested(f"{key}[{i}]", v)


def to_param(key: str, domain: Domain) -> Param:
    """One Tune domain as a pure :mod:`nasq.evolution.hyper` parameter with the same values."""
    if isinstance(domain, Function):
        raise _unsupported(key, "tune.sample_from (a function of the config)")
    if domain.is_grid():
        raise _unsupported(key, "tune.grid_search")
    sampler = domain.get_sampler()
    q = None
    if isinstance(sampler, Quantized):
        q, sampler = sampler.q, sampler.get_sampler()
    if isinstance(domain, Categorical) and isinstance(sampler, Uniform) and q is None:
        for v in domain.categories:
            if isinstance(v, Domain) or (v is not None and not isinstance(v, (str, int, float, bool))):
                raise _unsupported(key, f"a choice holding {v!r}")
        return ChoiceParam(key, tuple(domain.categories))
    if not isinstance(domain, (Float, Integer)) or not isinstance(sampler, (Uniform, LogUniform)):
        raise _unsupported(key, f"a {type(domain).__name__} domain with a {sampler} sampler (e.g. tune.randn)")
    log = isinstance(sampler, LogUniform)
    lower, upper = float(domain.lower), float(domain.upper)
    if not (math.isfinite(lower) and math.isfinite(upper)):
        raise _unsupported(key, "an unbounded range")
    if isinstance(domain, Float):
        if q is not None:
            lower, upper = _grid(lower, q, math.ceil) * q, _grid(upper, q, math.floor) * q
        return NumberParam(key, lower, upper, integer=False, log=log, q=None if q is None else float(q))
    if q is None or q == 1:  # Tune samples integers upper-exclusive here
        low, high = math.ceil(lower), math.ceil(upper) - 1
        return NumberParam(key, low, high, integer=True, log=log)
    low, high = _grid(lower, q, math.ceil) * q, _grid(upper, q, math.floor) * q
    return NumberParam(key, low, high, integer=True, log=log, q=float(q))


def _grid(bound: float, q: float, round_fn) -> int:
    """``bound``'s index on the multiples of ``q``, rounded inwards (as Tune's ``Quantized``)."""
    scaled = bound / q
    nearest = round(scaled)
    return int(nearest) if math.isclose(scaled, nearest) else int(round_fn(scaled))


__all__ = ["SUPPORTED", "split_param_space", "to_param"]
