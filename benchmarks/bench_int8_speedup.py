"""INT8/FP32 speedup per block type and width on ONNX Runtime (U8S8, S8S8) and TFLite (SpaceEvo Fig. 3).

For every block type x width C x input resolution, one block (cin = cout = C, kernel 3, stride 1) is built,
exported for each engine variant and timed on one pinned thread: FP32 and INT8 sessions of a grid point are
created side by side and timed in interleaved rounds (the order rotates per round), median over all rounds.
The speedup is FP32 median / INT8 median (above 1 = INT8 faster); the tables report the median over
resolutions, like /work/shared/measurements/int8-onnxruntime-cpu.md, and are compared with it.

    python benchmarks/bench_int8_speedup.py            # reduced grid (resolutions 28, 14), for a busy machine
    python benchmarks/bench_int8_speedup.py --full     # resolutions 56/28/14/7, more repeats; machine quiet
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import RESULTS, format_table, machine_note

from nasq.blocks.spec import BlockSpec
from nasq.latency.fingerprint import device_fingerprint
from nasq.latency.measure import make_runner, pick_cpus, pinned, prepare_artifact, time_runner

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "measurements" / "int8-onnxruntime-cpu.md"
TYPES = ("fused_mb", "fused_mb_se", "mbv1", "mbv2", "mbv3", "resnet_bottleneck", "resnet_bottleneck_se")
REF_NAMES = {"fused": "fused_mb", "fused_se": "fused_mb_se", "resnet": "resnet_bottleneck",
             "resnet_se": "resnet_bottleneck_se", "mbv1": "mbv1", "mbv2": "mbv2", "mbv3": "mbv3"}
# Bottleneck width = cout x 0.5: with it the reference's ResNet ratios are reproduced (at 0.25, the classic
# ResNet ratio, the 1x1/3x3 convs are so thin that INT8 gains ~35% less; see benchmarks/results).
EXPAND = {"mbv1": 1.0, "mbv2": 4.0, "mbv3": 4.0, "fused_mb": 4.0, "fused_mb_se": 4.0,
          "resnet_bottleneck": 0.5, "resnet_bottleneck_se": 0.5}
WIDTHS = (16, 32, 64, 128, 256)
# INT8 variant -> its FP32 baseline
PAIRS = {"ort-int8-u8s8": "ort-fp32", "ort-int8-s8s8": "ort-fp32", "tflite-int8": "tflite-fp32"}


def measure_point(spec: BlockSpec, variants: list[str], repeats: int, rounds: int, warmup: int) -> dict:
    """Median ms per variant for one block, interleaved rounds on one pinned CPU."""
    samples: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="nasq-bench-") as tmp:
        paths = {}
        for v in variants:
            (Path(tmp) / v).mkdir()
            paths[v] = prepare_artifact([spec], v, Path(tmp) / v)
        cpus = pick_cpus(1)
        with pinned(cpus):
            runners = {v: make_runner(paths[v], v, 1) for v in variants}
            load1 = os.getloadavg()[0]
            for r in range(rounds):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for v in order:
                    samples[v].extend(time_runner(runners[v], repeats, warmup if r == 0 else 2))
    return {"load1": load1, "cpu": cpus[0] if cpus else -1,
            **{v: (float(np.median(s)), *np.percentile(s, [25, 75]), float(np.min(s))) for v, s in samples.items()}}


def run_grid(types, widths, resolutions, variants, repeats, rounds, warmup, expand) -> list[dict]:
    """Measure every grid point; one row per (type, width, resolution, variant)."""
    rows = []
    for t in types:
        for c in widths:
            for r in resolutions:
                spec = BlockSpec(t, r, c, c, 3, 1, expand[t])
                res = measure_point(spec, variants, repeats, rounds, warmup)
                for v in variants:
                    med, p25, p75, lo = res[v]
                    rows.append({"type": t, "width": c, "resolution": r, "expand": expand[t], "variant": v,
                                 "median_ms": med, "p25_ms": p25, "p75_ms": p75, "min_ms": lo,
                                 "n": repeats * rounds, "load1": res["load1"], "cpu": res["cpu"]})
                logging.info("%s C=%d r=%d load %.2f: %s", t, c, r, res["load1"],
                             ", ".join(f"{v}={res[v][0]:.3f}ms" for v in variants))
    return rows


NOISY_IQR = 0.25  # a timing whose IQR exceeds this fraction of its median marks its cell as noisy


def noisy_cells(rows: list[dict], int8: str) -> set[tuple[str, int]]:
    """(type, width) cells where the INT8 or its FP32 timing had IQR > NOISY_IQR x median."""
    return {(r["type"], r["width"]) for r in rows if r["variant"] in (int8, PAIRS[int8])
            and (r["p75_ms"] - r["p25_ms"]) > NOISY_IQR * r["median_ms"]}


def speedups(rows: list[dict], int8: str, stat: str = "median_ms") -> dict[tuple[str, int], float]:
    """FP32/INT8 ratio per (type, width) of a statistic (median or min), median over resolutions."""
    ms = {(r["type"], r["width"], r["resolution"], r["variant"]): r[stat] for r in rows}
    per: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (t, c, res, v), m in ms.items():
        if v == int8:
            per[(t, c)].append(ms[(t, c, res, PAIRS[int8])] / m)
    return {k: float(np.median(v)) for k, v in per.items()}


def load_reference(path: Path = REFERENCE) -> dict[str, dict[tuple[str, int], float]]:
    """Parse the U8S8 and S8S8 block tables of the shared measurements file."""
    out: dict[str, dict[tuple[str, int], float]] = {}
    if not path.exists():
        return out
    current, widths = None, []
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = "ort-int8-u8s8" if "U8S8" in line else "ort-int8-s8s8" if "S8S8" in line else None
            if current:
                out[current] = {}
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if current is None or len(cells) < 2 or cells[0].startswith("---"):
            continue
        if "width" in cells[0]:
            widths = [int(c) for c in cells[1:]]
        elif cells[0] in REF_NAMES and widths:
            for c, val in zip(widths, cells[1:]):
                out[current][(REF_NAMES[cells[0]], c)] = float(val)
    return out


def speedup_table(sp: dict, widths, ref: dict | None = None, noisy: set = frozenset()) -> str:
    """Markdown table type x width; with ``ref``, each cell reads 'ours (reference)'; noisy cells get '!'."""
    rows = []
    for t in sorted({t for t, _ in sp}):
        cells = []
        for c in widths:
            ours = f"{sp[(t, c)]:.2f}{'!' if (t, c) in noisy else ''}" if (t, c) in sp else "-"
            cells.append(f"{ours} ({ref[(t, c)]:.2f})" if ref and (t, c) in ref else ours)
        rows.append([t, *cells])
    return format_table(["block \\ width C", *map(str, widths)], rows)


def compare(sp: dict, ref: dict) -> list[str]:
    """Where ours and the reference agree: side of 1 (INT8 faster or not), size of the ratio."""
    keys = [k for k in sp if k in ref]
    if not keys:
        return ["no overlapping cells with the reference"]
    same_side = [k for k in keys if (sp[k] > 1) == (ref[k] > 1)]
    logr = np.array([math.log(sp[k] / ref[k]) for k in keys])
    far = sorted((k for k in keys if abs(math.log(sp[k] / ref[k])) > math.log(1.3)),
                 key=lambda k: -abs(math.log(sp[k] / ref[k])))
    lines = [f"INT8 faster/slower than FP32 on the same side as the reference in {len(same_side)}/{len(keys)} cells",
             f"ours / reference: geometric mean {math.exp(logr.mean()):.2f}, median |difference| "
             f"{100 * (math.exp(np.median(np.abs(logr))) - 1):.0f}%, within ±30% in "
             f"{len(keys) - len(far)}/{len(keys)} cells"]
    if far:
        lines.append("differ by more than 30%: " + ", ".join(
            f"{t} C={c} {sp[(t, c)]:.2f} vs {ref[(t, c)]:.2f}" for t, c in far[:8]))
    return lines


def observations(sp: dict, widths) -> list[str]:
    """Check the seed's observations: small widths gain least, mbv3 loses against mbv2, conv-heavy gain most."""
    types = sorted({t for t, _ in sp})
    grow = [t for t in types if all((t, c) in sp for c in widths) and sp[(t, widths[0])] < sp[(t, widths[-1])]]
    lose = sorted(k for k, v in sp.items() if v < 1)
    gm = {t: math.exp(np.mean([math.log(sp[(t, c)]) for c in widths if (t, c) in sp])) for t in types}
    best = sorted(gm, key=gm.get, reverse=True)
    return [f"speedup grows from C={widths[0]} to C={widths[-1]} for {len(grow)}/{len(types)} types",
            f"INT8 slower than FP32 in {len(lose)} cells; widest of them C={max((c for _, c in lose), default='-')}",
            "types by geometric-mean speedup: " + ", ".join(f"{t} {gm[t]:.2f}" for t in best)]


