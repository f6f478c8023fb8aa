"""The whole SpaceEvo chain as one resumable workflow (SpaceEvo §4): predictor → table → space search.

``nasq search spaceevo --data digits|cifar10|npz:PATH --constraints-ms … [--hyperspace NAME[:RES]]`` without
``--lut``/``--predictor`` runs the three steps of SpaceEvo §4 in one run directory, one phase after another:

1. ``predictor``: the INT8 latency predictor of the hyperspace (§4.3), measured on this machine with ONNX
   Runtime (``ort-int8``) through the code path of ``nasq latency build --hyperspace``
   (:func:`nasq.cli.latency.build_from_options`; counts from the ``predictor_*`` settings), into
   ``RUN_DIR/predictor/ort-int8.predictor.json`` (+ its block and chain data sets);
2. ``lut``: the block-wise KD accuracy table (§4.5) by :func:`nasq.bkd.build.build_lut` from the data fields
   and the ``lut_*`` settings (:meth:`nasq.settings.SpaceEvoSettings.lut_settings`), into ``RUN_DIR/lut/``;
3. ``search``: the space search of §4.2/§4.4 (the same Tune experiment as with ``--lut``/``--predictor``)
   on those two folders, in ``RUN_DIR`` itself.

A phase builds into ``RUN_DIR/<phase>.partial/`` and is renamed into place (``os.replace``) only once its
outputs are completely written; then it is recorded as done in ``RUN_DIR/chain.json`` (format
:data:`CHAIN_FORMAT`: per phase its name, ``done``, ``started_at``/``finished_at`` (Unix seconds),
``seconds`` and ``output`` path). Every step is also logged to ``RUN_DIR/chain.log``.
:func:`resume_chain` (``nasq resume RUN_DIR``) continues at the first unfinished phase: a finished
predictor is never measured again, a half-built table resumes through ``build_lut``'s own per-part skip
(the partial folder is kept between calls) and a started search through :func:`nasq.runner.resume_search`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from nasq.errors import CheckpointError, ConfigError, bad_state
from nasq.runfile import RUN_FILE, atomic_write, read_run_file, write_run_file
from nasq.settings import SearchSettings, SpaceEvoSettings

logger = logging.getLogger(__name__)

CHAIN_FILE, CHAIN_LOG = "chain.json", "chain.log"
CHAIN_FORMAT, CHAIN_VERSION = "nasq.spaceevo-chain", 1
PHASES = ("predictor", "lut", "search")
STOPS = PHASES[:-1]  # phases a run may stop after (``--stop-after``)
ENGINE = "ort-int8"
PREDICTOR_DIR, LUT_DIR = "predictor", "lut"
PREDICTOR_FILE = f"{ENGINE}.predictor.json"
LUT_META = "lut.json"  # written last by build_lut's merge
PARTIAL = ".partial"

Echo = Callable[[str], None]


def is_chain_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is a whole-chain run (it holds ``chain.json``; SpaceEvo §4)."""
    return (Path(run_dir) / CHAIN_FILE).is_file()


def predictor_path(run_dir: str | Path) -> Path:
    """The chain's INT8 latency predictor file (§4.3) in ``run_dir``."""
    return Path(run_dir) / PREDICTOR_DIR / PREDICTOR_FILE


def lut_path(run_dir: str | Path) -> Path:
    """The chain's accuracy-table folder (§4.5) in ``run_dir``."""
    return Path(run_dir) / LUT_DIR


def predictor_options(options: SpaceEvoSettings, out: Path, address: str | None = None) -> argparse.Namespace:
    """The ``nasq latency build --hyperspace`` options of the chain's predictor phase (§4.3)."""
    from nasq.cli.latency import build_options

    return build_options(engine=ENGINE, hyperspace=options.hyperspace or "spaceevo",
                         samples=options.predictor_samples, calib_chains=options.predictor_calib_chains,
                         actors=options.predictor_actors, repeats=options.predictor_repeats,
                         warmup=options.predictor_warmup, seed=options.predictor_seed, address=address,
                         out=str(out))


