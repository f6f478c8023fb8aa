"""Weight-sharing fidelity (JASQ Appendix 4): do shared weights rank genomes like stand-alone training?

Procedure (no Ray: the plain :class:`nasq.param_store.ParameterStore`, one trial after another,
which is the search's own pull / train / push cycle at concurrency 1):

1. Reference: ``--genomes`` random genomes, each trained from scratch ``--alone-steps`` SGD steps
   with ``--seeds`` seeds (BN with running statistics), quantized with the genome's bit policy and
   evaluated on the validation split. Kendall tau between two seeds of the same genomes is the
   *ceiling* any proxy can reach against this reference; the reference itself is the seed mean.
   Cached per seed in ``results/<name>_reference_s<seed>.csv`` (``--reference-seed S`` trains one
   seed alone, so seeds can run in parallel; ``--fresh-reference`` retrains).
2. Warm-up: ``--warmup`` genomes each train the shared supernet ``--steps`` SGD steps (pushing
   their deltas), as the first generation of a JASQ search does; drawn uniformly (``random``) or
   FairNAS-style (``fair``: within each round of 6 genomes every slot takes every op once).
3. Each ranked genome G is evaluated as the child of a parent P one mutation away (P is first run
   as an ordinary trial: pull, ``--steps`` steps, push, snapshot; then ``--gap`` random trials push,
   as the population trains on before P's child is proposed). Variants (all quantized, JASQ §3.4):
   ``pulled`` (global store, BN batch statistics), ``+bn`` (BN statistics recalibrated for G),
   ``+ft`` (``--finetune`` steps on a copy, then recalibrated), and the same three starting
   from P's snapshot (``inherit``).

    nice -n 10 .venv/bin/python benchmarks/bench_weight_sharing.py \\
        --dataset npz:../shared/data/cifar10/cifar10_train_20000.npz --limit 20000 --downsample 2 \\
        --name weight_sharing_cifar10
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_note, write_results  # noqa: E402

from nasq.data import Splits, load_dataset  # noqa: E402
from nasq.models.nasnet import NetConfig, SharedNasNet, build_network, parameter_keys, with_running_stats  # noqa: E402
from nasq.models.training import (TrainSettings, evaluate, quantize_network, recalibrate_bn,  # noqa: E402
                                  train_standalone, train_steps)
from nasq.param_store import ParameterStore  # noqa: E402
from nasq.spaces.jasq import JASQ_OPS, Cell, Combination, JasqGenome, JasqSpace  # noqa: E402

VARIANTS = ("pulled", "pulled+bn", "trial", "trial+bn", "pulled+ft+bn", "inherit", "inherit+bn", "inherit+trial",
            "inherit+trial+bn", "inherit+ft+bn")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits", help="digits | cifar10 | npz:PATH")
    p.add_argument("--limit", type=int, default=None, help="use at most this many examples")
    p.add_argument("--downsample", type=int, default=1, help="average-pool images by this factor (CPU budget)")
    p.add_argument("--name", default="weight_sharing", help="results file name")
    p.add_argument("--genomes", type=int, default=20, help="genomes ranked (>= 20)")
    p.add_argument("--seeds", type=int, default=2, help="stand-alone seeds per genome (>= 2 for the ceiling)")
    p.add_argument("--alone-steps", type=int, default=200, help="stand-alone SGD steps (batch 64)")
    p.add_argument("--warmup", type=int, default=96, help="genomes training the supernet first")
    p.add_argument("--steps", type=int, default=10, help="SGD steps per weight-shared trial")
    p.add_argument("--finetune", type=int, default=10, help="steps of per-child fine-tuning before evaluation")
    p.add_argument("--finetune-lr", type=float, default=0.01, help="learning rate of that fine-tuning")
    p.add_argument("--recal-batches", type=int, default=4, help="batches (of 64) recalibrating BN statistics")
    p.add_argument("--cells", type=int, default=1)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--combinations", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference-seed", type=int, default=None,
                   help="only train (or read) the stand-alone reference of this seed and stop")
    p.add_argument("--fresh-reference", action="store_true", help="ignore a cached reference")
    p.add_argument("--reference-name", default=None, help="read the reference cache of this results name")
    p.add_argument("--shared-only", action="store_true", help="run the weight-sharing study and stop")
    p.add_argument("--fresh-shared", action="store_true", help="ignore a cached weight-sharing study")
    p.add_argument("--gap", type=int, default=4, help="other trials pushing between the parent and its child")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {', '.join(VARIANTS)}")
    p.add_argument("--tag", default="", help="suffix of this run's study cache (extra variants are merged)")
    p.add_argument("--warmup-modes", default="random,fair", help="comma list of random | fair")
    args = p.parse_args()
    args.variants = args.variants.split(",")
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant {bad[0]!r}; choose from {', '.join(VARIANTS)}")
    return args


def downsample(splits: Splits, factor: int) -> Splits:
    """Average-pool every image by ``factor`` (32x32 CIFAR -> 16x16 with 2): same images, 4x cheaper."""
    if factor <= 1:
        return splits

    def pool(d: TensorDataset) -> TensorDataset:
        x, y = d.tensors
        return TensorDataset(F.avg_pool2d(x, factor), y)

    c, h, w = splits.input_shape
    return Splits(pool(splits.train), pool(splits.val), pool(splits.test), splits.num_classes,
                  (c, h // factor, w // factor))


def standalone_acc(genome, cfg: NetConfig, splits: Splits, steps: int, seed: int) -> tuple[float, float]:
    """Quantized validation accuracy of a from-scratch network (JASQ §4), and its training seconds."""
    t0 = time.perf_counter()
    net = train_standalone(genome, cfg, splits.train, TrainSettings(steps=steps, seed=seed), seed=seed)
    seconds = time.perf_counter() - t0
    quantize_network(net, genome, cfg)
    return evaluate(net, splits.val), seconds


def reference_seed(args, space: JasqSpace, genomes: list, cfg: NetConfig, splits: Splits, seed: int
                   ) -> dict[str, float]:
    """Stand-alone accuracy of every genome for one seed, cached in ``results/<name>_reference_s<seed>.csv``."""
    path = RESULTS / f"{args.reference_name or args.name}_reference_s{seed}.csv"
    want = [space.encode(g) for g in genomes]
    if path.is_file() and not args.fresh_reference:
        with open(path) as f:
            cached = {r["genome"]: float(r["val_acc"]) for r in csv.DictReader(f)
                      if int(r["steps"]) == args.alone_steps}
        if all(g in cached for g in want):
            return {g: cached[g] for g in want}
    rows = []
    for i, g in enumerate(genomes):
        acc, sec = standalone_acc(g, cfg, splits, args.alone_steps, seed=1000 * seed + i)
        rows.append([want[i], args.alone_steps, seed, f"{acc:.2f}", f"{sec:.1f}"])
        print(f"reference seed {seed} {i + 1}/{len(genomes)}: {acc:.2f} ({sec:.0f} s)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["genome", "steps", "seed", "val_acc", "seconds"])
        writer.writerows(rows)
    return {r[0]: float(r[3]) for r in rows}


def reference_seconds(args) -> float:
    """Mean seconds of one stand-alone run, from the per-seed caches."""
    secs = []
    for s in range(args.seeds):
        with open(RESULTS / f"{args.reference_name or args.name}_reference_s{s}.csv") as f:
            secs += [float(r["seconds"]) for r in csv.DictReader(f)]
    return float(np.mean(secs))


def fair_round(space: JasqSpace, rng: np.random.Generator) -> list[JasqGenome]:
    """FairNAS strict fairness (Chu et al. 2021, §3.2): a round of one genome per op, in which every
    op slot of every combination takes each op exactly once (inputs uniform, bits balanced)."""
    n = len(JASQ_OPS)

    def cells() -> list[Cell]:
        perms = [[rng.permutation(n) for _ in range(2)] for _ in range(space.combinations)]
        inputs = [rng.integers(j + 2, size=(n, 2)) for j in range(space.combinations)]
        return [Cell(tuple(Combination(int(inputs[j][m, 0]), int(inputs[j][m, 1]), JASQ_OPS[perms[j][0][m]],
                                       JASQ_OPS[perms[j][1][m]]) for j in range(space.combinations)))
                for m in range(n)]

    normal, reduction = cells(), cells()
    choices = space.bit_choices
    bits = [rng.permutation([choices[m % len(choices)] for m in range(n)]) for _ in range(space.num_cells)]
    return [JasqGenome(normal[m], reduction[m], tuple(int(b[m]) for b in bits)) for m in range(n)]


def trial(store: ParameterStore, space: JasqSpace, genome, cfg: NetConfig, splits: Splits, steps: int,
          seed: int) -> None:
    """One search trial: pull, train ``steps``, push the delta and leave a snapshot (JASQ App. 4)."""
    names = parameter_keys(genome, cfg)
    base, versions = store.pull(names, with_versions=True)
    net = build_network(genome, cfg, shared=True)
    net.load_state_dict(base)
    train_steps(net, splits.train, TrainSettings(steps=steps, seed=seed))
    trained = net.state_dict()
    store.push({k: trained[k] - base[k] for k in names}, versions, space.encode(genome), trained)


def warm_store(args, space: JasqSpace, cfg: NetConfig, splits: Splits, mode: str) -> ParameterStore:
    """A supernet after ``--warmup`` trials of genomes drawn uniformly or in fair rounds."""
    torch.manual_seed(args.seed)
    store = ParameterStore(SharedNasNet(cfg).state_dict(), max_snapshots=256)
    rng = np.random.default_rng(args.seed + 7)
    pool: list = []
    for i in range(args.warmup):
        if not pool:
            pool = fair_round(space, rng) if mode == "fair" else [space.random(rng)]
        trial(store, space, pool.pop(), cfg, splits, args.steps, args.seed + i)
    return store


def evaluate_variant(net: SharedNasNet, genome, cfg: NetConfig, splits: Splits, args, ft_steps: int,
                     ft_lr: float, recal: bool, seed: int) -> float:
    """Fine-tune a copy ``ft_steps`` (not pushed), quantize (JASQ §3.4), recalibrate BN if asked, validate."""
    if ft_steps > 0:
        train_steps(net, splits.train, TrainSettings(steps=ft_steps, lr=ft_lr, seed=seed))
    quantize_network(net, genome, cfg)
    if recal:
        net = recalibrate_bn(with_running_stats(net), splits.train, args.recal_batches, 64, seed)
    return evaluate(net, splits.val)


def child_accuracies(args, store: ParameterStore, space: JasqSpace, genome, parent, cfg: NetConfig,
                     splits: Splits, seed: int) -> tuple[list[float], list[float]]:
    """Every variant's accuracy for ``genome`` as the child of ``parent``, and its CPU seconds."""
    names = parameter_keys(genome, cfg)
    trial_plan, ft_plan = (args.steps, 0.05), (args.finetune, args.finetune_lr)
    plans = {"pulled": (0, 0.0, False), "pulled+bn": (0, 0.0, True), "trial": (*trial_plan, False),
             "trial+bn": (*trial_plan, True), "pulled+ft+bn": (*ft_plan, True), "inherit": (0, 0.0, False),
             "inherit+bn": (0, 0.0, True), "inherit+trial": (*trial_plan, False),
             "inherit+trial+bn": (*trial_plan, True), "inherit+ft+bn": (*ft_plan, True)}
    accs, secs = [], []
    for variant in args.variants:
        t0 = time.process_time()
        key = space.encode(parent) if variant.startswith("inherit") else None
        net = build_network(genome, cfg, shared=True)
        net.load_state_dict(store.pull_inherited(names, key)["tensors"])
        accs.append(evaluate_variant(net, genome, cfg, splits, args, *plans[variant], seed))
        secs.append(time.process_time() - t0)
    return accs, secs


