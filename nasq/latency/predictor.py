"""Block-level INT8 latency predictor: exact-key table, additive op-cost regressors, calibrated overhead.

SpaceEvo (Sec. 4) predicts a model's latency on a device as the sum of its blocks' latencies, with
block latencies from a regressor trained on real measurements (nn-Meter's kernel-level prediction).
Here:

1. a table maps canonical block keys (:meth:`BlockSpec.key`) to their measured median latency and answers
   every block that was measured;
2. misses go to a per-block-type non-negative additive cost model over the block's operations
   (:mod:`nasq.latency.features`), times a boosted-tree correction on the log-ratio shared by all types;
   types with too few samples use the model pooled over all types. A miss never raises;
3. a whole chain costs the sum of its blocks plus an overhead per block boundary fitted on chains
   measured whole (a block measured alone pays a session call and an input quantize/output dequantize
   that a chain pays once).

The predictor file is JSON (no pickle): the table, the cost models' coefficients, the trees' node arrays,
the device fingerprint it was measured on and a content version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from nasq.blocks.spec import BlockSpec, check_chain
from nasq.errors import CheckpointError, ConfigError, GenomeError, bad_state
from nasq.latency.cost_models import AdditiveCostModel, TreeEnsemble
from nasq.latency.features import OP_COLUMNS, SHAPE_COLUMNS, op_matrix, shape_features
from nasq.latency.fingerprint import device_fingerprint, fingerprint_mismatch

log = logging.getLogger(__name__)

FORMAT = "nasq-latency-predictor"
#: 2: the device fingerprint names the CPU's vendor, family, model, stepping and INT8 ISA flags.
FORMAT_VERSION = 2
#: Fewer samples of a type than this (or than 2× its active columns) -> the pooled model answers it.
MIN_TYPE_SAMPLES = 8

SpecLike = BlockSpec | str


def as_specs(items: Sequence[SpecLike]) -> list[BlockSpec]:
    """Turn BlockSpecs or canonical keys into BlockSpecs; bad keys raise GenomeError naming the token."""
    if isinstance(items, (str, BlockSpec)):
        items = [items]
    out = []
    for item in items:
        if isinstance(item, BlockSpec):
            out.append(item)
        elif isinstance(item, str):
            out.append(BlockSpec.from_key(item))
        else:
            raise GenomeError(f"expected a BlockSpec or a block key string, got {type(item).__name__}")
    return out


class LatencyPredictor:
    """Latency of blocks and block chains on one device and engine (SpaceEvo Sec. 4).

    Build it with :meth:`fit` (and :meth:`calibrate` on whole chains), query it with :meth:`predict`,
    :meth:`predict_model` and :meth:`predict_in_chain` (blocks summed into a subnet), persist it with
    :meth:`save` / :meth:`load`.
    """

    def __init__(self, engine: str, fingerprint: dict, table: dict[str, float],
                 type_models: dict[str, AdditiveCostModel], pooled_model: AdditiveCostModel,
                 correction: TreeEnsemble | None = None, overhead: dict[str, float] | None = None,
                 meta: dict | None = None) -> None:
        self.engine = engine
        self.fingerprint = dict(fingerprint)
        self.table = {str(k): float(v) for k, v in table.items()}
        self.type_models = dict(type_models)
        self.pooled_model = pooled_model
        self.correction = correction
        self.overhead = dict(overhead or {"per_boundary_ms": 0.0, "per_boundary_melem_ms": 0.0})
        self.meta = dict(meta or {})
        self._version: str | None = None
        positive = [v for v in self.table.values() if v > 0]
        self._floor = 0.25 * min(positive) if positive else 1e-4

    # ----------------------------------------------------------------------------------------- fit
    @classmethod
    def fit(cls, specs: Sequence[SpecLike], latencies_ms: Sequence[float], *, engine: str, fingerprint: dict,
            correction: bool = True, seed: int = 0, meta: dict | None = None) -> "LatencyPredictor":
        """Fit the table and the regressors on measured blocks (Sec. 4 predictor training).

        Args:
            specs: measured blocks (BlockSpecs or keys).
            latencies_ms: their median latencies in ms, positive.
            engine: engine name the latencies were measured with, e.g. ``ort-int8``.
            fingerprint: device fingerprint of the measurements.
            correction: also fit the boosted-tree log-ratio correction.
            seed: seed of the trees' subsampling.
            meta: extra JSON-ready facts stored in the file (samples, space, ...).
        """
        specs = as_specs(specs)
        y = np.asarray(latencies_ms, dtype=np.float64)
        if len(specs) != len(y) or len(y) < 2:
            raise ConfigError(f"need at least 2 measured blocks with one latency each, got {len(specs)} "
                              f"specs and {len(y)} latencies")
        if not np.all(np.isfinite(y) & (y > 0)):
            raise ConfigError("latencies must be finite and positive; re-measure the failed blocks")
        groups: dict[str, list[float]] = defaultdict(list)
        for s, v in zip(specs, y):
            groups[s.key()].append(float(v))
        table = {k: float(np.median(v)) for k, v in groups.items()}
        x = op_matrix(specs)
        pooled = _fit_additive(x, y, np.ones(len(specs), dtype=bool))
        type_models = {}
        for t in sorted({s.type for s in specs}):
            mask = np.array([s.type == t for s in specs])
            model = _fit_additive(x, y, mask)
            if mask.sum() >= max(MIN_TYPE_SAMPLES, 2 * len(model.columns)):
                type_models[t] = model
        pred = cls(engine, fingerprint, table, type_models, pooled, None, meta=meta)
        if correction and len(y) >= 20:
            base = np.maximum(pred._additive(specs), 1e-3 * y.min())  # a block with no costed op
            pred.correction = TreeEnsemble.fit(shape_features(specs), np.log(y / base), seed=seed)
            pred._version = None
        return pred

    def calibrate(self, chains: Sequence[Sequence[SpecLike]],
                  measured_ms: Sequence[float]) -> dict[str, float]:
        """Fit the per-boundary overhead on chains measured whole (Sec. 4: sum of blocks + overhead).

        The chain's measured latency minus the sum of its blocks' predictions is fitted, in relative terms,
        as ``a * boundaries + b * boundary_elements`` (boundary elements in millions).

        Returns:
            The fitted overhead dict (also stored on the predictor).
        """
        chains = [as_specs(c) for c in chains]
        y = np.asarray(measured_ms, dtype=np.float64)
        if len(chains) != len(y) or not len(y):
            raise ConfigError("calibrate needs one measured latency per chain")
        sums = np.array([self.predict(c).sum() for c in chains])
        feats = np.array([_boundary_features(c) for c in chains])
        cols = 2 if len(y) >= 4 else 1
        coef, *_ = np.linalg.lstsq(feats[:, :cols] / y[:, None], (y - sums) / y, rcond=None)
        coef = np.concatenate([coef, np.zeros(2 - cols)])
        self.overhead = {"per_boundary_ms": float(coef[0]), "per_boundary_melem_ms": float(coef[1]),
                         "chains": int(len(y))}
        self._version = None
        return self.overhead

    # ------------------------------------------------------------------------------------- predict
    def predict(self, specs: Sequence[SpecLike]) -> np.ndarray:
        """Latency in ms of each block (table value when measured, regressor otherwise; Sec. 4).

        Args:
            specs: BlockSpecs or canonical keys; a bad key raises GenomeError, an unseen block never raises.
        """
        return self._predict(as_specs(specs))

    def _predict(self, specs: list[BlockSpec]) -> np.ndarray:
        out = np.array([self.table.get(s.key(), np.nan) for s in specs], dtype=np.float64)
        miss = np.isnan(out)
        if miss.any():
            out[miss] = self._regress([s for s, m in zip(specs, miss) if m])
        return out

    def predict_regressor(self, specs: Sequence[SpecLike]) -> np.ndarray:
        """Regressor-only latency in ms (ignores the table): what an unseen block gets."""
        return self._regress(as_specs(specs))

    def predict_model(self, chain: Sequence[SpecLike]) -> float:
        """Latency in ms of a chain run as one model: sum of blocks plus calibrated overhead (Sec. 4).

        For a chain that ends in its head (every subnet does) this is the sum of :meth:`predict_in_chain`
        over the chain, floored at a small positive value.
        """
        specs = as_specs(chain)
        check_chain(specs)
        total = float(self._predict(specs).sum())
        nb, elems = _boundary_features(specs)
        total += nb * self.overhead["per_boundary_ms"] + elems * self.overhead["per_boundary_melem_ms"]
        return max(total, self._floor)

    def predict_in_chain(self, specs: Sequence[SpecLike]) -> np.ndarray:
        """Latency in ms of each block as part of a chain that continues after it (Sec. 4 calibration).

        Each block's :meth:`predict` plus the boundary overhead a chain pays after every non-final block
        (``per_boundary_ms`` + ``per_boundary_melem_ms`` × its output elements in millions); a head is
        always a chain's last block and pays none. So a subnet's latency is a sum over its distinct
        blocks, each priced once (the Q-T score's look-ups, :mod:`nasq.qt_score`), and equals
        :meth:`predict_model` of the subnet's chain. Values may be below a block's own latency (a block
        timed alone pays a session call and an input quantize that a chain pays once).
        """
        specs = as_specs(specs)
        out = self._predict(specs)
        inner = np.array([s.type != "head" for s in specs])
        elems = np.array([s.cout * s.out_resolution ** 2 for s in specs], np.float64) / 1e6
        boundary = self.overhead["per_boundary_ms"] + elems * self.overhead["per_boundary_melem_ms"]
        return out + inner * boundary

    def _additive(self, specs: list[BlockSpec]) -> np.ndarray:
        x = op_matrix(specs)
        pooled = self.pooled_model.predict(x[:, _cols(self.pooled_model)])
        out = pooled.copy()
        types = np.array([s.type for s in specs])
        for t, model in self.type_models.items():
            rows = np.flatnonzero(types == t)
            if len(rows):
                out[rows] = model.predict(x[np.ix_(rows, _cols(model))])
        bad = ~np.isfinite(out) | (out <= 0)
        out[bad] = pooled[bad]
        return out

    def _regress(self, specs: list[BlockSpec]) -> np.ndarray:
        base = self._additive(specs)
        if self.correction is not None:
            corr = np.clip(self.correction.predict(shape_features(specs)), -2.0, 2.0)
            base = base * np.exp(corr)
        bad = ~np.isfinite(base)
        if bad.any():
            log.warning("latency regressor gave %d non-finite values; using the floor", int(bad.sum()))
            base[bad] = self._floor
        return np.maximum(base, self._floor)

    # ---------------------------------------------------------------------------------------- io
    def to_dict(self) -> dict:
        """The JSON document :meth:`save` writes, with its content version."""
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "engine": self.engine,
               "fingerprint": self.fingerprint, "op_columns": list(OP_COLUMNS),
               "shape_columns": list(SHAPE_COLUMNS), "table": self.table,
               "pooled_model": self.pooled_model.to_dict(),
               "type_models": {t: m.to_dict() for t, m in sorted(self.type_models.items())},
               "correction": self.correction.to_dict() if self.correction else None,
               "overhead": self.overhead, "meta": self.meta}
        doc["version"] = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]
        return doc

    @property
    def version(self) -> str:
        """Content hash of the predictor (what its file records as ``version``)."""
        if self._version is None:
            self._version = self.to_dict()["version"]
        return self._version

    def save(self, path: str | Path) -> str:
        """Write the predictor as JSON atomically; return its version."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = self.to_dict()
        doc["saved_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, path)
        return doc["version"]

    @classmethod
    def load(cls, path: str | Path, *, allow_foreign: bool = False, threads: int | None = None,
             fingerprint: dict | None = None) -> "LatencyPredictor":
        """Read a predictor file; refuse one measured on another device, engine version or thread count.

        Args:
            path: the JSON file written by :meth:`save`.
            allow_foreign: accept a file whose fingerprint differs from this machine's (logged).
            threads: thread count to compare against (default: the file's).
            fingerprint: this machine's fingerprint (default: :func:`device_fingerprint`).

        Raises:
            CheckpointError: corrupt or unsupported file, or a foreign fingerprint without ``allow_foreign``.
        """
        doc = _read_doc(path)
        try:
            pred = cls._from_doc(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(bad_state(path, f"malformed predictor ({type(exc).__name__}: {exc})",
                                            "rebuild it with `nasq latency build`")) from None
        if fingerprint is None:
            fingerprint = device_fingerprint(pred.engine, threads or int(pred.fingerprint.get("threads", 1)),
                                             activation_type=pred.fingerprint.get("activation_type"))
        diff = fingerprint_mismatch(pred.fingerprint, fingerprint, labels=("the file", "this machine"))
        if diff and not allow_foreign:
            raise CheckpointError(bad_state(
                path, "it was measured on another device/engine (" + "; ".join(diff) + ")",
                f"rebuild it here with `nasq latency build --engine {pred.engine}`, or accept it with "
                "--allow-foreign (CLI) / allow_foreign=True (Python API)"))
        if diff:
            log.warning("using foreign latency predictor %s: %s", path, "; ".join(diff))
        return pred

    @classmethod
    def _from_doc(cls, doc: dict) -> "LatencyPredictor":
        if list(doc["op_columns"]) != list(OP_COLUMNS) or list(doc["shape_columns"]) != list(SHAPE_COLUMNS):
            raise ValueError("feature columns differ from this nasq version's")
        corr = doc["correction"]
        pred = cls(str(doc["engine"]), dict(doc["fingerprint"]), dict(doc["table"]),
                   {t: AdditiveCostModel.from_dict(m) for t, m in doc["type_models"].items()},
                   AdditiveCostModel.from_dict(doc["pooled_model"]),
                   TreeEnsemble.from_dict(corr) if corr else None, dict(doc["overhead"]), dict(doc["meta"]))
        if corr and pred.correction.n_features != len(SHAPE_COLUMNS):
            raise ValueError("correction trees expect another feature count")
        if pred.version != doc["version"]:
            raise ValueError("content does not match its recorded version (edited or truncated)")
        return pred


def _read_doc(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(bad_state(path, "no such file", "build one with `nasq latency build`"))
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(bad_state(path, f"not readable JSON ({exc})",
                                        "rebuild it with `nasq latency build`"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(bad_state(path, "not a nasq latency predictor file", "pass a file written by "
                                        "`nasq latency build`"))
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        why = (" (its device fingerprint lacks the CPU vendor/family/model/stepping and INT8 ISA flags)"
               if isinstance(version, int) and version < FORMAT_VERSION else "")
        engine = doc.get("engine") if isinstance(doc.get("engine"), str) else "ENGINE"
        raise CheckpointError(bad_state(path, f"predictor format version {version!r} is not {FORMAT_VERSION}"
                                        f"{why}", f"rebuild the predictor with `nasq latency build --engine "
                                        f"{engine}` (this nasq version)"))
    return doc


_COLS_CACHE: dict[tuple[str, ...], np.ndarray] = {}


def _cols(model: AdditiveCostModel) -> np.ndarray:
    key = tuple(model.columns)
    if key not in _COLS_CACHE:
        _COLS_CACHE[key] = np.array([OP_COLUMNS.index(c) for c in model.columns], dtype=np.int64)
    return _COLS_CACHE[key]


def _fit_additive(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> AdditiveCostModel:
    """Non-negative additive model on the op columns that are non-zero for the selected rows."""
    active = np.flatnonzero(np.abs(x[mask]).sum(axis=0) > 0)
    columns = [OP_COLUMNS[i] for i in active]
    return AdditiveCostModel.fit(x[mask][:, active], y[mask], columns)


def _boundary_features(chain: list[BlockSpec]) -> tuple[float, float]:
    """(number of block boundaries, elements crossing them in millions) of a chain."""
    elems = sum(s.cout * s.out_resolution ** 2 for s in chain[:-1]) / 1e6
    return float(len(chain) - 1), float(elems)
