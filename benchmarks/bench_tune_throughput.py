"""Ray Tune throughput (trials per second) with a no-op trainable: our searchers vs BasicVariantGenerator.

Every run uses the same ``num_samples``, ``max_concurrent_trials``, ``reuse_actors=True`` and function
trainable (it reports one constant metric), in one Ray session (``ray.init(num_cpus=2)``). Runs of the
searchers alternate within each repeat so machine noise hits them alike. The ratio of a searcher is
computed per repeat against that repeat's BasicVariantGenerator run; the table gives the median.

Run: ``.venv/bin/python benchmarks/bench_tune_throughput.py [--samples 100] [--concurrency 2] [--repeats 3]
[--no-limit]``
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from common import machine_note, median, write_results

from nasq.searchers import make_searcher
from nasq.spaces.nb201 import NB201_OPS

METRIC = "score"


def noop_trainable(config: dict) -> None:
    """Report a constant metric at once: what remains is Tune's and the searcher's overhead."""
    from ray import tune

    tune.report({METRIC: 1.0})


def minimal_searcher() -> object:
    """Control: the smallest possible Ray ``Searcher`` (uniform edges, ignores results).

    It isolates the cost of Tune's ``Searcher`` path (``SearchGenerator`` + ``ConcurrencyLimiter``) from the
    cost of our searchers' own code.
    """
    import numpy as np
    from ray.tune.search import Searcher

    class Minimal(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=METRIC, mode="max")
            self.rng = np.random.default_rng(0)

        def suggest(self, trial_id: str) -> dict:
            return {"genome": "-".join(NB201_OPS[i] for i in self.rng.integers(len(NB201_OPS), size=6))}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            pass

    return Minimal()


def fit_once(name: str, samples: int, concurrency: int | None, storage: str, tag: str) -> float:
    """Wall seconds of one ``Tuner.fit`` with the named search algorithm."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if name == "BasicVariantGenerator":
        # Tune ignores max_concurrent_trials for a search_alg instance that is not a Searcher: pass it here.
        search_alg = BasicVariantGenerator(max_concurrent=concurrency or 0)
        space = {f"edge{i}": tune.choice(list(NB201_OPS)) for i in range(6)}
    elif name.startswith("control"):
        search_alg, space = minimal_searcher(), {}
    else:
        kind = name.split()[-1]
        kwargs = {"population_size": 20, "sample_size": 5} if kind != "random" else {}
        search_alg, space = make_searcher(kind, "nb201", metric=METRIC, mode="max", seed=0, **kwargs), {}
    tuner = tune.Tuner(
        noop_trainable,
        param_space=space,
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=samples, metric=METRIC, mode="max",
                                    max_concurrent_trials=concurrency, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, name=tag, verbose=0),
    )
    t0 = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - t0
    if len(results) != samples or results.num_errors:
        raise RuntimeError(f"{name}: {len(results)} trials, {results.num_errors} errors; expected {samples}")
    return wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", default="/tmp/nasq-bench-throughput")
    parser.add_argument("--no-limit", action="store_true",
                        help="no max_concurrent_trials: the 2 CPU slots alone cap concurrency")
    args = parser.parse_args(argv)
    limit = None if args.no_limit else args.concurrency
    logging.basicConfig(level=logging.ERROR)
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    names = ["BasicVariantGenerator", "ours: aging", "ours: random", "control: minimal Searcher"]
    fit_once(names[0], 10, limit, args.storage, "warmup")  # start workers, import Tune
    tps: dict[str, list[float]] = {n: [] for n in names}
    raw = []
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            tag = f"r{rep}-{name.split()[-1]}-{time.time():.0f}"
            wall = fit_once(name, args.samples, limit, args.storage, tag)
            tps[name].append(args.samples / wall)
            raw.append([rep, name, args.samples, f"{wall:.3f}", f"{args.samples / wall:.2f}"])
            print(f"repeat {rep} {name}: {args.samples / wall:.2f} trials/s", flush=True)
    base = tps["BasicVariantGenerator"]
    rows = []
    for name in names:
        ratios = [t / b for t, b in zip(tps[name], base)]
        rows.append([name, args.samples, limit or "2 (CPU slots)", args.repeats, f"{median(tps[name]):.2f}",
                     f"{min(tps[name]):.2f}-{max(tps[name]):.2f}", f"{median(ratios):.3f}"])
    notes = [machine_note(),
             f"No-op function trainable, num_samples={args.samples}, max_concurrent_trials={limit}, "
             "reuse_actors=True, ray.init(num_cpus=2); trials/s = samples / Tuner.fit wall time.",
             "ours: aging = AgingEvolutionSearcher(nb201, P=20, S=5); ours: random = RandomSearcher(nb201); "
             "BasicVariantGenerator samples the six NB201 edges as tune.choice; control = a minimal Ray "
             "Searcher (uniform edges, no bookkeeping) through the same Tune Searcher path as ours.",
             "Ratio = median over repeats of (this / BasicVariantGenerator of the same repeat). "
             "Target >= 0.95."]
    headers = ["search_alg", "samples", "concurrency", "repeats", "median trials/s", "range", "ratio vs BVG"]
    write_results("tune_throughput" + ("_nolimit" if args.no_limit else ""),
                  "Ray Tune throughput with a no-op trainable", notes, headers, rows,
                  raw=(["repeat", "search_alg", "samples", "wall_s", "trials_per_s"], raw))


if __name__ == "__main__":
    main()
