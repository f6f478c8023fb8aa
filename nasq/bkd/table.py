"""The block-wise KD accuracy table (SpaceEvo §4.5): strict reader, exact look-ups and an estimator.

A LUT directory (written by ``nasq lut build``) holds two files:

``lut.csv``
    one row per evaluated stage setting, columns :data:`COLUMNS` (:data:`nasq.bkd.rows.COLUMNS`): ``stage``
    (0-based), ``block_type``, ``setting`` (:func:`nasq.spaces.spaceevo_subnet.setting_key`, e.g.
    ``i16:c24_k3_e4,c40_k5_e6``, parsed by :func:`nasq.bkd.rows.parse_setting`),
    ``nsr_fp32``, ``nsr_int8`` (NSR losses of the elastic stage at that setting on the validation split),
    ``flops``, ``params``. Extra columns are allowed and ignored.
``lut.json``
    ``format`` = :data:`LUT_FORMAT`, ``version`` (or ``format_version``) = :data:`LUT_FORMAT_VERSION`,
    ``hyperspace`` (a :func:`nasq.spaces.spaceevo.space_from_name` name) and ``resolution``; ``teacher``,
    ``data`` and ``seconds`` (per stage) are recorded but not interpreted here.

:class:`AccuracyLUT` reads both strictly (a missing, corrupt or foreign file is one :class:`DataError`
line naming the fix; every setting must be one the hyperspace allows) and answers the
:class:`nasq.qt_score.AccuracyTable` protocol for any setting row: exact values for evaluated settings,
and for the others an estimate (the builder evaluates a sample of the combinatorial setting space).

The estimator (per stage and block type, fitted on first use from that pair's evaluated rows): a ridge
regression of ``log(nsr)`` on capacity features of the setting (:func:`setting_features`: depth, log input
width, mean/last/min log width, mean kernel², mean log expand, log of an MBConv-style parameter proxy),
standardised, λ = :data:`RIDGE`. The prediction is clipped to [½ min, 2 max] of the pair's observed
losses (no wild extrapolation). With fewer than :data:`MIN_FIT_ROWS` rows the pair's median answers.
Its held-out error is measured in ``tests/test_bkd_table.py``. ``lut.json`` may name another estimator
under ``estimator`` (:data:`ESTIMATORS`: ``uniform-mean-v1`` is :func:`nasq.bkd.rows.estimate_losses`, for
tables holding every uniform setting); an unknown name is refused. The table's ``version`` is a hash of
both files' bytes, so two tables with equal version give equal answers.

Both files are written only by :func:`write_lut_text` (:func:`write_lut` from row dicts; the builder
:mod:`nasq.bkd.build` merges its parts through it).

:class:`LUTServer` is the Ray-free body of the named table actor (``trainables/spaceevo.py``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nasq.bkd.rows import COLUMNS, ESTIMATOR, LOSS_COLUMNS, estimate_losses, parse_setting
from nasq.errors import ConfigError, DataError
from nasq.runfile import atomic_write  # noqa: F401 (re-exported: nasq.bkd.build writes parts with it)
from nasq.spaces.spaceevo import Hyperspace, SpaceEvoSpace, space_from_name

log = logging.getLogger(__name__)

LUT_CSV = "lut.csv"
LUT_JSON = "lut.json"
LUT_FORMAT = "nasq.accuracy-lut"
LUT_FORMAT_VERSION = 1  # written as "version"; the reader also accepts "format_version"
MIN_FIT_ROWS = 12     # fewer evaluated rows of a (stage, type): its median answers every miss
RIDGE = 1e-2          # ridge penalty on standardised features
CLIP = (0.5, 2.0)     # estimates stay within [0.5 min, 2 max] of the pair's observed losses
RIDGE_ESTIMATOR = "ridge-capacity-v1"
#: estimator names lut.json may give under "estimator" (default: the ridge estimator of this module)
ESTIMATORS = (RIDGE_ESTIMATOR, ESTIMATOR)
FIX = "rebuild it with `nasq lut build --out DIR`"
def setting_features(rows: np.ndarray) -> np.ndarray:
    """Capacity features of stage setting rows (the estimator's inputs, SpaceEvo §4.5 table rows).

    Columns: depth, log cin, mean/last/min log width, mean k², mean log expand, log Σ_j w_j e_j
    (w_{j-1} + k_j²) (an MBConv-style parameter count).
    """
    rows = np.atleast_2d(np.asarray(rows, np.float64))
    d = (rows.shape[1] - 2) // 3
    depth = rows[:, 1]
    active = np.arange(d)[None, :] < depth[:, None]
    w, k, e = rows[:, 2:2 + d], rows[:, 2 + d:2 + 2 * d], rows[:, 2 + 2 * d:]
    safe_w, safe_e = np.where(active, w, 1.0), np.where(active, e, 1.0)
    logw, loge = np.log(safe_w) * active, np.log(safe_e) * active
    last = np.take_along_axis(safe_w, (depth.astype(np.int64) - 1)[:, None], axis=1)[:, 0]
    prev = np.concatenate([rows[:, :1], safe_w[:, :-1]], axis=1)
    proxy = (safe_w * safe_e * (prev + k ** 2) * active).sum(axis=1)
    return np.stack([depth, np.log(rows[:, 0]), logw.sum(1) / depth, np.log(last),
                     np.where(active, np.log(safe_w), np.inf).min(1), (k ** 2 * active).sum(1) / depth,
                     loge.sum(1) / depth, np.log(proxy)], axis=1)


@dataclass
class _Estimator:
    """Ridge regression of log loss on :func:`setting_features` for one (stage, type, column)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    lo: float
    hi: float
    median: float

    @classmethod
    def fit(cls, rows: np.ndarray, losses: np.ndarray) -> "_Estimator":
        floor = max(float(losses[losses > 0].min()) if np.any(losses > 0) else 1e-9, 1e-9)
        y = np.log(np.maximum(losses, floor))
        lo, hi = CLIP[0] * float(losses.min()), CLIP[1] * float(losses.max())
        median = float(np.median(losses))
        x = setting_features(rows)
        if len(rows) < MIN_FIT_ROWS:
            return cls(np.zeros(x.shape[1]), np.ones(x.shape[1]), np.zeros(0), lo, hi, median)
        mean, scale = x.mean(0), x.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        z = np.column_stack([np.ones(len(x)), (x - mean) / scale])
        reg = np.sqrt(RIDGE * len(x)) * np.eye(z.shape[1])[1:]  # the intercept is not penalised
        coef = np.linalg.lstsq(np.vstack([z, reg]), np.concatenate([y, np.zeros(len(reg))]), rcond=None)[0]
        return cls(mean, scale, coef, lo, hi, median)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        if not len(self.coef):
            return np.full(len(rows), self.median)
        z = (setting_features(rows) - self.mean) / self.scale
        return np.clip(np.exp(self.coef[0] + z @ self.coef[1:]), self.lo, self.hi)


@dataclass
class AccuracyLUT:
    """The accuracy lookup table of one hyperspace (SpaceEvo §4.5); see the module docstring.

    Build it with :meth:`load`. ``stage_losses`` is the :class:`nasq.qt_score.AccuracyTable` protocol.
    """

    path: str
    hyperspace_name: str
    hyperspace: Hyperspace
    version: str
    meta: dict
    rows: dict[tuple[int, str], np.ndarray]                   # (stage, type) -> setting rows
    values: dict[tuple[int, str], dict[str, np.ndarray]]      # (stage, type) -> column -> values
    index: dict[tuple[int, str], dict[str, int]]              # (stage, type) -> setting key -> row
    _estimators: dict = field(default_factory=dict, repr=False)
    _by_bytes: dict = field(default_factory=dict, repr=False)  # (stage, type) -> row bytes -> row

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path) -> "AccuracyLUT":
        """Read and validate ``DIR/lut.json`` and ``DIR/lut.csv`` (SpaceEvo §4.5 table).

        Raises:
            DataError: a missing, unreadable, corrupt or foreign file, or a row the hyperspace does not
                allow (one line naming the file, the row and the fix).
        """
        directory = Path(directory).expanduser().resolve()
        if not directory.is_dir():
            raise DataError(f"accuracy table {directory} is not a folder; pass the --out DIR of "
                            "`nasq lut build` (it holds lut.csv and lut.json)")
        meta_bytes, csv_bytes = (_read_bytes(directory / n) for n in (LUT_JSON, LUT_CSV))
        meta = _parse_meta(directory / LUT_JSON, meta_bytes)
        name, hyper = _hyperspace_of(directory / LUT_JSON, meta)
        version = hashlib.sha256(meta_bytes + b"\0" + csv_bytes).hexdigest()[:12]
        rows, values, index = _parse_rows(directory / LUT_CSV, csv_bytes, hyper)
        return cls(str(directory), name, hyper, version, meta, rows, values, index)

    @property
    def space(self) -> SpaceEvoSpace:
        """The hyperspace's space of candidate spaces (§4.1)."""
        return space_from_name(self.hyperspace_name)

    def pairs(self) -> list[tuple[int, str]]:
        """The (stage, block type) pairs with evaluated rows (§4.5: one elastic stage each)."""
        return sorted(self.rows)

    def missing_pairs(self) -> list[tuple[int, str]]:
        """(stage, block type) pairs of the hyperspace the table has no row for (§4.5 needs all N x 7)."""
        h = self.hyperspace
        return [(i, t) for i in range(h.num_stages) for t in h.types if (i, t) not in self.rows]

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())

    # -- answers -----------------------------------------------------------------------------------
    def stage_losses(self, stage: int, block_type: str, settings: np.ndarray) -> np.ndarray:
        """INT8 NSR loss of each setting row at ``stage`` for ``block_type`` (§4.5 protocol)."""
        return self.losses(stage, block_type, settings)[0]

    def losses(self, stage: int, block_type: str, settings: np.ndarray,
               column: str = "nsr_int8") -> tuple[np.ndarray, int]:
        """Loss of each setting row (exact when evaluated, else the estimate) and how many were exact (§4.5).

        Raises:
            ConfigError: an unknown column or a row of the wrong width.
            DataError: the table has no row at all for ``(stage, block_type)``.
        """
        if column not in LOSS_COLUMNS:
            raise ConfigError(f"unknown loss column {column!r}; use one of {LOSS_COLUMNS}")
        pair = (int(stage), str(block_type))
        if pair not in self.rows:
            raise DataError(f"accuracy table {self.path} has no row for stage {pair[0]} block type "
                            f"{pair[1]!r}; {FIX} over the whole hyperspace")
        settings = np.atleast_2d(np.asarray(settings, np.float64))
        width = 2 + 3 * max(self.hyperspace.depths)
        if settings.shape[1] != width:
            raise ConfigError(f"setting rows must have {width} columns (CandidateSpace.stage_settings), "
                              f"got {settings.shape[1]}")
        if pair not in self._by_bytes:  # a row's float64 bytes identify it as its setting key does
            self._by_bytes[pair] = {r.tobytes(): j for j, r in enumerate(_canonical(self.rows[pair]))}
        index, vals = self._by_bytes[pair], self.values[pair][column]
        hit = np.array([index.get(r.tobytes(), -1) for r in _canonical(settings)], np.int64)
        out = np.empty(len(settings))
        found = hit >= 0
        out[found] = vals[hit[found]]
        if not found.all():
            out[~found] = self._estimator(pair, column).predict(settings[~found])
        return out, int(found.sum())

    def _estimator(self, pair: tuple[int, str], column: str) -> Any:
        key = (*pair, column)
        if key not in self._estimators and self.meta.get("estimator", RIDGE_ESTIMATOR) != RIDGE_ESTIMATOR:
            vals = self.values[pair][column]
            self._estimators[key] = _UniformMean({k: float(vals[i]) for k, i in self.index[pair].items()})
        if key not in self._estimators:
            self._estimators[key] = _Estimator.fit(self.rows[pair], self.values[pair][column])
        return self._estimators[key]

    def estimate(self, stage: int, block_type: str, settings: np.ndarray, column: str = "nsr_int8",
                 exclude: np.ndarray | None = None) -> np.ndarray:
        """The estimator's answer for ``settings`` (ignoring exact rows), fitted without the rows
        ``exclude`` (a boolean mask over the pair's rows): for held-out error measurements."""
        pair = (int(stage), str(block_type))
        rows, vals = self.rows[pair], self.values[pair][column]
        keep = np.ones(len(rows), bool) if exclude is None else ~np.asarray(exclude, bool)
        return _Estimator.fit(rows[keep], vals[keep]).predict(np.atleast_2d(settings))


