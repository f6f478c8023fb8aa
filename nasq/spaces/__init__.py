"""Registry of search spaces: ``get(name)``, ``register(name)``, ``list_spaces(pattern)``."""

from __future__ import annotations

import fnmatch
import importlib
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
}


def register(name: str) -> Callable[[Callable[..., Space]], Callable[..., Space]]:
    """Decorator registering a space factory (a class or function) under ``name``."""

    def deco(factory: Callable[..., Space]) -> Callable[..., Space]:
        _FACTORIES[name] = factory
        return factory

    return deco


def get(name: str | Space, **kwargs) -> Space:
    """Return a space instance: ``name`` is a registered name or already a space."""
    if isinstance(name, Space):
        return name
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
