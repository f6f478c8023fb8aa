"""Space search on this CPU (SpaceEvo §4.4, §5): the found space against hand-made ones, side by side.

One run, on one accuracy table and one INT8 latency predictor:

1. latency limits from the predictor's range: subnets of random candidate spaces are priced and the limits
   are quantiles of their predicted INT8 latency (``--quantiles``), so every limit is reachable by some
   spaces and not by others;
2. ``nasq search spaceevo`` (the CLI, through Ray Tune with ``AgingEvolutionSearcher``, two children per
   parent, every homogeneous space in the first population) with those limits;
3. the Q-T score, on the same subnet draw, limits and tables, of the best space found, of every homogeneous
   space (each block type at every window position), of a MobileNetV2-like and a MobileNetV3-like
   hand-made space (the windows nearest those networks' stage widths), and of random spaces;
4. the block type per stage of the found space and of the search's final population.

The table (``--lut``) comes from ``nasq lut build`` and the predictor (``--predictor``) from ``nasq latency
build --hyperspace`` on this CPU; the commands that made the committed result are in its notes.

Run: ``.venv/bin/python benchmarks/bench_space_search.py --lut DIR --predictor FILE [--samples 1000]
[--population 100 --sample-size 25] [--storage DIR]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import REPO, RESULTS, format_table, machine_note, median, write_results

from nasq.bkd.table import AccuracyLUT
from nasq.latency.predictor import LatencyPredictor
from nasq.qt_score import qt_details, subnet_latencies
from nasq.spaceevo_report import METRIC, final_population, population_histogram
from nasq.spaces.spaceevo import SpaceEvoSpace, SpaceGenome

# Stage output widths of the hand-made networks, one per elastic stage (stride-1 16-wide first block of
# both networks is folded into the stem). MobileNetV3-Large: 24, 40, 80, 112, 160 (its last stage repeats
# 160); SE and hardswish sit in its later stages, which nasq's ``mbv3`` type (SE + hardswish) stands for.
MBV2_WIDTHS = (24, 32, 64, 96, 160, 320)
MBV3_WIDTHS = (24, 40, 80, 112, 160, 160)
MBV3_TYPES = ("mbv2", "mbv2", "mbv3", "mbv3", "mbv3", "mbv3")


def nearest_windows(space: SpaceEvoSpace, targets: tuple[int, ...]) -> tuple[int, ...]:
    """Per stage, the window whose centre width is nearest ``targets[i]`` (a hand-made space's widths)."""
    h = space.hyperspace
    out = []
    for i, target in enumerate(targets[:h.num_stages]):
        centres = [np.mean(h.widths[i][j:j + h.window]) for j in range(h.num_windows(i))]
        out.append(int(np.argmin([abs(c - target) for c in centres])))
    return tuple(out)


def reference_spaces(space: SpaceEvoSpace, n_random: int, seed: int) -> dict[str, str]:
    """Homogeneous spaces at every window position, MBv2-like, MBv3-like and random spaces."""
    h = space.hyperspace
    refs = {}
    for t in h.types:
        for w in range(max(h.num_windows(i) for i in range(h.num_stages))):
            refs[f"homogeneous {t} w{w}"] = space.encode(space.homogeneous(t, w))
    n = h.num_stages
    refs["MobileNetV2-like"] = space.encode(SpaceGenome(("mbv2",) * n, nearest_windows(space, MBV2_WIDTHS)))
    refs["MobileNetV3-like"] = space.encode(SpaceGenome(MBV3_TYPES[:n], nearest_windows(space, MBV3_WIDTHS)))
    rng = np.random.default_rng(seed)
    for k in range(n_random):
        refs[f"random {k}"] = space.encode(space.random(rng))
    return refs


def latency_limits(space: SpaceEvoSpace, predictor: LatencyPredictor, quantiles: list[float],
                   seed: int) -> tuple[list[float], np.ndarray]:
    """Limits = quantiles of the predicted INT8 latency of subnets of 40 random spaces (ms, 2 decimals)."""
    rng = np.random.default_rng(seed)
    lats = []
    for _ in range(40):
        cand = space.candidate(space.random(rng))
        lats.append(subnet_latencies(cand, cand.sample_subnets(250, rng).unique(), predictor.predict_in_chain))
    lat = np.concatenate(lats)
    return [round(float(np.quantile(lat, q)), 2) for q in quantiles], lat


def run_search(args: argparse.Namespace, limits: list[float], run_dir: Path) -> float:
    """``nasq search spaceevo`` with the limits, as a user runs it; returns its wall seconds."""
    cmd = [str(REPO / ".venv" / "bin" / "nasq"), "search", "spaceevo", "--lut", args.lut,
           "--predictor", args.predictor, "--constraints-ms", ",".join(f"{v:g}" for v in limits),
           "--samples", str(args.samples), "--population", str(args.population),
           "--sample-size", str(args.sample_size), "--qt-subnets", str(args.qt_subnets), "--seed", str(args.seed),
           "--storage", str(run_dir.parent), "--name", run_dir.name]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def best_found(run_dir: Path) -> tuple[str, float]:
    """The best space of the search and its Q-T score (``spaceevo_best.json``)."""
    doc = json.loads((run_dir / "spaceevo_best.json").read_text())
    return str(doc["genome"]), float(doc[METRIC])


def score_rows(space: SpaceEvoSpace, named: dict[str, str], limits: list[float], lut: AccuracyLUT,
               predictor: LatencyPredictor, args: argparse.Namespace) -> list[list[object]]:
    """Q-T score and its per-limit parts of each named space (same draw seed, limits, tables)."""
    rows = []
    for name, genome in named.items():
        res = qt_details(space.candidate(genome), limits, lut.stage_losses, predictor.predict_in_chain,
                         n_subnets=args.qt_subnets, top_k=20, seed=0)
        rows.append([name, genome, res.score, *res.per_limit, *res.feasible])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lut", required=True, help="accuracy table folder of `nasq lut build`")
    ap.add_argument("--predictor", required=True, help="predictor file of `nasq latency build --hyperspace`")
    ap.add_argument("--samples", type=int, default=1000, help="spaces the search scores")
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--sample-size", type=int, default=25)
    ap.add_argument("--qt-subnets", type=int, default=5000)
    ap.add_argument("--quantiles", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--random", type=int, default=50, help="random spaces scored as a reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", default=str(REPO / "benchmarks" / "runs"))
    ap.add_argument("--run", default=None, help="score an existing search run instead of starting one")
    ap.add_argument("--out", default="space_search")
    args = ap.parse_args()

    lut = AccuracyLUT.load(args.lut)
    predictor = LatencyPredictor.load(args.predictor)
    space = lut.space
    load_start = machine_note()
    limits, lat = latency_limits(space, predictor, [float(q) for q in args.quantiles.split(",")], args.seed)
    print("limits (ms):", limits, flush=True)
    if args.run:
        run_dir, search_s = Path(args.run), float("nan")
    else:
        run_dir = Path(args.storage) / f"space_search_s{args.seed}"
        search_s = run_search(args, limits, run_dir)
    genome, reported = best_found(run_dir)
    named = {"found by the search": genome, **reference_spaces(space, args.random, args.seed + 1)}
    rows = score_rows(space, named, limits, lut, predictor, args)
    found = rows[0][2]
    ranked = sorted(rows[1:], key=lambda r: -r[2])
    homo = [r for r in ranked if r[0].startswith("homogeneous")]
    hand = [r for r in ranked if r[0].startswith("MobileNet")]
    rand = [r[2] for r in ranked if r[0].startswith("random")]
    table = [rows[0], homo[0], *hand]
    summary = [[r[0], cell(r[1]), f"{r[2]:.3f}", f"{found - r[2]:+.3f}",
                " / ".join(f"{p:.2f}" for p in r[3:3 + len(limits)]),
                " / ".join(str(c) for c in r[3 + len(limits):])] for r in table]
    summary.append(["random spaces (median, best)", f"{len(rand)} spaces",
                    f"{median(rand):.3f}, {max(rand):.3f}", f"{found - median(rand):+.3f}", "", ""])
    hist = population_histogram(final_population(run_dir), space)
    notes = [
        load_start,
        f"after the run: {machine_note()}",
        f"table {args.lut} (version {lut.version}, {len(lut)} rows, hyperspace {space.name}:"
        f"{space.hyperspace.resolution}); predictor {args.predictor} (version {predictor.version})",
        f"limits (ms) = quantiles {args.quantiles} of the predicted INT8 latency of {len(lat)} subnets of 40 "
        f"random spaces: {limits} (their range {lat.min():.2f}-{lat.max():.2f} ms)",
        f"search: {args.samples} spaces, population {args.population}, sample size {args.sample_size}, two "
        f"children per parent, seed {args.seed}; {search_s:.0f} s wall; run {run_dir}; its reported best "
        f"Q-T {reported:.3f}",
        f"Q-T score: paper variant (mean 1/NSR-int8 of the top 20 per limit, summed), {args.qt_subnets} "
        "subnets, draw seed 0, the same for every space; 'vs found' = found minus this row",
        f"found space, block type per stage: {genome.replace('|', ' / ')}",
        "per-limit parts and feasible subnets are listed low limit first",
    ]
    headers = ["space", "string", "Q-T", "vs found", "per limit", "feasible subnets"]
    raw_headers = ["space", "string", "qt", *[f"qt_{v:g}ms" for v in limits],
                   *[f"feasible_{v:g}ms" for v in limits]]
    write_results(args.out, "SpaceEvo space search on this CPU: found space vs hand-made spaces", notes,
                  headers, summary, raw=(raw_headers, [rows[0], *ranked]))
    section = "\n".join(["", "## Final population: spaces per block type per stage", "",
                         histogram_table(hist, space), ""])
    with open(RESULTS / f"{args.out}.md", "a") as f:
        f.write(section)
    print(section)


def cell(text: str) -> str:
    """A space string inside a Markdown table cell (its stage separators escaped)."""
    return text.replace("|", "\\|")


def histogram_table(hist, space: SpaceEvoSpace) -> str:
    """The final population's (stage x block type) counts as a Markdown table, one row per stage."""
    types = list(space.hyperspace.types)
    wide = hist.pivot(index="stage", columns="block_type", values="count").reindex(columns=types)
    return format_table(["stage", *types], [[i, *(int(v) for v in row)] for i, row in wide.iterrows()])


if __name__ == "__main__":
    sys.exit(main())