# -- chain.json ---------------------------------------------------------------------------------------
def new_chain_doc(run_dir: Path) -> dict:
    """The progress document of a new chain: every phase not done (§4)."""
    outputs = {"predictor": predictor_path(run_dir), "lut": lut_path(run_dir), "search": run_dir}
    return {"format": CHAIN_FORMAT, "version": CHAIN_VERSION, "engine": ENGINE,
            "phases": [{"name": p, "done": False, "started_at": None, "finished_at": None, "seconds": None,
                        "output": str(outputs[p])} for p in PHASES]}


def write_chain(run_dir: Path, doc: dict) -> None:
    """Write ``chain.json`` atomically (temporary file, then ``os.replace``)."""
    atomic_write(run_dir / CHAIN_FILE, json.dumps(doc, indent=1))


def read_chain(run_dir: str | Path) -> dict:
    """Read and check ``RUN_DIR/chain.json`` (the phase progress of a §4 chain).

    Raises:
        CheckpointError: missing, not JSON, or not a chain progress file of this version (one line).
    """
    path = Path(run_dir) / CHAIN_FILE
    fix = "resume a run that `nasq search spaceevo --data ...` made, or start a new one"
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise CheckpointError(bad_state(path, f"unreadable ({exc.strerror or exc})", fix)) from exc
    except ValueError as exc:
        raise CheckpointError(bad_state(path, f"not valid JSON ({exc})", fix)) from exc
    if not isinstance(doc, dict) or doc.get("format") != CHAIN_FORMAT:
        raise CheckpointError(bad_state(path, "not a SpaceEvo chain progress file", fix))
    if doc.get("version") != CHAIN_VERSION:
        raise CheckpointError(bad_state(path, f"version {doc.get('version')!r} is not {CHAIN_VERSION}",
                                        "upgrade nasq"))
    phases = doc.get("phases")
    if not isinstance(phases, list) or [p.get("name") if isinstance(p, dict) else None for p in phases] != \
            list(PHASES):
        raise CheckpointError(bad_state(path, f"its phases are not {list(PHASES)}", fix))
    return doc


def phase_entry(doc: dict, name: str) -> dict:
    """The entry of phase ``name`` in a chain document."""
    return next(p for p in doc["phases"] if p["name"] == name)


def _update(run_dir: Path, name: str, **changes: Any) -> dict:
    doc = read_chain(run_dir)
    phase_entry(doc, name).update(changes)
    write_chain(run_dir, doc)
    return doc


