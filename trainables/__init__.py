"""Ray Tune trainables of nasq (installed as ``nasq.trainables``).

Each module registers its :class:`nasq.experiments.Experiment` when imported; modules are
imported lazily (by :func:`nasq.experiments.get`) so heavy dependencies load only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module defining it
_LAZY: dict[str, str] = {"nb201_trainable": "nasq.trainables.nb201"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nasq.trainables' has no attribute {name!r}")


__all__ = sorted(_LAZY)
