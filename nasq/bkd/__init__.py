"""Block-wise knowledge distillation (SpaceEvo §4.5, DNA/DONNA): per-stage losses and the accuracy table."""

from typing import Any

__all__ = ["ESTIMATOR", "build_lut", "estimate_losses", "nsr_loss"]
_LAZY = {"build_lut": "nasq.bkd.build", "estimate_losses": "nasq.bkd.rows", "ESTIMATOR": "nasq.bkd.rows"}


def __getattr__(name: str) -> Any:
    """Load torch only when ``nsr_loss`` is used (the table reader and its Ray actor need no torch)."""
    if name == "nsr_loss":
        from nasq.bkd.nsr import nsr_loss

        return nsr_loss
    if name in _LAZY:  # the table build (torch) and the estimator of missing settings (numpy)
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nasq.bkd' has no attribute {name!r}")