def write_csv(rows: list[dict], path: Path) -> None:
    """Raw rows, one per (type, width, resolution, variant)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def header(rows: list[dict], grid: str, rounds_repeats: str, variants: list[str], note: str) -> list[str]:
    """Title and notes: machine, engines, grid, load average during timing, command."""
    loads = [r["load1"] for r in rows]
    fps = {v: device_fingerprint(v, 1) for v in PAIRS if v in variants}
    fp = next(iter(fps.values()))
    expand = {r["type"]: r["expand"] for r in rows}
    return ["# INT8/FP32 speedup per block type and width (SpaceEvo Fig. 3 on this CPU)", "",
            f"- {note}",
            f"- CPU {fp['cpu_model']}, avx512_vnni={fp['avx512_vnni']}; "
            + "; ".join(f"{v}: {f['engine_version']}, act {f['activation_type']}" for v, f in fps.items()),
            f"- grid: {grid}; widths {sorted({r['width'] for r in rows})}, kernel 3, stride 1, cin=cout=C, "
            f"expand {expand}; 1 thread pinned to the least busy CPU; {rounds_repeats} per engine, FP32 and "
            "INT8 interleaved; cell = median over resolutions",
            f"- 1-min load average during timing: min {min(loads):.2f}, median {np.median(loads):.2f}, "
            f"max {max(loads):.2f} on {os.cpu_count()} CPUs"
            + ("; the machine was NOT quiet: other processes compete for the cores and memory bandwidth"
               if max(loads) > 1.5 else ""),
            "- command: python " + " ".join(["benchmarks/bench_int8_speedup.py", *sys.argv[1:]]), ""]


def engine_section(rows: list[dict], int8: str, widths: list[int], ref: dict | None) -> list[str]:
    """Speedup table (medians, with reference), noise flags, observations, comparison, ratio of minima."""
    sp, sp_min, noisy = speedups(rows, int8), speedups(rows, int8, "min_ms"), noisy_cells(rows, int8)
    lines = [f"## {int8} (FP32 / INT8 of medians){' — cell: ours (reference)' if ref else ''}", "",
             speedup_table(sp, widths, ref, noisy), "",
             f"- '!': {len(noisy)} cells where a timing's IQR exceeded {NOISY_IQR:.0%} of its median "
             "(preempted runs on a loaded machine; trust them less)"]
    lines += [f"- {x}" for x in observations(sp, widths)]
    if ref:
        lines += [f"- vs reference ({REFERENCE.name}, resolutions 56/28/14/7): {x}" for x in compare(sp, ref)]
        clean = {k: v for k, v in sp.items() if k not in noisy}
        lines += [f"- same, cells without '!' only: {x}" for x in compare(clean, ref)[:2]]
    lines += ["", "Ratio of minima (FP32 min / INT8 min; less sensitive to preemption than medians):", "",
              speedup_table(sp_min, widths, ref), ""]
    lines += [f"- vs reference, minima: {x}" for x in compare(sp_min, ref)[:2]] if ref else []
    return lines + [""]


def read_csv(path: Path) -> list[dict]:
    """Rows written by :func:`write_csv`, numbers parsed."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("width", "resolution", "n", "cpu"):
            r[k] = int(r[k])
        for k in ("expand", "median_ms", "p25_ms", "p75_ms", "min_ms", "load1"):
            r[k] = float(r[k])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="all resolutions 56/28/14/7, 5 rounds x 20 repeats")
    ap.add_argument("--no-tflite", action="store_true", help="ONNX Runtime only (no TensorFlow import)")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--resolutions", default=None, help="override, e.g. 28,14")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--expand", default="", help="override expand ratios, e.g. resnet_bottleneck=1,mbv2=6")
    ap.add_argument("--from-csv", type=Path, default=None, help="re-render the tables of an earlier run")
    ap.add_argument("--name", default="int8_speedup")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    resolutions = [int(x) for x in (args.resolutions or ("56,28,14,7" if args.full else "28,14")).split(",")]
    repeats, rounds = args.repeats or (20 if args.full else 10), args.rounds or (5 if args.full else 3)
    expand = dict(EXPAND, **{k: float(v) for k, v in (kv.split("=") for kv in args.expand.split(",") if kv)})
    variants = ["ort-fp32", "ort-int8-u8s8", "ort-int8-s8s8"] + ([] if args.no_tflite else ["tflite-fp32", "tflite-int8"])
    note = machine_note()
    if args.from_csv:
        rows = read_csv(args.from_csv)
        variants = [v for v in variants if v in {r["variant"] for r in rows}]
        note = f"re-rendered from {args.from_csv.name}; now: {note}"
    else:
        rows = run_grid([t for t in args.types.split(",") if t], [int(x) for x in args.widths.split(",")],
                        resolutions, variants, repeats, rounds, warmup=5, expand=expand)
        RESULTS.mkdir(parents=True, exist_ok=True)
        write_csv(rows, RESULTS / f"{args.name}.csv")
    grid = f"{'full' if args.full else 'REDUCED'}, resolutions {sorted({r['resolution'] for r in rows})}"
    lines = header(rows, grid, f"{rows[0]['n']} timed runs ({rounds} rounds x {repeats})", variants, note)
    widths, ref = sorted({r["width"] for r in rows}), load_reference()
    for int8 in [v for v in PAIRS if v in variants]:
        lines += engine_section(rows, int8, widths, ref.get(int8))
    text = "\n".join(lines)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
