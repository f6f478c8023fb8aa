"""Block data sets for the latency predictor: block spaces, sampling, parallel measurement on Ray, CSV files.

SpaceEvo (Sec. 4) trains its INT8 latency predictor on blocks sampled from the block-wise space and
measured on the target device. A :class:`BlockSpace` lists the choices (types, resolutions, widths per
resolution, kernels, strides, expand ratios, the stem and the head); :func:`sample_blocks` draws distinct
blocks (plus every stem and head, which all chains share); :func:`sample_chains` draws whole models for
calibration and evaluation. :func:`measure_parallel` times them on an ``ActorPool`` of
:class:`MeasureWorker` actors, each pinned to one CPU with one engine thread.

Two kinds of block space:

- a view of a SpaceEvo hyperspace (``spaceevo[:RES]``, ``spaceevo-tiny[:RES]``;
  :meth:`BlockSpace.from_hyperspace`): the hyperspace is the one description of which blocks exist
  (:meth:`nasq.spaces.spaceevo.Hyperspace.block_specs`: every type, width, kernel, expand, stride and
  resolution any candidate space can hold, with its stem and heads). Blocks are drawn from that list,
  stratified by (type, resolution, stride) so each part of every candidate space is measured, and chains
  are subnets of random candidate spaces (stem + N stages x 1..D blocks + head), as deep as the subnets
  the Q-T score prices (§4.2);
- the hand-made registry entries ``spaceevo-blocks`` and ``tiny`` (random walks of 4–10 blocks over
  widths per resolution), kept for the block-level tests and benchmarks that predate the hyperspace.

Concurrent measurement and noise: two actors on this 2-core machine time two blocks at once, one per
core; they share the last-level cache and memory bandwidth. Measured with
``benchmarks/bench_latency_predictor.py --noise`` (the same 10 blocks, 3 rounds with 1 actor and 3 rounds
with 2 concurrent actors, 30 repeats each; four runs on 2026-11-24 with the machine shared by other jobs,
load 9-25 on 2 cores): the 2-actor medians were 0.988-1.008× the 1-actor ones (at most 1.4-5.4 % apart
per block), the spread of a block's median across rounds was 0.7-1.4 % with 2 actors vs 0.8-1.5 % with
1, and the interquartile range of one timing was 1.2-2.6 % vs 1.0-2.3 % of the median. Concurrency costs
less than the outside load does, so the default is one actor per CPU (``actors=2`` here), which halves
the build time; pass ``actors=1`` on a quiet machine for the steadiest table. Under heavy outside load
the 25th percentile is steadier than the median (interference only adds time):
``nasq latency build --stat p25``; and :func:`measure_robust` re-measures items whose IQR is wide.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from nasq.blocks.spec import BlockSpec, chain_key
from nasq.errors import ConfigError, DataError, bad_token

if TYPE_CHECKING:
    from nasq.spaces.spaceevo import Hyperspace

log = logging.getLogger(__name__)

DATASET_VERSION = 1


@dataclass(frozen=True)
class BlockSpace:
    """Choices of a block-wise search space (SpaceEvo Sec. 3) from which latency samples are drawn.

    Attributes:
        name: registered name.
        types: block types of the body.
        widths: output widths allowed per input resolution (resolutions are its keys, largest first).
        kernels: kernel sizes of the body blocks.
        expands: expand ratios of MobileNet/fused blocks.
        resnet_expands: bottleneck ratios of ResNet blocks (hidden width = cout × ratio).
        stem_resolution: input resolution of the stem (stride 2 onto the largest body resolution).
        stem_kernels: kernel sizes of the stem.
        classes: classifier width of the head.
        stride2_prob: probability that a body block halves the resolution (where a smaller one exists).
        hyperspace: the SpaceEvo hyperspace this space is a view of (:meth:`from_hyperspace`); its
            :meth:`~nasq.spaces.spaceevo.Hyperspace.block_specs` is then the exact set of blocks, and the
            fields above summarise it (``None`` for the hand-made spaces).
    """

    name: str
    types: tuple[str, ...]
    widths: dict[int, tuple[int, ...]] = field(hash=False)
    kernels: tuple[int, ...] = (3, 5)
    expands: tuple[float, ...] = (1.0, 3.0, 4.0, 6.0)
    resnet_expands: tuple[float, ...] = (0.25, 0.5, 1.0)
    stem_resolution: int = 112
    stem_kernels: tuple[int, ...] = (3,)
    classes: int = 1000
    stride2_prob: float = 0.35
    hyperspace: Hyperspace | None = None

    @classmethod
    def from_hyperspace(cls, hyperspace: Hyperspace, name: str) -> BlockSpace:
        """The view of a SpaceEvo hyperspace (§4.1): its blocks, summarised as choice sets.

        ``widths`` maps each output resolution to the output widths of the blocks (stem included) that
        produce it; types, kernels and expand lists are the hyperspace's.
        """
        widths: dict[int, set[int]] = {}
        for s in _hyper_blocks(hyperspace):
            if s.type != "head":
                widths.setdefault(s.out_resolution, set()).add(s.cout)
        return cls(name, hyperspace.types, {r: tuple(sorted(w)) for r, w in widths.items()},
                   kernels=hyperspace.kernels, expands=hyperspace.expands,
                   resnet_expands=hyperspace.resnet_expands, stem_resolution=hyperspace.resolution,
                   stem_kernels=(hyperspace.stem().kernel,), classes=hyperspace.classes,
                   hyperspace=hyperspace)

    @property
    def resolutions(self) -> list[int]:
        """Body resolutions, largest first."""
        return sorted(self.widths, reverse=True)

    def stems(self) -> list[BlockSpec]:
        """Every stem of the space."""
        if self.hyperspace is not None:
            return [self.hyperspace.stem()]
        r0 = self.resolutions[0]
        return [BlockSpec("stem", self.stem_resolution, 3, w, k, 2) for w in self.widths[r0]
                for k in self.stem_kernels]

    def heads(self) -> list[BlockSpec]:
        """Every head of the space (one per resolution and width; a hyperspace: per last-stage width)."""
        if self.hyperspace is not None:
            return [self.hyperspace.head(w) for w in self.hyperspace.widths[-1]]
        return [BlockSpec("head", r, w, self.classes, 1, 1) for r in self.resolutions for w in self.widths[r]]

    def block_specs(self) -> list[BlockSpec]:
        """Every block of a hyperspace view (stem, body, heads); ConfigError for a hand-made space."""
        if self.hyperspace is None:
            raise ConfigError(f"block space {self.name!r} is not a hyperspace view and lists no finite block "
                              "set; use spaceevo[:RES] or spaceevo-tiny[:RES]")
        return list(_hyper_blocks(self.hyperspace))

    def contains(self, spec: BlockSpec) -> bool:
        """Whether ``spec`` is one of :meth:`block_specs` (a hyperspace view only)."""
        if self.hyperspace is None:
            self.block_specs()  # raises the ConfigError
        return spec.key() in _hyper_keys(self.hyperspace)


@lru_cache(maxsize=8)
def _hyper_blocks(hyperspace: Hyperspace) -> tuple[BlockSpec, ...]:
    return tuple(hyperspace.block_specs())


@lru_cache(maxsize=8)
def _hyper_keys(hyperspace: Hyperspace) -> frozenset[str]:
    return frozenset(s.key() for s in _hyper_blocks(hyperspace))


BLOCK_SPACES: dict[str, BlockSpace] = {}


def register_space(space: BlockSpace) -> BlockSpace:
    """Register a block space under its name."""
    BLOCK_SPACES[space.name] = space
    return space


#: SpaceEvo hyperspaces (names of :func:`nasq.spaces.get`, with an optional ``:RES``) a block space can view.
HYPERSPACES: tuple[str, ...] = ("spaceevo", "spaceevo-tiny")


def get_space(name: str) -> BlockSpace:
    """A registered block space, or the view of hyperspace ``spaceevo[:RES]`` / ``spaceevo-tiny[:RES]``.

    Raises:
        ConfigError: an unknown name (listing the known ones) or a bad resolution.
    """
    if name in BLOCK_SPACES:
        return BLOCK_SPACES[name]
    if isinstance(name, str) and name.partition(":")[0] in HYPERSPACES:
        return hyperspace_blocks(name)
    known = sorted(BLOCK_SPACES) + [f"{h}[:RES]" for h in HYPERSPACES]
    raise ConfigError(bad_token("block space", name, known))


@lru_cache(maxsize=16)
def hyperspace_blocks(name: str) -> BlockSpace:
    """The :class:`BlockSpace` view of the hyperspace ``name`` (e.g. ``spaceevo:224``; §4.1, §4.3)."""
    from nasq import spaces

    if name.partition(":")[0] not in HYPERSPACES:
        raise ConfigError(bad_token("hyperspace", name, [f"{h}[:RES]" for h in HYPERSPACES]))
    return BlockSpace.from_hyperspace(spaces.get(name).hyperspace, name)


ALL_TYPES = ("mbv1", "mbv2", "mbv3", "resnet_bottleneck", "resnet_bottleneck_se", "fused_mb", "fused_mb_se")
register_space(BlockSpace("spaceevo-blocks", ALL_TYPES, {
    56: (16, 24, 32, 48), 28: (24, 32, 48, 64, 96), 14: (48, 64, 96, 128, 160), 7: (96, 128, 160, 256)}))
register_space(BlockSpace("tiny", ALL_TYPES, {14: (8, 16), 7: (16, 24)}, kernels=(3,), expands=(1.0, 3.0),
                          resnet_expands=(0.5,), stem_resolution=28, classes=10))


def _expand(space: BlockSpace, t: str, rng: np.random.Generator) -> float:
    if t == "mbv1":
        return 1.0
    pool = space.resnet_expands if t.startswith("resnet") else space.expands
    return float(pool[rng.integers(len(pool))])


def _body_block(space: BlockSpace, rng: np.random.Generator, res: int, cin: int) -> BlockSpec:
    """One random body block at ``res`` with ``cin`` input channels."""
    res_list = space.resolutions
    smaller = res_list.index(res) + 1 < len(res_list)
    stride = 2 if smaller and rng.random() < space.stride2_prob else 1
    out_res = res_list[res_list.index(res) + 1] if stride == 2 else res
    t = space.types[rng.integers(len(space.types))]
    cout = int(rng.choice(space.widths[out_res]))
    kernel = int(rng.choice(space.kernels))
    return BlockSpec(t, res, cin, cout, kernel, stride, _expand(space, t, rng))


def sample_blocks(space: BlockSpace | str, n: int, seed: int = 0, *,
                  include_ends: bool = True) -> list[BlockSpec]:
    """Draw ``n`` distinct body blocks (Sec. 4 predictor training set), plus every stem and head.

    Args:
        space: a BlockSpace or its registered name.
        n: body blocks to draw (fewer if the space has fewer distinct ones).
        seed: seed of the generator.
        include_ends: also return all stems and heads of the space (appended after the body blocks).
    """
    space = get_space(space) if isinstance(space, str) else space
    rng = np.random.default_rng(seed)
    ends = space.stems() + space.heads() if include_ends else []
    if space.hyperspace is not None:
        return _stratified_blocks(space.hyperspace, n, rng) + ends
    seen: dict[str, BlockSpec] = {}
    for _ in range(50 * n + 100):
        if len(seen) >= n:
            break
        res = space.resolutions[rng.integers(len(space.resolutions))]
        spec = _body_block(space, rng, res, int(rng.choice(space.widths[res])))
        seen.setdefault(spec.key(), spec)
    return list(seen.values()) + ends


def _stratified_blocks(hyperspace: Hyperspace, n: int, rng: np.random.Generator) -> list[BlockSpec]:
    """``n`` distinct body blocks of the hyperspace, round-robin over (type, resolution, stride) groups.

    Every group (a block type at one stage position) gets within one block of the same count until it
    runs out, so a per-type regressor sees every resolution and stride of every candidate space.
    """
    groups: dict[tuple, list[BlockSpec]] = {}
    for s in _hyper_blocks(hyperspace):
        if s.type not in ("stem", "head"):
            groups.setdefault((s.type, s.resolution, s.stride), []).append(s)
    pools = [[g[int(i)] for i in rng.permutation(len(g))] for g in groups.values()]
    out: list[BlockSpec] = []
    while len(out) < n and any(pools):
        for j in rng.permutation(len(pools)):
            if pools[j] and len(out) < n:
                out.append(pools[j].pop())
    return out


def sample_chains(space: BlockSpace | str, n: int, seed: int = 1, min_blocks: int = 4,
                  max_blocks: int = 10) -> list[list[BlockSpec]]:
    """Draw ``n`` whole models for calibration and evaluation (Sec. 4 check).

    A hyperspace view draws subnets of random candidate spaces (:func:`sample_subnet_chains`; the block
    counts are the subnets' own); a hand-made space draws a stem, ``min_blocks``–``max_blocks`` body
    blocks and a head.
    """
    space = get_space(space) if isinstance(space, str) else space
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"the number of chains must be an integer >= 0, got {n!r}")
    if space.hyperspace is not None:
        return sample_subnet_chains(space.hyperspace, n, seed)
    if not 1 <= min_blocks <= max_blocks:
        raise ConfigError(f"need 1 <= min_blocks <= max_blocks, got {min_blocks} and {max_blocks}")
    rng = np.random.default_rng(seed)
    chains = []
    for _ in range(n):
        stems = space.stems()
        chain = [stems[rng.integers(len(stems))]]
        for _ in range(int(rng.integers(min_blocks, max_blocks + 1))):
            prev = chain[-1]
            chain.append(_body_block(space, rng, prev.out_resolution, prev.cout))
        last = chain[-1]
        chain.append(BlockSpec("head", last.out_resolution, last.cout, space.classes, 1, 1))
        chains.append(chain)
    return chains


def sample_subnet_chains(hyperspace: Hyperspace, n: int, seed: int = 1) -> list[list[BlockSpec]]:
    """``n`` subnets, each of its own random candidate space, as BlockSpec chains (SpaceEvo §4.2, §4.4).

    Each chain is stem + every stage's 1..D blocks + head, drawn the way the Q-T score draws subnets
    (:meth:`~nasq.spaces.spaceevo_subnet.CandidateSpace.sample_subnets`), so calibration and evaluation
    see the depths and block mixes the predictor is asked about.
    """
    from nasq.spaces.spaceevo import SpaceEvoSpace

    space = SpaceEvoSpace(hyperspace)
    rng = np.random.default_rng(seed)
    chains = []
    for _ in range(n):
        cand = space.candidate(space.random(rng))
        chains.append(cand.blocks(cand.genome(cand.sample_subnets(1, rng), 0)))
    return chains


@dataclass
class MeasureSettings:
    """How each item is timed (passed to :func:`nasq.latency.measure.measure_specs`)."""

    engine: str = "ort-int8"   # engine name
    threads: int = 1           # engine intra-op threads
    repeats: int = 50          # timed runs per item
    warmup: int = 10           # untimed runs first


def _measure_one(specs: list[BlockSpec], settings: MeasureSettings, cpu: int | None) -> dict:
    from nasq.latency.measure import measure_specs

    m = measure_specs(specs, settings.engine, threads=settings.threads, repeats=settings.repeats,
                      warmup=settings.warmup, cpus=None if cpu is None else (cpu,))
    return {"key": chain_key(specs), "median_ms": m.median_ms, "p25_ms": m.p25_ms, "p75_ms": m.p75_ms,
            "repeats": m.repeats, "fingerprint": m.fingerprint, "load1": float(m.load_avg[0]),
            "cpu": m.cpus[0] if m.cpus else cpu}


def pin_to_cpu(index: int) -> int:
    """Pin this process to the ``index``-th CPU it may run on (modulo their count); return the CPU id."""
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[index % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    return cpu


class MeasureWorker:
    """Measures block chains in its own process, pinned to one CPU (wrapped as a Ray actor)."""

    def __init__(self, settings: MeasureSettings, cpu_index: int | None) -> None:
        self.settings = settings
        self.cpu = pin_to_cpu(cpu_index) if cpu_index is not None else None
        import torch

        torch.set_num_threads(1)

    def measure(self, keys: list[str]) -> dict:
        """Measure one chain given as block keys; return its row dict (with the CPU it ran on)."""
        return _measure_one([BlockSpec.from_key(k) for k in keys], self.settings, self.cpu)


def measure_parallel(items: Sequence[Sequence[BlockSpec]], settings: MeasureSettings, actors: int = 2,
                     pin: bool = True) -> list[dict]:
    """Measure each item (a block chain, often one block) on an ActorPool of pinned actors (Sec. 4).

    Args:
        items: chains to time whole; ``[spec]`` times one block.
        settings: engine and timing settings.
        actors: measuring actors (0 = measure in this process, no Ray).
        pin: pin actor ``i`` to CPU ``i`` (modulo the CPU count).

    Returns:
        One row dict per item, in input order: key, median_ms, p25_ms, p75_ms, repeats, fingerprint,
        load1 and cpu.
    """
    keyed = [[s.key() for s in item] for item in items]
    if actors <= 0:
        import torch

        threads = torch.get_num_threads()  # the worker pins torch to one thread: give it back after
        try:
            worker = MeasureWorker(settings, None)
            return [worker.measure(k) for k in keyed]
        finally:
            torch.set_num_threads(threads)
    import ray
    from ray.util import ActorPool

    if not ray.is_initialized():
        raise ConfigError("measure_parallel with actors > 0 needs Ray; call ray.init() (the CLI does) "
                          "or pass actors=0")
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if actors > cpus:  # the extra actors would never be scheduled and the pool would wait forever
        raise ConfigError(f"{actors} measuring actors need {actors} CPUs but the Ray cluster has {cpus}; "
                          f"use --actors {max(cpus, 0)} or fewer (0 = measure without Ray)")
    remote = ray.remote(num_cpus=1)(MeasureWorker)
    pool_actors = [remote.remote(settings, i if pin else None) for i in range(actors)]
    try:
        pool = ActorPool(pool_actors)
        return list(pool.map(lambda a, k: a.measure.remote(k), keyed))
    finally:
        for a in pool_actors:
            ray.kill(a)


def iqr_ratio(row: dict) -> float:
    """Interquartile range of a measured row relative to its median."""
    return (row["p75_ms"] - row["p25_ms"]) / row["median_ms"]


def measure_robust(items: Sequence[Sequence[BlockSpec]], settings: MeasureSettings, actors: int = 2,
                   max_iqr: float = 0.1, retries: int = 2) -> list[dict]:
    """:func:`measure_parallel`, then re-measure items whose IQR exceeds ``max_iqr`` of their median.

    Another process taking the CPU mid-measurement shows up as a wide interquartile range; such items are
    measured again (up to ``retries`` times) and the steadiest measurement is kept. The choice depends
    only on the measurement's own spread, never on a prediction. Each row gets ``attempts``.
    """
    rows = measure_parallel(items, settings, actors=actors)
    for row in rows:
        row["attempts"] = 1
    for _ in range(retries):
        noisy = [i for i, r in enumerate(rows) if iqr_ratio(r) > max_iqr]
        if not noisy:
            break
        log.info("re-measuring %d of %d items with IQR > %.0f%% of the median", len(noisy), len(rows),
                 100 * max_iqr)
        again = measure_parallel([items[i] for i in noisy], settings, actors=actors)
        for i, new in zip(noisy, again):
            new["attempts"] = rows[i]["attempts"] + 1
            rows[i] = new if iqr_ratio(new) < iqr_ratio(rows[i]) else {**rows[i], "attempts": new["attempts"]}
    return rows


CSV_FIELDS = ("key", "n_blocks", "median_ms", "p25_ms", "p75_ms", "repeats", "load1", "cpu", "attempts")


def write_dataset(path: str | Path, rows: Sequence[dict], fingerprint: dict,
                  meta: dict | None = None) -> Path:
    """Write measured rows as CSV; the first line is a ``#`` comment with the fingerprint and meta as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {"nasq_latency_dataset": DATASET_VERSION, "fingerprint": fingerprint, "meta": meta or {}}
    with open(path, "w", newline="") as fh:
        fh.write("# " + json.dumps(head, sort_keys=True) + "\n")
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "n_blocks": row["key"].count("+") + 1})
    return path


def read_dataset(path: str | Path) -> tuple[list[dict], dict, dict]:
    """Read a file of :func:`write_dataset`: (rows with float latencies, fingerprint, meta)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            first = fh.readline()
            head = json.loads(first[1:]) if first.startswith("#") else None
            if not head or head.get("nasq_latency_dataset") != DATASET_VERSION:
                raise DataError(f"{path} is not a nasq latency data set (version {DATASET_VERSION}); "
                                "write it with `nasq latency build`")
            rows = [{**r, "median_ms": float(r["median_ms"]), "p25_ms": float(r["p25_ms"]),
                     "p75_ms": float(r["p75_ms"])} for r in csv.DictReader(fh)]
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read latency data set {path}: {exc}; rebuild it with `nasq latency build`")
    return rows, head["fingerprint"], head.get("meta", {})
