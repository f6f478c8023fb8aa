"""Block-wise knowledge distillation (SpaceEvo §4.5, DNA/DONNA): per-stage losses and the accuracy table."""

from nasq.bkd.nsr import nsr_loss

__all__ = ["nsr_loss"]
