"""INT8 latency predictor on this CPU: accuracy on unseen whole models, cost per prediction, noise of
concurrent measurement (SpaceEvo Sec. 4; issue 4).

One run:
1. builds the predictor for ``ort-int8`` (blocks sampled from ``spaceevo-blocks`` plus every stem/head,
   a few calibration chains), timed;
2. fits a baseline in the same run: a random forest on plain block features (type, resolution, widths,
   kernel, stride, expand; log-latency target), model latency = sum of its blocks;
3. measures unseen random models (stem + 4–10 blocks + head) end to end and compares: share within ±5 % and
   ±10 %, RMSPE, for the predictor, its regressor alone (no table), the plain sum of blocks without the
   calibrated overhead, and the baseline;
4. 5-fold cross-validation on the measured blocks (regressor vs forest on held-out single blocks);
5. times one prediction (single unseen block, single whole model, batched) against one measurement;
6. measures the same models a second time: how often two measurements agree (the noise ceiling);
7. ``--noise``: the same 10 blocks measured 3× with 1 actor and 3× with 2 concurrent actors.

Default is the reduced run (machine shared with other jobs); ``--full`` is for a quiet machine.
Writes benchmarks/results/latency_predictor.{md,csv,json,png}.

    .venv/bin/python benchmarks/bench_latency_predictor.py [--full] [--noise]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np
from common import RESULTS, machine_note, write_results
from sklearn.ensemble import RandomForestRegressor

from nasq.latency.dataset import MeasureSettings, iqr_ratio, measure_parallel, measure_robust, sample_blocks
from nasq.latency.evaluate import (accuracy_metrics, build_predictor, evaluate_predictor, load_chains,
                                   plot_predicted_vs_measured)
from nasq.latency.features import plain_features
from nasq.latency.predictor import LatencyPredictor, as_specs

REDUCED = {"samples": 300, "calib": 24, "models": 40, "repeats": 30}
FULL = {"samples": 600, "calib": 40, "models": 80, "repeats": 50}


def per_call_us(fn, n: int, rounds_n: int = 5) -> float:
    """Median over ``rounds_n`` rounds of the mean time per call of ``fn`` (microseconds)."""
    rounds = []
    for _ in range(rounds_n):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return float(np.median(rounds))


def noise_experiment(actors_list=(1, 2), rounds: int = 3, repeats: int = 30) -> list[list[object]]:
    """Same 10 blocks, measured ``rounds`` times with each actor count: spread of medians and IQR."""
    blocks = sample_blocks("spaceevo-blocks", 10, seed=777, include_ends=False)
    rows = []
    medians: dict[int, np.ndarray] = {}
    for actors in actors_list:
        settings = MeasureSettings(repeats=repeats, warmup=5)
        runs = [measure_parallel([[b] for b in blocks], settings, actors=actors) for _ in range(rounds)]
        med = np.array([[r["median_ms"] for r in run] for run in runs])             # rounds x blocks
        iqr = np.array([[(r["p75_ms"] - r["p25_ms"]) / r["median_ms"] for r in run] for run in runs])
        medians[actors] = np.median(med, axis=0)
        spread = np.std(med, axis=0) / np.mean(med, axis=0)
        rows.append([f"{actors} actor(s)", f"{np.median(spread):.1%}", f"{np.max(spread):.1%}",
                     f"{np.median(iqr):.1%}", f"{os.getloadavg()[0]:.1f}"])
    if len(medians) == 2:
        a, b = medians[actors_list[0]], medians[actors_list[1]]
        rows.append([f"{actors_list[1]} vs {actors_list[0]}: median of per-block ratio",
                     f"{np.median(b / a):.3f}", f"{np.max(np.abs(b / a - 1)):.1%} max", "", ""])
    return rows


def baseline_forest(report, seed: int) -> RandomForestRegressor:
    """Random forest on plain block features, fitted on the same measured blocks (log target)."""
    pred = report.predictor
    keys = sorted(pred.table)
    rf = RandomForestRegressor(n_estimators=300, random_state=seed, n_jobs=1)
    rf.fit(plain_features(as_specs(keys)), np.log([pred.table[k] for k in keys]))
    return rf


def accuracy(rep, ev, settings: MeasureSettings, actors: int, seed: int) -> tuple[dict, dict]:
    """Metrics of the predictor, its ablations, the baseline, the p25 variant and the noise ceiling."""
    pred, chains, rf = rep.predictor, load_chains(ev.keys), baseline_forest(rep, seed)
    variants = {
        "nasq predictor (table + regressor + overhead)": ev.predicted_ms,
        "regressor only (no table)": np.array([pred.predict_regressor(c).sum() for c in chains]),
        "sum of blocks, no overhead": np.array([pred.predict(c).sum() for c in chains]),
        "baseline: random forest on plain features": np.array(
            [np.exp(rf.predict(plain_features(c))).sum() for c in chains]),
    }
    metrics = {k: accuracy_metrics(v, ev.measured_ms) for k, v in variants.items()}
    # the same measurements on their 25th percentile (steadier on a shared CPU), predictor refitted on it
    p25 = LatencyPredictor.fit([r["key"] for r in rep.rows], [r["p25_ms"] for r in rep.rows],
                               engine="ort-int8", fingerprint=pred.fingerprint, seed=seed)
    p25.calibrate(load_chains([r["key"] for r in rep.chain_rows]), [r["p25_ms"] for r in rep.chain_rows])
    metrics["same, fitted and scored on p25 timings"] = accuracy_metrics(
        [p25.predict_model(c) for c in chains], [r["p25_ms"] for r in ev.rows])
    # noise ceiling: the same models measured again, scored against the first measurement
    again = measure_robust(chains, settings, actors=actors)
    metrics["noise ceiling: the same models re-measured"] = accuracy_metrics(
        [r["median_ms"] for r in again], ev.measured_ms)
    return metrics, variants


def block_cv(rep, seed: int) -> dict[str, dict]:
    """5-fold cross-validation on the measured blocks: regressor vs random forest on held-out blocks."""
    from sklearn.model_selection import KFold

    rows = [r for r in rep.rows if r["key"].split("-")[0] not in ("stem", "head")]
    keys, y = [r["key"] for r in rows], np.array([r["median_ms"] for r in rows])
    clean = np.array([iqr_ratio(r) <= 0.05 for r in rows])
    ours, forest = np.zeros(len(y)), np.zeros(len(y))
    for tr, te in KFold(5, shuffle=True, random_state=seed).split(keys):
        fitted = LatencyPredictor.fit([keys[i] for i in tr], y[tr], engine="ort-int8", fingerprint={},
                                      seed=seed)
        ours[te] = fitted.predict_regressor([keys[i] for i in te])
        rf = RandomForestRegressor(n_estimators=300, random_state=seed, n_jobs=1)
        rf.fit(plain_features(as_specs([keys[i] for i in tr])), np.log(y[tr]))
        forest[te] = np.exp(rf.predict(plain_features(as_specs([keys[i] for i in te]))))
    return {"held-out blocks: nasq regressor": accuracy_metrics(ours, y),
            "held-out blocks: random forest baseline": accuracy_metrics(forest, y),
            "held-out blocks with IQR <= 5%: nasq regressor": accuracy_metrics(ours[clean], y[clean]),
            "held-out blocks with IQR <= 5%: random forest": accuracy_metrics(forest[clean], y[clean])}


def cost(pred, chain, settings: MeasureSettings) -> tuple[list[list[str]], dict]:
    """Time one prediction (block, model, batched) against one in-process measurement of a block."""
    unseen = [s for s in sample_blocks("spaceevo-blocks", 400, seed=999, include_ends=False)
              if s.key() not in pred.table][:200]
    us = {"block": per_call_us(lambda: pred.predict([unseen[0]]), 2000),
          "model": per_call_us(lambda: pred.predict_model(chain), 1000),
          "batched_block": per_call_us(lambda: pred.predict(unseen), 20) / len(unseen)}
    measure_us = float(np.median([per_call_us(lambda: measure_parallel([[b]], settings, actors=0), 1, 1)
                                  for b in unseen[:3]]))  # export + quantize + time one block
    names = {"block": "one unseen block, one call",
             "model": f"one whole model ({len(chain)} blocks), one call",
             "batched_block": f"batched, per block ({len(unseen)} unseen)"}
    rows = [[names[k], f"{v:.1f} µs", f"{measure_us / v:,.0f}×"] for k, v in us.items()]
    return rows, {**us, "measure_one_block_us": measure_us}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full size (quiet machine)")
    parser.add_argument("--noise", action="store_true", help="also run the 1-vs-2 actor noise experiment")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import ray

    ray.init(address="local", num_cpus=max(2, args.actors), include_dashboard=False, log_to_driver=False)
    size = FULL if args.full else REDUCED
    settings = MeasureSettings(repeats=size["repeats"], warmup=5)
    load_start, t0 = os.getloadavg(), time.perf_counter()
    rep = build_predictor("ort-int8", samples=size["samples"], calib_chains=size["calib"],
                          actors=args.actors, settings=settings, seed=args.seed,
                          out=RESULTS / "latency_predictor.ort-int8.json")
    build_s = time.perf_counter() - t0
    ev = evaluate_predictor(rep.predictor, models=size["models"], actors=args.actors, settings=settings,
                            seed=12345)
    metrics, variants = accuracy(rep, ev, settings, args.actors, args.seed)
    metrics.update(block_cv(rep, args.seed))
    load_end = os.getloadavg()
    cost_rows, cost_us = cost(rep.predictor, load_chains(ev.keys[:1])[0], settings)
    noise_rows = noise_experiment() if args.noise else []
    notes = [machine_note(), f"size: {'full' if args.full else 'REDUCED (machine shared)'} {size}; load "
             f"average at start {load_start[0]:.1f}, after the accuracy part {load_end[0]:.1f} (2 cores)",
             f"build: {rep.blocks} blocks + {rep.chains} calibration chains measured in "
             f"{rep.measure_s:.0f} s "
             f"({args.actors} pinned actors), total build {build_s:.0f} s",
             f"eval: {ev.metrics['n']} unseen models, {ev.table_hits:.0%} of their blocks in the table; "
             f"predictor version {rep.predictor.version}; overhead {rep.predictor.overhead}",
             "cost of one prediction vs one measurement "
             f"({cost_us['measure_one_block_us'] / 1e6:.2f} s per block):",
             *[f"  {a}: {b} ({c} cheaper)" for a, b, c in cost_rows]]
    if noise_rows:
        notes.append("noise (same 10 blocks, 3 rounds each): " + "; ".join(
            f"{r[0]}: spread of medians median {r[1]}, max {r[2]}, IQR/median {r[3]}, load {r[4]}"
            if "actor(s)" in r[0] else f"{r[0]} {r[1]} ({r[2]})" for r in noise_rows))
    write(notes, metrics, variants, ev)
    (RESULTS / "latency_predictor.json").write_text(json.dumps(
        {"metrics": metrics, "cost_us": cost_us, "build_s": build_s, "load_start": load_start,
         "load_end": load_end, "noise": noise_rows, "size": size}, indent=1))


def write(notes: list[str], metrics: dict, variants: dict, ev) -> None:
    """Markdown table + CSV of per-model predictions + predicted-vs-measured PNG."""
    rows = [[k, m["n"], f"{m['within_5']:.1%}", f"{m['within_10']:.1%}", f"{m['rmspe']:.1%}",
             f"{m['median_abs_err']:.1%}"] for k, m in metrics.items()]
    raw_rows = [[k, m, *[v[i] for v in variants.values()]]
                for i, (k, m) in enumerate(zip(ev.keys, ev.measured_ms))]
    write_results("latency_predictor", "INT8 latency predictor (ort-int8) on unseen whole models", notes,
                  ["predictor", "models", "within ±5%", "within ±10%", "RMSPE", "median |err|"], rows,
                  raw=(["chain", "measured_ms", *variants], raw_rows))
    baseline = variants["baseline: random forest on plain features"]
    plot_predicted_vs_measured({"nasq predictor": (ev.measured_ms, ev.predicted_ms),
                                "random forest baseline": (ev.measured_ms, baseline)},
                               RESULTS / "latency_predictor.png",
                               f"ort-int8, {ev.metrics['n']} unseen models")


if __name__ == "__main__":
    main()