def sharing_study(args, splits: Splits, cfg: NetConfig, space: JasqSpace, genomes: list) -> list[list]:
    """Rows ``[warmup, genome, variant, val_acc, cpu_seconds]`` of every warm-up mode."""
    rows = [row for mode in args.warmup_modes.split(",")
            for row in sharing_mode(args, splits, cfg, space, genomes, mode)]
    for path in sorted(RESULTS.glob(f"{Path(args.name).name}_shared_*_*.csv")):  # tagged extra variants
        with open(path) as f:
            rows += [[r["warmup"], r["genome"], r["variant"], float(r["val_acc"]), float(r["cpu_seconds"])]
                     for r in csv.DictReader(f)]
    return list({(r[0], r[1], r[2]): r for r in rows}.values())


def sharing_mode(args, splits: Splits, cfg: NetConfig, space: JasqSpace, genomes: list, mode: str) -> list[list]:
    """One warm-up mode's rows; cached in ``results/<name>_shared_<mode>.csv``."""
    path = RESULTS / f"{args.name}_shared_{mode}{'_' + args.tag if args.tag else ''}.csv"
    if path.is_file() and not args.fresh_shared:
        with open(path) as f:
            return [[r["warmup"], r["genome"], r["variant"], float(r["val_acc"]), float(r["cpu_seconds"])]
                    for r in csv.DictReader(f)]
    rows = []
    t0 = time.process_time()
    store = warm_store(args, space, cfg, splits, mode)
    print(f"warm-up {mode}: {time.process_time() - t0:.0f} CPU s", flush=True)
    rng = np.random.default_rng(args.seed + 11)
    for i, g in enumerate(genomes):
        parent = space.mutate(g, rng, "arch")
        trial(store, space, parent, cfg, splits, args.steps, 50_000 + i)
        for j in range(args.gap):  # the population trains on before the child is proposed
            trial(store, space, space.random(rng), cfg, splits, args.steps, 60_000 + 100 * i + j)
        accs, secs = child_accuracies(args, store, space, g, parent, cfg, splits, 20_000 + i)
        rows += [[mode, space.encode(g), v, a, round(t, 2)] for v, a, t in zip(args.variants, accs, secs)]
        print(f"{mode} {i + 1}/{len(genomes)} " + " ".join(f"{v}={a:.1f}" for v, a in zip(args.variants, accs)),
              flush=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["warmup", "genome", "variant", "val_acc", "cpu_seconds"])
        writer.writerows(rows)
    return rows


