"""The whole SpaceEvo pipeline as one resumable workflow (SpaceEvo §4 then §5), in one run directory.

``nasq pipeline spaceevo --data digits|cifar10|npz:PATH --constraints-ms T1,T2,… --storage DIR`` sequences
phases that are each callable alone, and records which are done in ``RUN_DIR/pipeline.json``:

1-3. ``predictor``, ``lut``, ``search``: the SpaceEvo chain of :mod:`nasq.spaceevo_chain` (its own
     ``chain.json``; the best space lands in ``RUN_DIR/spaceevo_best.json``);
4.   ``supernet``: the quantized-for-all supernet of the best space on Ray Train
     (:func:`nasq.supernet.launch.train_supernet`) in ``RUN_DIR/supernet/`` (per-epoch checkpoints);
5.   ``subnets``: one latency-constrained subnet search per limit (``trainables/subnet.py``) in
     ``RUN_DIR/subnets/limit-<T>ms/``, on the chain's predictor, with ``RUN_DIR/subnets/subnets.csv``;
6.   ``export``: each limit's best subnet as real INT8 files (:mod:`nasq.deploy.deploy`: ONNX QDQ and/or
     TFLite, measured latency, predicted latency, the file's test accuracy) in ``RUN_DIR/export/``.

``nasq resume RUN_DIR`` continues at the first unfinished phase: finished phases are never redone, a
killed supernet training continues at its next epoch, a started subnet search resumes through Tune.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Callable

from nasq.errors import CheckpointError, ConfigError, bad_state
from nasq.runfile import atomic_write
from nasq.settings import PipelineSettings, SearchSettings, SubnetSearchSettings

PIPELINE_FILE = "pipeline.json"
PIPELINE_FORMAT, PIPELINE_VERSION = "nasq.spaceevo-pipeline", 1
PHASES = ("chain", "supernet", "subnets", "export")  # "chain" = predictor, lut, search (chain.json has the detail)
SUPERNET_DIR, SUBNETS_DIR, SUMMARY_CSV, EXPORT_DIR = "supernet", "subnets", "subnets.csv", "export"

Echo = Callable[[str], None]


def is_pipeline_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds ``pipeline.json`` (a whole-pipeline run)."""
    return (Path(run_dir) / PIPELINE_FILE).is_file()


def read_pipeline(run_dir: str | Path) -> dict:
    """The pipeline document: its settings and the done flag of every phase.

    Raises:
        CheckpointError: missing, corrupt or of another kind (one line).
    """
    path = Path(run_dir) / PIPELINE_FILE
    fix = "resume a run that `nasq pipeline spaceevo` made, or start a new one"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(bad_state(path, f"unreadable ({exc})", fix)) from None
    if not isinstance(doc, dict) or doc.get("format") != PIPELINE_FORMAT or doc.get("version") != \
            PIPELINE_VERSION or [p.get("name") for p in doc.get("phases", [])] != list(PHASES):
        raise CheckpointError(bad_state(path, "not a nasq pipeline progress file of this version", fix))
    return doc


def _write(run_dir: Path, doc: dict) -> None:
    atomic_write(run_dir / PIPELINE_FILE, json.dumps(doc, indent=1))


def _mark(run_dir: Path, name: str, **changes) -> None:
    doc = read_pipeline(run_dir)
    next(p for p in doc["phases"] if p["name"] == name).update(changes)
    _write(run_dir, doc)


def run_pipeline(settings: SearchSettings, pipe: PipelineSettings, *, on_connect=None, echo: Echo | None = None,
                 verbose: int = 1) -> Path:
    """Run every phase (SpaceEvo §4, §5) in ``storage/name``; everything is checked before Ray starts.

    Returns:
        The run directory.
    """
    from nasq import runner
    from nasq.spaceevo_chain import check_chain, run_chain

    settings = check_chain(settings)
    if not (settings.address or os.environ.get("RAY_ADDRESS")):  # a local Ray: its CPUs are known now
        local = int(runner.local_num_cpus(default=os.cpu_count() or 1) or 1)
        if pipe.supernet_workers > local:
            raise ConfigError(f"--supernet-workers {pipe.supernet_workers} needs as many CPUs but a local Ray "
                              f"here gets {local}; use --supernet-workers {local} or fewer")
    run_dir = runner.run_dir_of(settings)
    doc = {"format": PIPELINE_FORMAT, "version": PIPELINE_VERSION, "settings": pipe.to_config(),
           "phases": [{"name": p, "done": False, "seconds": None} for p in PHASES]}

    def connected(url, folder) -> None:  # Ray is up and the chain's files are written: record the pipeline
        _write(folder, doc)
        if on_connect is not None:
            on_connect(url, folder)

    t0 = time.time()
    run_chain(settings, on_connect=connected, echo=echo, verbose=verbose)
    _mark(run_dir, "chain", done=True, seconds=round(time.time() - t0, 3))
    return _continue(run_dir, echo, verbose)


def resume_pipeline(run_dir: str | Path, *, address: str | None = None, on_connect=None,
                    echo: Echo | None = None, verbose: int = 1) -> Path:
    """Continue a pipeline at its first unfinished phase (``nasq resume RUN_DIR``)."""
    from nasq.spaceevo_chain import resume_chain

    run_dir = Path(run_dir).expanduser().resolve()
    doc = read_pipeline(run_dir)
    if not doc["phases"][0]["done"]:
        t0 = time.time()
        resume_chain(run_dir, address=address, on_connect=on_connect, echo=echo, verbose=verbose)
        _mark(run_dir, "chain", done=True, seconds=round(time.time() - t0, 3))
    else:
        from nasq.runner import connect_ray

        url = connect_ray(address)
        if on_connect is not None:
            on_connect(url)
    return _continue(run_dir, echo, verbose, address)