def _canonical(rows: np.ndarray) -> np.ndarray:
    """C-contiguous float64 rows without negative zeros (so equal settings have equal bytes)."""
    return np.ascontiguousarray(np.asarray(rows, np.float64) + 0.0)


@dataclass
class _UniformMean:
    """The builder's uniform-mean estimator (:func:`nasq.bkd.rows.estimate_losses`) over one pair's rows."""

    table: dict[str, float]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        try:
            return estimate_losses(self.table, rows)
        except ConfigError as exc:
            raise DataError(str(exc)) from None


class LUTServer:
    """Ray-free body of the table actor: loads the directory and answers batched queries (§4.5)."""

    def __init__(self, directory: str) -> None:
        self.directory = str(directory)
        self.table = AccuracyLUT.load(directory)

    def query(self, requests: Sequence[tuple[int, str, Any]], column: str = "nsr_int8") -> dict[str, Any]:
        """Losses of many ``(stage, block_type, setting rows)`` requests in one call, and the version (§4.5).

        Returns:
            ``{"losses": [list per request], "exact": [exact rows per request], "version": str}``.
        """
        losses, exact = [], []
        for stage, block_type, rows in requests:
            values, hits = self.table.losses(stage, block_type, np.asarray(rows, np.float64), column)
            losses.append(values.tolist())
            exact.append(hits)
        return {"losses": losses, "exact": exact, "version": self.table.version}

    def info(self) -> dict[str, Any]:
        """Directory, version, hyperspace, rows and process id of the served §4.5 table."""
        t = self.table
        return {"path": self.directory, "version": t.version, "hyperspace": t.hyperspace_name,
                "rows": len(t), "pid": os.getpid()}


