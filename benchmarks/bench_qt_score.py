"""Q-T score cost of one candidate space (SpaceEvo §4.2): 5k subnets × 5 latency limits on one core.

Side by side, in one run, on the same subnets, limits and tables:

- ``qt_score`` with a ``LatencyPredictor`` (fitted on this repository's measured ort-int8 blocks) as the
  latency source: it prices the space's ~840 distinct blocks once per call, then look-ups and sums;
- ``qt_score`` with a block-key → ms table (the hyperspace's blocks priced once for a whole search, the
  way a latency actor would serve them), so scoring is look-ups only;
- a naive per-subnet Python loop: each subnet's BlockSpec chain, a dict look-up per block key and per
  stage setting, then filter, sort and top-k per limit in Python.

The accuracy table is synthetic (a vectorised formula in the LUT protocol; the naive loop reads the same
numbers from a dict), because the block-wise KD table is not built yet; the cost does not depend on its
values. Both paths must give the same score; the table says so.

Run: ``.venv/bin/python benchmarks/bench_qt_score.py [--repeats 7] [--naive-repeats 3] [--cpu 0]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import time

import numpy as np
from common import REPO, cpu_model, median, percentile, write_results

from nasq.latency.dataset import read_dataset
from nasq.latency.predictor import LatencyPredictor
from nasq.qt_score import qt_score
from nasq.spaces import get
from nasq.spaces.spaceevo_subnet import setting_key, subnet_stage_keys

BLOCKS_CSV = REPO / "benchmarks" / "results" / "latency_predictor.ort-int8.blocks.csv"
LIMITS_MS = (0.5, 0.75, 1.0, 1.25, 1.5)
N_SUBNETS, TOP_K, SEED = 5000, 20, 0
TYPE_BASE = {"mbv1": 0.30, "mbv2": 0.20, "mbv3": 0.22, "resnet_bottleneck": 0.25,
             "resnet_bottleneck_se": 0.24, "fused_mb": 0.18, "fused_mb_se": 0.19}


def synthetic_lut(stage: int, block_type: str, rows: np.ndarray) -> np.ndarray:
    """A made-up INT8 NSR loss per stage setting: lower for wider, deeper, larger-kernel stages."""
    d = (rows.shape[1] - 2) // 3
    widths, kernels, expands = rows[:, 2:2 + d], rows[:, 2 + d:2 + 2 * d], rows[:, 2 + 2 * d:]
    gain = (np.log1p(widths) * (1 + 0.05 * kernels) * (1 + 0.02 * expands)).sum(axis=1)
    return TYPE_BASE[block_type] + 0.02 * stage + 1.0 / (1.0 + gain)


def naive_score(cand, lat: dict, lut: dict) -> float:
    """Per-subnet Python loop over BlockSpec keys and stage keys, then per-limit top-k in Python."""
    batch = cand.sample_subnets(N_SUBNETS, np.random.default_rng(SEED)).unique()
    scored = []
    for row in range(len(batch)):
        sub = cand.genome(batch, row)
        ms = sum(lat[s.key()] for s in sub.blocks(cand))
        loss = sum(lut[(i, cand.stages[i].type, k)] for i, k in enumerate(subnet_stage_keys(cand, sub)))
        scored.append((loss, ms))
    scored.sort(key=lambda x: x[0])
    total = 0.0
    for limit in LIMITS_MS:
        top = [loss for loss, ms in scored if ms <= limit][:TOP_K]
        total += sum(1.0 / loss for loss in top) / len(top) if top else 0.0
    return total


def timed(fn, repeats: int) -> tuple[list[float], list[float], float]:
    """Wall-clock and CPU seconds of each of ``repeats`` calls, and the last value."""
    wall, cpu, value = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--naive-repeats", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the first allowed)")
    args = ap.parse_args()
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    rows, fp, _ = read_dataset(BLOCKS_CSV)
    predictor = LatencyPredictor.fit([r["key"] for r in rows], [r["median_ms"] for r in rows],
                                     engine="ort-int8", fingerprint=fp)
    space = get("spaceevo")
    cand = space.candidate(space.random(np.random.default_rng(0)))
    t0 = time.perf_counter()
    hyper_specs = space.hyperspace.block_specs()
    hyper_table = dict(zip((s.key() for s in hyper_specs), predictor.predict(hyper_specs)))
    table_s = time.perf_counter() - t0
    batch = cand.sample_subnets(N_SUBNETS, np.random.default_rng(SEED)).unique()
    lut = {}
    for i, st in enumerate(cand.stages):
        settings = cand.stage_settings(batch, i)
        losses = synthetic_lut(i, st.type, settings)
        lut.update({(i, st.type, setting_key(r)): float(v) for r, v in zip(settings, losses)})

    def run(latency):
        return lambda: qt_score(cand, LIMITS_MS, synthetic_lut, latency, n_subnets=N_SUBNETS, top_k=TOP_K,
                                seed=SEED)

    load_before = os.getloadavg()[0]
    results = [("qt_score, LatencyPredictor source", *timed(run(predictor), args.repeats)),
               ("qt_score, block-key table source", *timed(run(hyper_table), args.repeats)),
               ("naive per-subnet Python loop",
                *timed(lambda: naive_score(cand, hyper_table, lut), args.naive_repeats))]
    load1 = max(load_before, os.getloadavg()[0])
    naive_med = median(results[-1][1])
    model = cpu_model()
    headers = ["method", "median s", "p25 s", "p75 s", "median CPU s", "repeats", "speed-up vs naive",
               "Q-T score"]
    table = [(name, f"{median(t):.4f}", f"{percentile(t, 25):.4f}", f"{percentile(t, 75):.4f}",
              f"{median(c):.4f}", len(t), f"{naive_med / median(t):.1f}x", f"{value:.6f}")
             for name, t, c, value in results]
    notes = [(f"{model}, pinned to CPU {cpu}, one numpy/BLAS thread; 1-minute load average {load1:.2f} on "
              f"{os.cpu_count()} cores (machine shared with other jobs)"),
             (f"space `{cand.name}` ({len(cand.distinct_blocks())} distinct blocks), {N_SUBNETS} subnets "
              f"drawn ({len(batch)} distinct), limits {list(LIMITS_MS)} ms, top-{TOP_K}, variant paper"),
             (f"latency: LatencyPredictor fitted on {len(rows)} measured ort-int8 blocks "
              f"({BLOCKS_CSV.name}); pricing all {len(hyper_specs)} blocks of the hyperspace once took "
              f"{table_s:.2f} s"),
             "accuracy table: synthetic formula (see the script); target: one space scored in <= 0.5 s",
             ("command: `.venv/bin/python benchmarks/bench_qt_score.py"
              f" --repeats {args.repeats} --naive-repeats {args.naive_repeats}`")]
    raw = (["method", "repeat", "seconds", "cpu_seconds", "score", "load1", "cpu_model"],
           [(name, i, f"{s:.6f}", f"{c[i]:.6f}", value, f"{load1:.2f}", model)
            for name, t, c, value in results for i, s in enumerate(t)])
    write_results("qt_score", "Q-T score cost: one space, 5k subnets x 5 limits, one core", notes, headers,
                  table, raw=raw)


if __name__ == "__main__":
    main()
