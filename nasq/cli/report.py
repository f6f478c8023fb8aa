"""``nasq report DIR``: write trials.csv and best_so_far.png into a run directory, print the best (a
supernet run: its per-epoch metrics CSV and curves PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nasq.errors import ConfigError
from nasq.runner import read_run_file, write_outputs
from nasq.runfile import BEST_PNG, TRIALS_CSV  # not nasq.report (pandas): one-line errors stay quick


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` verb."""
    parser = sub.add_parser("report", help="write trials.csv and best_so_far.png of a run, print the best")
    parser.add_argument("run_dir", metavar="DIR", help="run directory (printed by `nasq search`)")
    parser.add_argument("--top", type=int, default=5, help="number of best trials to print")
    parser.add_argument("--watch", action="store_true",
                        help="refresh the report every --interval seconds until the search ends (or Ctrl-C)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between --watch refreshes")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from nasq.supernet.run import is_supernet_run

    if is_supernet_run(args.run_dir):  # a supernet training (SpaceEvo §5): per-epoch curves
        return print_supernet(Path(args.run_dir))
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1 (the number of best trials to print), got {args.top}")
    if args.watch:  # keep trials.csv, best_so_far.png and the Pareto files current while it runs
        from nasq.cli.watch import watch_report

        code = watch_report(Path(args.run_dir), args.interval)
        print_summary(Path(args.run_dir), top=args.top, write=False)
        return code
    print_summary(Path(args.run_dir), top=args.top, write=True)
    return 0


def print_summary(run_dir: Path, top: int = 5, write: bool = False) -> None:
    """Print the run's best trials and where the report files are (writes them first if asked)."""
    import pandas as pd

    from nasq.report import top_trials

    settings = read_run_file(run_dir)
    exp = settings.exp
    frame = write_outputs(run_dir, settings) if write else pd.read_csv(Path(run_dir) / TRIALS_CSV)
    finished = int(frame["objective"].notna().sum()) if not frame.empty else 0
    print(f"nasq: {len(frame)} trials, {finished} with a {exp.metric}; report: "
          f"{Path(run_dir) / TRIALS_CSV}, {Path(run_dir) / BEST_PNG}")
    if finished == 0:
        print("nasq: no trial finished with a result")
        return
    best = top_trials(frame, exp.mode, top)
    columns = [c for c in ("order", "trial_id", exp.metric, "objective", "latency_ms", "genome") if c in best]
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(best[columns].to_string(index=False))
    first = best.iloc[0]
    print(f"nasq: best genome: {first['genome']} ({exp.metric}={first[exp.metric]})")


def print_supernet(run_dir: Path) -> int:
    """Write and print the per-epoch metrics of a supernet run (loss, largest/smallest accuracy; §5)."""
    import pandas as pd

    from nasq.supernet.run import write_supernet_report

    csv, png = write_supernet_report(run_dir)
    frame = pd.read_csv(csv)
    cols = [c for c in ("epoch", "phase", "global_step", "loss_largest", "loss_smallest", "acc_largest",
                        "acc_smallest", "samples_per_s") if c in frame]
    print(frame[cols].to_string(index=False))
    print(f"nasq: report: {csv}, {png}")
    return 0