# ------------------------------------------------------------------------------------------ helpers
def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"accuracy table {path.parent} has no {path.name}; {FIX}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}); check its permissions or {FIX}"
                        ) from None


def _parse_meta(path: Path, data: bytes) -> dict:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({type(exc).__name__}); {FIX}") from None
    if not isinstance(meta, dict) or meta.get("format") != LUT_FORMAT:
        raise DataError(f"{path} is not a nasq accuracy table (format {LUT_FORMAT!r}); pass the --out DIR "
                        "of `nasq lut build`")
    if meta.get("estimator", RIDGE_ESTIMATOR) not in ESTIMATORS:
        raise DataError(f"{path} names estimator {meta.get('estimator')!r}; this nasq knows "
                        f"{list(ESTIMATORS)}; upgrade nasq or {FIX}")
    version = meta.get("format_version", meta.get("version"))
    if isinstance(version, bool) or not isinstance(version, int) or version != LUT_FORMAT_VERSION:
        raise DataError(f"{path} has table format version {version!r}, this nasq reads "
                        f"{LUT_FORMAT_VERSION}; {FIX} with this nasq version")
    return meta


def _hyperspace_of(path: Path, meta: dict) -> tuple[str, Hyperspace]:
    name, res = meta.get("hyperspace"), meta.get("resolution")
    if not isinstance(name, str):
        raise DataError(f"{path} names no hyperspace (e.g. \"hyperspace\": \"spaceevo\"); {FIX}")
    base = name.partition(":")[0]
    if res is not None:
        if isinstance(res, bool) or not isinstance(res, int):
            raise DataError(f"{path}: resolution {res!r} is not an integer; {FIX}")
        name = f"{base}:{res}"
    try:
        space = space_from_name(name)
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}; {FIX}") from None
    return f"{base}:{space.hyperspace.resolution}", space.hyperspace