def _say(run_dir: Path, echo: Echo | None, text: str) -> None:
    """Log one line of the chain's progress to ``chain.log`` (and to ``echo``, the CLI's print)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(run_dir / CHAIN_LOG, "a") as fh:
        fh.write(f"{stamp} {text}\n")
    logger.info("%s: %s", run_dir.name, text)
    if echo is not None:
        echo(f"nasq: {text}")


# -- checks before Ray --------------------------------------------------------------------------------
def check_chain(settings: SearchSettings, run_dir: str | Path | None = None,
                stop_after: str | None = None) -> SearchSettings:
    """Validate a whole-chain run (SpaceEvo §4) without Ray and without writing anything.

    ``run_dir`` (optional) replaces ``storage``/``name``. Checks the settings as the search does
    (:func:`nasq.runner.check_settings`: limits, data set, teacher, run directory, trial CPUs, searcher),
    the predictor build's options as ``nasq latency build`` does, and the table build's CPUs per task.

    Returns:
        The settings with the run name and the hyperspace filled in.

    Raises:
        NasqError: a one-line user error naming the fix.
    """
    from nasq import runner

    if run_dir is not None:
        run_dir = Path(run_dir).expanduser().resolve()
        settings = settings.replace(storage=str(run_dir.parent), name=run_dir.name)
    if settings.experiment != "spaceevo" or not isinstance(settings.options, SpaceEvoSettings) or \
            not settings.options.is_chain:
        raise ConfigError("the whole SpaceEvo chain needs `nasq search spaceevo --data "
                          "digits|cifar10|npz:PATH` without --lut and --predictor")
    if stop_after is not None and stop_after not in STOPS:
        raise ConfigError(f"--stop-after {stop_after!r} is not a phase to stop after; use one of "
                          f"{' | '.join(STOPS)} (the search is the last phase)")
    settings = runner.check_settings(settings)
    from nasq.cli.latency import check_build

    options = settings.options
    if not (settings.address or os.environ.get("RAY_ADDRESS")):  # a local Ray: its CPUs are known now
        local = int(runner.local_num_cpus(default=os.cpu_count() or 1) or 1)
        if options.predictor_actors > local:
            raise ConfigError(f"--predictor-actors {options.predictor_actors} needs as many CPUs but a "
                              f"local Ray here gets {local}; use --predictor-actors {local} or fewer "
                              "(0: no actors)")
        if options.lut_cpus_per_task > local:
            raise ConfigError(f"--lut-cpus-per-task {options.lut_cpus_per_task:g} is more than the {local} "
                              f"CPUs of the local Ray; pass --lut-cpus-per-task {local} or fewer")
    out = runner.run_dir_of(settings) / (PREDICTOR_DIR + PARTIAL) / PREDICTOR_FILE
    check_build(predictor_options(options, out, settings.address))  # as `nasq latency build` checks them
    return settings


# -- the workflow -------------------------------------------------------------------------------------
def run_chain(settings: SearchSettings, run_dir: str | Path | None = None, *, stop_after: str | None = None,
              on_connect: Callable[[str | None, Path], None] | None = None, echo: Echo | None = None,
              verbose: int = 1) -> Path:
    """Run the whole SpaceEvo chain (§4) as one workflow: predictor build, LUT build, space search.

    Everything is validated first (:func:`check_chain`, before Ray starts and before anything is
    written); then the run directory gets ``nasq-run.json`` and ``chain.json``, Ray starts or is joined
    (``settings.address``), ``on_connect(dashboard_url, run_dir)`` is called, and the phases run in order,
    each recorded in ``chain.json`` once its outputs are in place. ``stop_after`` (``predictor`` or
    ``lut``) ends the call after that phase; :func:`resume_chain` continues.

    Args:
        settings: ``spaceevo`` search settings with ``dataset`` and without ``lut``/``predictor``.
        run_dir: the run directory (default ``storage/name``).
        stop_after: a phase to stop after, or None for the whole chain.
        on_connect: called once Ray is up (the CLI prints where to look).
        echo: receives one line per phase event (the CLI's ``print``); ``chain.log`` gets them too.
        verbose: Tune's verbosity in the search phase.

    Returns:
        The run directory.

    Raises:
        NasqError: invalid settings (one line), or a failed phase (the finished ones are kept).
    """
    from nasq import runner

    settings = check_chain(settings, run_dir, stop_after)
    run_dir = runner.run_dir_of(settings)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        write_run_file(run_dir, settings)
        write_chain(run_dir, new_chain_doc(run_dir))
        url = runner.connect_ray(settings.address)
    except BaseException:  # Ray did not start: undo this call's two files (and the folder it made)
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            for name in (RUN_FILE, CHAIN_FILE):
                (run_dir / name).unlink(missing_ok=True)
        raise
    if on_connect is not None:
        on_connect(url, run_dir)
    _say(run_dir, echo, f"SpaceEvo chain in {run_dir}: phases {', '.join(PHASES)}")
    return _continue(settings, run_dir, stop_after=stop_after, echo=echo, verbose=verbose)


def resume_chain(run_dir: str | Path, *, address: str | None = None,
                 on_connect: Callable[[str | None], None] | None = None, echo: Echo | None = None,
                 verbose: int = 1) -> Path:
    """Continue a whole-chain run (SpaceEvo §4) at its first unfinished phase (``nasq resume RUN_DIR``).

    A finished phase is skipped (its outputs are not measured or trained again); an unfinished predictor
    build starts over in its partial folder; an unfinished table build resumes per (stage, type) part;
    a started search resumes through :func:`nasq.runner.resume_search` (a search killed before Tune's
    first snapshot starts again). ``address`` overrides the recorded Ray cluster.

    Returns:
        The run directory.

    Raises:
        CheckpointError: not a chain run, or a corrupt run file or ``chain.json`` (one line).
    """
    from nasq import runner

    run_dir = Path(run_dir).expanduser().resolve()
    settings = read_run_file(run_dir)
    doc = read_chain(run_dir)
    if address is not None:
        settings = settings.replace(address=address)
    url = runner.connect_ray(settings.address)
    if on_connect is not None:
        on_connect(url)
    todo = [p["name"] for p in doc["phases"] if not p["done"]]
    _say(run_dir, echo, f"resuming the SpaceEvo chain at phase {todo[0]}" if todo else
         "resuming the SpaceEvo chain: every phase is done")
    return _continue(settings, run_dir, echo=echo, verbose=verbose, address=address)


def _continue(settings: SearchSettings, run_dir: Path, *, stop_after: str | None = None,
              echo: Echo | None = None, verbose: int = 1, address: str | None = None) -> Path:
    """Run every phase not yet done, in order (§4)."""
    from nasq import runner

    for number, name in enumerate(PHASES, 1):
        entry = phase_entry(read_chain(run_dir), name)
        if entry["done"]:
            _say(run_dir, echo, f"phase {number}/{len(PHASES)} {name}: done earlier, skipped "
                 f"({entry['output']})")
            if name == "search":
                runner.write_outputs(run_dir)
            continue
        _say(run_dir, echo, f"phase {number}/{len(PHASES)} {name}: started")
        t0 = time.time()
        if entry["started_at"] is None:
            _update(run_dir, name, started_at=t0)
        if name == "predictor":
            detail = _predictor_phase(settings, run_dir)
        elif name == "lut":
            detail = _lut_phase(settings, run_dir)
        else:
            detail = _search_phase(settings, run_dir, entry, verbose, address)
        t1 = time.time()
        _update(run_dir, name, done=True, finished_at=t1, seconds=round(t1 - t0, 3))
        _say(run_dir, echo, f"phase {number}/{len(PHASES)} {name}: done in {t1 - t0:.1f} s; {detail}")
        if name == stop_after:
            _say(run_dir, echo, f"stopped after phase {name}; continue with `nasq resume {run_dir}`")
            break
    return run_dir


def _predictor_phase(settings: SearchSettings, run_dir: Path) -> str:
    """Phase 1: build the INT8 latency predictor of the hyperspace (§4.3), then rename it into place."""
    from nasq.cli.latency import build_from_options

    final = predictor_path(run_dir)
    if final.is_file():  # renamed into place by a call that died before recording it: complete
        return f"predictor {final} was complete"
    partial = run_dir / (PREDICTOR_DIR + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    opts = settings.options
    rep = build_from_options(predictor_options(opts, partial / PREDICTOR_FILE, settings.address))
    shutil.rmtree(final.parent, ignore_errors=True)
    os.replace(partial, final.parent)
    return (f"measured {rep.blocks} blocks and {rep.chains} subnets, predictor version "
            f"{rep.predictor.version} -> {final}")


def _lut_phase(settings: SearchSettings, run_dir: Path) -> str:
    """Phase 2: build (or resume) the accuracy table (§4.5) in its partial folder, then rename it into
    place."""
    from nasq.bkd.build import build_lut

    final = lut_path(run_dir)
    if (final / LUT_META).is_file():
        return f"table {final} was complete"
    partial = run_dir / (LUT_DIR + PARTIAL)
    report = build_lut(settings.options.lut_settings(), partial)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return (f"trained {len(report.trained)} (stage, type) parts, skipped {len(report.skipped)} finished "
            f"ones -> {final}")


def _search_phase(settings: SearchSettings, run_dir: Path, entry: dict, verbose: int,
                  address: str | None) -> str:
    """Phase 3: the space search (§4.2, §4.4) on the chain's table and predictor, in ``run_dir`` itself."""
    from nasq import runner

    started = entry["started_at"] is not None and (run_dir / "tuner.pkl").is_file() and \
        runner.newest_searcher_state(run_dir) is not None
    if started:
        runner.resume_search(run_dir, address=address, verbose=verbose)
        return "search resumed and finished"
    options = dataclasses.replace(settings.options, lut=str(lut_path(run_dir)),
                                  predictor=str(predictor_path(run_dir))).check()
    search = settings.replace(experiment_config=options)
    runner.search_in(search, run_dir, verbose=verbose)
    return f"searched {search.samples} spaces"


__all__ = ["CHAIN_FILE", "CHAIN_FORMAT", "CHAIN_LOG", "PHASES", "check_chain", "is_chain_run", "lut_path",
           "predictor_path", "read_chain", "resume_chain", "run_chain"]