def data_note(args, splits: Splits, cfg: NetConfig) -> str:
    """One line naming the data set, its split sizes and the skeleton."""
    c, h, w = splits.input_shape
    return (f"data {args.dataset} limit {args.limit} (train {len(splits.train)}, val {len(splits.val)}, "
            f"test {len(splits.test)}), images {h}x{w} (downsample {args.downsample}); skeleton "
            f"N={cfg.cells}, F={cfg.channels}, B={cfg.combinations}; seed {args.seed}")


def tau_row(label: str, proxy, ref_mean, seeds, cpu: float | str) -> list:
    """Table row: Kendall tau-b (scipy) of ``proxy`` vs the seed mean and vs each seed."""
    tau, p = kendalltau(proxy, ref_mean)
    per_seed = [kendalltau(proxy, s)[0] for s in seeds]
    return [label, len(proxy), f"{tau:.3f}", f"{p:.2g}", " / ".join(f"{t:.3f}" for t in per_seed),
            f"{np.mean(proxy):.2f}", cpu]


def report(args, splits: Splits, cfg: NetConfig, space: JasqSpace, genomes: list, shared: list[list],
           ref: list[dict[str, float]]) -> None:
    """Write ``results/<name>.md`` (taus, ceiling, per-child cost) and the per-genome CSV."""
    keys = [space.encode(g) for g in genomes]
    seeds = [[r[k] for k in keys] for r in ref]
    ref_mean = list(np.mean(seeds, axis=0))
    table = {(m, g, v): (a, t) for m, g, v, a, t in shared}
    modes = list(dict.fromkeys(m for m, *_ in shared))
    ceil, p_ceil = kendalltau(seeds[0], seeds[1])
    rows = [["ceiling: stand-alone seed 0 vs seed 1", len(keys), f"{ceil:.3f}", f"{p_ceil:.2g}", "-",
             f"{np.mean(ref_mean):.2f}", f"{reference_seconds(args):.1f} (wall, per run)"]]
    for m in modes:
        for v in [v for v in VARIANTS if all((m, k, v) in table for k in keys)]:
            proxy = [table[(m, k, v)][0] for k in keys]
            cpu = np.mean([table[(m, k, v)][1] for k in keys])
            rows.append(tau_row(f"{m} warm-up, {v}", proxy, ref_mean, seeds, f"{cpu:.2f}"))
    notes = [machine_note(), data_note(args, splits, cfg),
             f"reference: stand-alone, {args.alone_steps} SGD steps from scratch (batch 64, lr 0.05 cosine), "
             f"{args.seeds} seeds (init and minibatch order), quantized, BN running statistics; the "
             "reference is the seed mean; the ceiling row is seed 0 vs seed 1",
             f"warm-up: {args.warmup} trials x {args.steps} shared SGD steps (push deltas + snapshot); random: "
             "uniform genomes; fair: FairNAS rounds (each op slot takes every op once per 6 genomes)",
             f"each ranked genome is the child of a parent one arch mutation away, which first runs as a "
             f"trial ({args.steps} steps, pushed, snapshot kept); then {args.gap} random trials push before "
             "the child is evaluated (the population trains on meanwhile)",
             "variants: pulled = global store tensors, BN batch statistics; trial = today's trainable "
             f"({args.steps} steps at lr 0.05 on a copy); +ft = {args.finetune} steps at lr {args.finetune_lr:g} "
             f"on a copy; +bn = BN running statistics recalibrated on {args.recal_batches}x64 training "
             "images; inherit = tensors shared with the parent from its snapshot, the rest global",
             "every accuracy is after quantization with the genome's bit policy (bucket 256; 16-bit "
             "stem/classifier/BN); tau is Kendall tau-b (scipy); per-child cost is CPU seconds of this "
             "process (1 torch thread) from pull to accuracy, i.e. seconds on one unshared core"]
    headers = ["proxy", "genomes", "tau vs alone (seed mean)", "p", "tau vs seed 0 / seed 1",
               "mean acc %", "CPU s per child"]
    cols = [(m, v) for m in modes for v in VARIANTS if all((m, k, v) in table for k in keys)]
    raw_headers = ["genome", *[f"alone_seed{s}" for s in range(len(ref))], "alone_mean",
                   *[f"{m}:{v}" for m, v in cols]]
    raw = [[k, *[f"{s[i]:.2f}" for s in seeds], f"{ref_mean[i]:.2f}",
            *[f"{table[(m, k, v)][0]:.2f}" for m, v in cols]] for i, k in enumerate(keys)]
    write_results(args.name, "Weight-sharing fidelity: Kendall tau, shared vs stand-alone (JASQ App. 4)",
                  notes, headers, rows, raw=(raw_headers, raw))


def setup(args):
    """Data, skeleton, space and the ranked genomes (drawn from ``--seed``)."""
    torch.set_num_threads(1)
    splits = downsample(load_dataset(args.dataset, seed=args.seed, limit=args.limit), args.downsample)
    cfg = NetConfig(splits.num_classes, tuple(splits.input_shape), args.channels, args.cells,
                    args.combinations)
    space = JasqSpace(args.combinations, args.cells)
    rng = np.random.default_rng(args.seed)
    genomes = [space.random(rng) for _ in range(args.genomes)]
    return splits, cfg, space, genomes


def main() -> None:
    args = parse()
    splits, cfg, space, genomes = setup(args)
    if args.reference_seed is not None:
        reference_seed(args, space, genomes, cfg, splits, args.reference_seed)
        return
    shared = sharing_study(args, splits, cfg, space, genomes)
    if args.shared_only:
        return
    ref = [reference_seed(args, space, genomes, cfg, splits, s) for s in range(args.seeds)]
    report(args, splits, cfg, space, genomes, shared, ref)


if __name__ == "__main__":
    main()
