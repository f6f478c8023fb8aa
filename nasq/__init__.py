"""nasq: joint neural architecture and quantization search on Ray Tune.

Implements JASQ (joint architecture and quantization search) and SpaceEvo
(quantization-friendly search-space evolution). See README.md, section "Python API".

The public pieces load on first use (module-level ``__getattr__``), so ``import nasq`` stays light
and imports no Ray: ``nasq.spaces`` (genome spaces), ``nasq.searchers`` (Ray Tune searchers),
``nasq.trainables`` (Ray Tune trainables), ``nasq.settings`` (typed settings), ``nasq.runner``
(run and resume a search), ``nasq.predictor`` (the INT8 latency predictor,
:mod:`nasq.latency.predictor`), and the names below.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public module name -> module path
_MODULES: dict[str, str] = {
    "spaces": "nasq.spaces", "searchers": "nasq.searchers", "trainables": "nasq.trainables",
    "settings": "nasq.settings", "runner": "nasq.runner", "predictor": "nasq.latency.predictor",
    "experiments": "nasq.experiments", "runfile": "nasq.runfile",
}
# public name -> module defining it
_NAMES: dict[str, str] = {
    "SearchSettings": "nasq.settings", "NB201Settings": "nasq.settings", "JasqSettings": "nasq.settings",
    "QuantPolicySettings": "nasq.settings", "SpaceEvoSettings": "nasq.settings", "LutSettings": "nasq.settings",
    "qt_score": "nasq.qt_score", "AccuracyLUT": "nasq.bkd.table", "run_search": "nasq.runner", "resume_search": "nasq.runner",
    "make_searcher": "nasq.searchers", "AgingEvolutionSearcher": "nasq.searchers",
    "TournamentSelectionSearcher": "nasq.searchers", "RandomSearcher": "nasq.searchers",
    "LatencyPredictor": "nasq.latency.predictor", "BlockSpec": "nasq.blocks.spec",
    "list_spaces": "nasq.spaces",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        module = importlib.import_module(_MODULES[name])
        globals()[name] = module
        return module
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nasq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULES, *_NAMES])


__all__ = sorted([*_MODULES, *_NAMES])
