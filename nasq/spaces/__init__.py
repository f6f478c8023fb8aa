"""Registry of search spaces: ``get(name)``, ``register(name)``, ``list_spaces(pattern)``."""

from __future__ import annotations

import fnmatch
import importlib
import re
from typing import Callable

from nasq.errors import ConfigError, bad_token
from nasq.spaces.base import Space

_FACTORIES: dict[str, Callable[..., Space]] = {}
# Spaces whose modules are imported on first use, so `import nasq.spaces` stays light.
_LAZY: dict[str, str] = {
    "nb201": "nasq.spaces.nb201",
    "jasq": "nasq.spaces.jasq",
    "jasq-tiny": "nasq.spaces.jasq",
    "quant-policy": "nasq.spaces.quant_policy",
    "spaceevo": "nasq.spaces.spaceevo", "spaceevo-tiny": "nasq.spaces.spaceevo",
    "spaceevo-subnet": "nasq.spaces.subnet",
}


def register(name: str) -> Callable[[Callable[..., Space]], Callable[..., Space]]:
    """Decorator registering a space factory (a class or function) under ``name``."""

    def deco(factory: Callable[..., Space]) -> Callable[..., Space]:
        _FACTORIES[name] = factory
        return factory

    return deco


#: Spaces whose name takes a ``:RES`` input-resolution suffix (``spaceevo:224``).
_RESOLUTION_SUFFIX = ("spaceevo", "spaceevo-tiny")
_RES = re.compile(r"[1-9][0-9]*")  # ASCII digits only, canonical (no sign, no leading zero)


def get(name: str | Space, **kwargs) -> Space:
    """Return a space instance: ``name`` is a registered name, ``NAME:RES`` or already a space.

    ``spaceevo:224`` / ``spaceevo-tiny:32`` set the hyperspace's input resolution (SpaceEvo §4.1: strides
    follow the resolution); any other suffix, or one on a space without a resolution, is a ConfigError.
    """
    if isinstance(name, Space):
        return name
    if isinstance(name, str) and ":" in name:
        base, _, res = name.partition(":")
        if base not in _RESOLUTION_SUFFIX:
            raise ConfigError(bad_token("search space with a :RES suffix", base, list(_RESOLUTION_SUFFIX),
                                        name))
        if not _RES.fullmatch(res):
            raise ConfigError(bad_token("resolution", res, f"'{base}:RES' with RES a positive integer such "
                                        "as 32 or 224", name))
        if "resolution" in kwargs:
            raise ConfigError(f"space {name!r} names a resolution; drop the resolution argument or the :RES")
        return get(base, **kwargs, resolution=int(res))
    if name not in _FACTORIES and name in _LAZY:
        importlib.import_module(_LAZY[name])
    if name not in _FACTORIES:
        raise ConfigError(bad_token("search space", name, list_spaces()))
    return _FACTORIES[name](**kwargs)


def list_spaces(pattern: str = "*") -> list[str]:
    """Names of the registered spaces matching a shell-style ``pattern``."""
    names = set(_FACTORIES) | set(_LAZY)
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


__all__ = ["Space", "register", "get", "list_spaces"]