def _continue(run_dir: Path, echo: Echo | None, verbose: int, address: str | None = None) -> Path:
    from nasq.spaceevo_chain import _say

    pipe = PipelineSettings.from_dict(read_pipeline(run_dir)["settings"], run_dir / PIPELINE_FILE)
    for number, name in enumerate(PHASES[1:], 4):
        if next(p for p in read_pipeline(run_dir)["phases"] if p["name"] == name)["done"]:
            _say(run_dir, echo, f"phase {number}/6 {name}: done earlier, skipped")
            continue
        _say(run_dir, echo, f"phase {number}/6 {name}: started")
        t0 = time.time()
        if name == "supernet":
            detail = _supernet_phase(run_dir, pipe)
        elif name == "subnets":
            detail = _subnets_phase(run_dir, pipe, verbose, address)
        else:
            detail = _export_phase(run_dir, pipe)
        _mark(run_dir, name, done=True, seconds=round(time.time() - t0, 3))
        _say(run_dir, echo, f"phase {number}/6 {name}: done in {time.time() - t0:.1f} s; {detail}")
    return run_dir


def best_space(run_dir: Path) -> tuple[str, str]:
    """The space search's best space and its hyperspace (SpaceEvo §4.4 -> §5)."""
    from nasq.cli.supernet import from_search

    found = from_search(str(run_dir))
    return found["space"], found["hyperspace"]


def _supernet_phase(run_dir: Path, pipe: PipelineSettings) -> str:
    """Phase 4: train (or continue) the supernet of the best space (§5) in ``RUN_DIR/supernet``."""
    from nasq.runfile import read_run_file
    from nasq.supernet.launch import train_supernet

    chain = read_run_file(run_dir).options
    space, hyperspace = best_space(run_dir)
    s = pipe.supernet_settings(space, hyperspace, str(chain.dataset), chain.data_root, chain.data_seed,
                               chain.data_limit)
    out = train_supernet(s, str(run_dir), SUPERNET_DIR)
    m = out["metrics"]
    return (f"space {space}: {out['epochs_run']} epoch(s) this call; largest {100 * m['acc_largest']:.2f}%, "
            f"smallest {100 * m['acc_smallest']:.2f}% (validation, {m['phase']})")


def _subnets_phase(run_dir: Path, pipe: PipelineSettings, verbose: int, address: str | None) -> str:
    """Phase 5: one subnet search per limit (§5), each resumable, then ``subnets.csv``."""
    from nasq import runner
    from nasq.runfile import read_run_file
    from nasq.spaceevo_chain import predictor_path

    chain = read_run_file(run_dir)
    parent = run_dir / SUBNETS_DIR
    rows = []
    for t in chain.options.constraints_ms:
        sub = parent / f"limit-{t:g}ms"
        best = sub / "subnet_best.json"
        if not best.is_file():
            if (sub / "tuner.pkl").is_file() and runner.newest_searcher_state(sub) is not None:
                runner.resume_search(sub, address=address, verbose=verbose)
            else:
                opts = SubnetSearchSettings(supernet=str(run_dir / SUPERNET_DIR),
                                            predictor=str(predictor_path(run_dir)), max_latency_ms=t,
                                            constraint_draws=pipe.subnet_constraint_draws).check()
                settings = SearchSettings("subnet", opts, searcher="aging", population_size=pipe.subnet_population,
                                          sample_size=pipe.subnet_sample_size, samples=pipe.subnet_samples,
                                          seed=chain.seed, storage=str(parent), name=sub.name,
                                          address=address or chain.address)
                runner.run_search(settings, verbose=verbose)
        rows.append({"run_dir": str(sub), **(json.loads(best.read_text()) if best.is_file() else
                                             {"max_latency_ms": t})})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(parent / SUMMARY_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return f"{len(rows)} limit(s) -> {parent / SUMMARY_CSV}"


def _export_phase(run_dir: Path, pipe: PipelineSettings) -> str:
    """Phase 6: every limit's best subnet as INT8 files, measured (§5), into ``RUN_DIR/export``."""
    import pandas as pd

    from nasq.deploy.deploy import deploy_subnet, formats_of, write_deploy
    from nasq.latency.predictor import LatencyPredictor
    from nasq.spaceevo_chain import predictor_path
    from nasq.supernet.run import InheritedSubnets

    best = pd.read_csv(run_dir / SUBNETS_DIR / SUMMARY_CSV)
    genomes = list(dict.fromkeys(g for g in best.get("genome", pd.Series(dtype=str)).dropna()))
    if not genomes:
        return "no subnet to export (no subnet search finished a trial)"
    pred = LatencyPredictor.load(predictor_path(run_dir))
    ev = InheritedSubnets(run_dir / SUPERNET_DIR, device="cpu")
    out = run_dir / EXPORT_DIR
    rows = [r for g in genomes for r in deploy_subnet(ev, g, formats_of(pipe.export_format), out,
                                                      predictors={pred.engine: pred},
                                                      repeats=pipe.export_repeats)]
    js, _ = write_deploy(rows, out)
    return f"{len(rows)} INT8 file(s) of {len(genomes)} subnet(s) -> {js}"


__all__ = ["PHASES", "PIPELINE_FILE", "is_pipeline_run", "read_pipeline", "resume_pipeline", "run_pipeline"]