def _parse_rows(path: Path, data: bytes, h: Hyperspace) -> tuple[dict, dict, dict]:
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; {FIX}") from None
    reader = csv.DictReader(lines)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing} (needs {list(COLUMNS)}); {FIX}")
    groups: dict[tuple[int, str], dict[str, list]] = {}
    for n, rec in enumerate(reader, start=2):
        pair, setting, row, nums = _check_row(path, n, rec, h)
        g = groups.setdefault(pair, {"keys": {}, "rows": [], **{c: [] for c in LOSS_COLUMNS}})
        if setting in g["keys"]:
            raise DataError(f"{path} line {n}: stage {pair[0]} {pair[1]} setting {setting} appears twice; "
                            f"{FIX}")
        g["keys"][setting] = len(g["rows"])
        g["rows"].append(row)
        for c in LOSS_COLUMNS:
            g[c].append(nums[c])
    if not groups:
        raise DataError(f"{path} has no rows; {FIX}")
    rows = {p: np.array(g["rows"]) for p, g in groups.items()}
    values = {p: {c: np.array(g[c]) for c in LOSS_COLUMNS} for p, g in groups.items()}
    index = {p: g["keys"] for p, g in groups.items()}
    return rows, values, index


def _check_row(path: Path, n: int, rec: dict, h: Hyperspace) -> tuple[tuple[int, str], str, np.ndarray, dict]:
    where = f"{path} line {n}"
    stage_text, t, setting = (rec.get(c) or "" for c in ("stage", "block_type", "setting"))
    if not (stage_text.isascii() and stage_text.isdecimal()) or int(stage_text) >= h.num_stages:
        raise DataError(f"{where}: stage {stage_text!r} must be 0..{h.num_stages - 1}; {FIX}")
    stage = int(stage_text)
    if t not in h.types:
        raise DataError(f"{where}: unknown block type {t!r}; allowed: {list(h.types)}; {FIX}")
    try:
        row = parse_setting(setting, max(h.depths))
    except ValueError as exc:
        raise DataError(f"{where}: {exc}; {FIX}") from None
    problem = _setting_problem(h, stage, t, row)
    if problem:
        raise DataError(f"{where}: setting {setting} {problem} of the LUT's hyperspace; {FIX}")
    nums = {}
    for c in COLUMNS[3:]:
        try:
            v = float(rec.get(c) or "nan")
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and v >= 0):
            raise DataError(f"{where}: {c} {rec.get(c)!r} must be a finite number >= 0; {FIX}")
        nums[c] = v
    return (stage, t), setting, row, nums


