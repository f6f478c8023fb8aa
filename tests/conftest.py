"""Shared fixtures: one real Ray runtime per test session (2 CPUs), data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# Tests run on 2 cores beside Ray workers: one intra-op thread keeps tiny convolutions fast.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray runtime with 2 CPUs, shared by every test that asks for it."""
    import ray

    os.environ.setdefault("RAY_ACCEPT_CLUSTER_RESOURCES", "1")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared data folder (``../shared/data``); tests needing it skip if absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def nb201_table(shared_data: Path) -> Path:
    """Path of the NAS-Bench-201 accuracy table."""
    return shared_data / "nb201" / "nb201_nats_tss_test_acc_200ep.csv"
