"""``nasq resume DIR``: finish an interrupted search from its run directory (a whole SpaceEvo chain
run, which holds ``chain.json``, continues at its first unfinished phase: :mod:`nasq.spaceevo_chain`; a
supernet training, which holds ``nasq-supernet.json``, at the epoch after its last checkpoint)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nasq import runner
from nasq.cli.report import print_summary
from nasq.cli.submit import dashboard_help


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``resume`` verb."""
    parser = sub.add_parser("resume", help="finish an interrupted search (after a crash or kill)")
    parser.add_argument("run_dir", metavar="DIR", help="run directory (printed by `nasq search`)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join instead of the one recorded in the run (e.g. host:6379)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).expanduser().resolve()

    def show(url: str | None) -> None:
        print(f"nasq: Ray dashboard: {url or '(not running)'}", flush=True)
        hint = dashboard_help(url)
        if hint:
            print(hint, flush=True)
        print(f"nasq: resuming {run_dir}", flush=True)

    from nasq.spaceevo_chain import is_chain_run
    from nasq.supernet.run import is_supernet_run

    from nasq.pipeline import is_pipeline_run

    if is_pipeline_run(run_dir):  # the whole pipeline: continue at its first unfinished phase (§4, §5)
        from nasq.pipeline import read_pipeline, resume_pipeline

        read_pipeline(run_dir)  # a corrupt progress file is one line before Ray starts
        resume_pipeline(run_dir, address=args.address, on_connect=show, echo=lambda line: print(line, flush=True))
        print(f"nasq: pipeline done; subnets per limit: {run_dir / 'subnets' / 'subnets.csv'}", flush=True)
        return 0
    if is_supernet_run(run_dir):  # a supernet training: continue at the epoch after its checkpoint (§5)
        from nasq.cli.supernet import print_training
        from nasq.runner import connect_ray
        from nasq.supernet.run import read_run_settings, resume_supernet

        read_run_settings(run_dir)  # a corrupt run file is one line before Ray starts
        show(connect_ray(args.address))
        return print_training(run_dir, resume_supernet(run_dir, address=args.address))
    if is_chain_run(run_dir):  # a whole SpaceEvo chain: continue at its first unfinished phase (§4)
        from nasq.cli.search_spaceevo import print_result
        from nasq.spaceevo_chain import resume_chain

        resume_chain(run_dir, address=args.address, on_connect=show,
                     echo=lambda line: print(line, flush=True))
        return print_result(run_dir)
    runner.resume_search(run_dir, address=args.address, on_connect=show)
    print_summary(run_dir)
    return 0