def _setting_problem(h: Hyperspace, stage: int, t: str, row: np.ndarray) -> str:
    d = max(h.depths)
    depth = int(row[1])
    cins = h.widths[stage - 1] if stage else (h.stem_width,)
    checks = (("input width", [row[0]], cins), ("depth", [depth], h.depths),
              ("width", row[2:2 + depth], h.widths[stage]), ("kernel", row[2 + d:2 + d + depth], h.kernels),
              ("expand", row[2 + 2 * d:2 + 2 * d + depth], h.expands_of(t)))
    for what, got, allowed in checks:
        bad = [v for v in got if v not in allowed]
        if bad:
            return f"has {what} {bad[0]:g} outside {list(allowed)} at stage {stage}"
    return ""


def all_settings(h: Hyperspace, stage: int, block_type: str) -> np.ndarray:
    """Every setting row a (stage, block type) of ``h`` can take (any window): the §4.5 table's domain.

    Combinatorial (widths × kernels × expands per block, to the power of the depth); meant for small
    hyperspaces such as ``spaceevo-tiny`` and for tests.
    """
    import itertools

    d = max(h.depths)
    cins = h.widths[stage - 1] if stage else (h.stem_width,)
    per_block = list(itertools.product(h.widths[stage], h.kernels, h.expands_of(block_type)))
    out = []
    for cin in cins:
        for depth in h.depths:
            for blocks in itertools.product(per_block, repeat=depth):
                row = np.zeros(2 + 3 * d)
                row[0], row[1] = cin, depth
                for j, (w, k, e) in enumerate(blocks):
                    row[2 + j], row[2 + d + j], row[2 + 2 * d + j] = w, k, e
                out.append(row)
    return np.array(out)


def rows_csv(records: Sequence[dict]) -> str:
    """The CSV text of §4.5 table rows: header :data:`COLUMNS`, ``\\n`` line ends, other keys ignored."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def write_lut_text(directory: str | Path, csv_text: str, meta: dict) -> Path:
    """Write a §4.5 LUT directory from the CSV text of its rows (header :data:`COLUMNS`, e.g.
    :func:`rows_csv`) and its ``lut.json`` fields beside ``format`` and ``version``, which come first.
    Atomic per file; the format :meth:`AccuracyLUT.load` reads (the one writer of it)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"format": LUT_FORMAT, "version": LUT_FORMAT_VERSION, **meta}
    atomic_write(directory / LUT_CSV, csv_text)
    atomic_write(directory / LUT_JSON, json.dumps(doc, indent=1))
    return directory


def write_lut(directory: str | Path, records: Sequence[dict], meta: dict) -> Path:
    """Write a §4.5 LUT directory from row dicts of :data:`COLUMNS` and ``lut.json`` fields
    (:func:`write_lut_text` of :func:`rows_csv`)."""
    return write_lut_text(directory, rows_csv(records), meta)


__all__ = ["AccuracyLUT", "COLUMNS", "ESTIMATORS", "LOSS_COLUMNS", "LUTServer", "LUT_CSV", "LUT_FORMAT",
           "LUT_FORMAT_VERSION", "LUT_JSON", "RIDGE_ESTIMATOR", "all_settings", "atomic_write", "parse_setting",
           "rows_csv", "setting_features", "write_lut", "write_lut_text"]
