"""Regressors of the latency predictor whose fitted parameters serialise to plain JSON (no pickle).

Two pieces (SpaceEvo's INT8 latency predictor, Sec. 4 "latency prediction"; nn-Meter's kernel-level
regressors):

- :class:`AdditiveCostModel`: latency = sum over operation classes of a non-negative cost per MAC or per
  element times the block's count of them (an additive cost model over the block's operations). Fitted by
  non-negative least squares on *relative* error, so small and large blocks weigh the same.
- :class:`TreeEnsemble`: boosted regression trees exported from scikit-learn as their node arrays
  (feature, threshold, children, leaf value) and evaluated here with numpy, used as a multiplicative
  correction on the additive model's log-ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls
from sklearn.ensemble import GradientBoostingRegressor


@dataclass
class AdditiveCostModel:
    """Non-negative linear cost model ``latency_ms = X @ coef`` over per-operation cost features.

    Attributes:
        columns: names of the feature columns ``coef`` applies to (the others cost nothing).
        coef: non-negative cost per unit of each column, in ms.
    """

    columns: list[str]
    coef: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, columns: list[str]) -> "AdditiveCostModel":
        """Fit non-negative costs minimising the squared *relative* error ``sum(((x @ c) - y) / y)^2``.

        Args:
            x: (n, len(columns)) feature matrix (already restricted to the columns to fit).
            y: (n,) measured latencies in ms, all positive.
            columns: names of ``x``'s columns.
        """
        scale = np.maximum(np.abs(x).max(axis=0), 1e-12)  # column scaling for a well-conditioned NNLS
        a = (x / scale) / y[:, None]
        coef, _ = nnls(a, np.ones(len(y)), maxiter=50 * x.shape[1] + 100)
        return cls(columns=list(columns), coef=coef / scale)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Latency in ms for the rows of ``x`` (columns in ``self.columns`` order).

        Each row's sum runs column by column in a fixed order, so a block's latency does not depend on
        the other rows of the batch or on the CPU's BLAS kernel (``x @ coef`` blocks rows by SIMD width).
        """
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros(x.shape[0])
        for j, c in enumerate(self.coef):
            out += x[:, j] * c
        return out

    def to_dict(self) -> dict:
        """JSON-ready parameters."""
        return {"columns": self.columns, "coef": [float(c) for c in self.coef]}

    @classmethod
    def from_dict(cls, d: dict) -> "AdditiveCostModel":
        """Rebuild from :meth:`to_dict` output."""
        coef = np.asarray(d["coef"], dtype=np.float64)
        if coef.shape != (len(d["columns"]),) or not np.all(np.isfinite(coef)):
            raise ValueError("additive model: coef does not match its columns")
        return cls(columns=[str(c) for c in d["columns"]], coef=coef)


@dataclass
class TreeEnsemble:
    """Sum of regression trees stored as arrays: ``offset + rate * sum_t tree_t(x)``.

    Each tree is a dict of equal-length lists: ``left``, ``right`` (child node ids, -1 at leaves),
    ``feature``, ``threshold`` and ``value`` (leaf output). Splits follow scikit-learn: go left when
    ``float32(x[feature]) <= threshold``.
    """

    offset: float
    rate: float
    trees: list[dict]
    n_features: int

    @classmethod
    def fit(cls, x: np.ndarray, target: np.ndarray, *, n_estimators: int = 150, max_depth: int = 2,
            learning_rate: float = 0.05, min_samples_leaf: int = 5, seed: int = 0) -> "TreeEnsemble":
        """Fit gradient-boosted trees (squared loss) to ``target`` and export their arrays."""
        offset = float(np.mean(target))
        gb = GradientBoostingRegressor(init="zero", n_estimators=n_estimators, max_depth=max_depth,
                                       learning_rate=learning_rate, min_samples_leaf=min_samples_leaf,
                                       subsample=0.8, random_state=seed)
        gb.fit(x, target - offset)
        trees = []
        for est in gb.estimators_[:, 0]:
            t = est.tree_
            trees.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                          "feature": t.feature.tolist(), "threshold": t.threshold.tolist(),
                          "value": t.value[:, 0, 0].tolist()})
        return cls(offset=offset, rate=float(learning_rate), trees=trees, n_features=x.shape[1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Ensemble output for the rows of ``x``: all trees are walked at once, one level per step."""
        x32 = np.asarray(x, dtype=np.float32)
        left, right, feat, thr, val = self._arrays()
        trees = np.arange(left.shape[0])[None, :]
        rows = np.arange(len(x32))[:, None]
        node = np.zeros((len(x32), left.shape[0]), dtype=np.int64)
        for _ in range(left.shape[1]):
            nxt_left = left[trees, node]
            inner = nxt_left >= 0
            if not inner.any():
                break
            go_left = x32[rows, feat[trees, node]] <= thr[trees, node]
            node = np.where(inner, np.where(go_left, nxt_left, right[trees, node]), node)
        leaves = val[trees, node]
        total = np.zeros(len(x32))
        for t in range(leaves.shape[1]):  # tree by tree: each row's sum has one order, whatever the batch
            total += leaves[:, t]
        return self.offset + self.rate * total

    def _arrays(self) -> tuple[np.ndarray, ...]:
        """Trees padded into (n_trees, max_nodes) arrays (leaves: children -1, feature 0)."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            width = max(len(t["left"]) for t in self.trees)
            shape = (len(self.trees), width)
            left, right = np.full(shape, -1, dtype=np.int64), np.full(shape, -1, dtype=np.int64)
            feat, thr, val = np.zeros(shape, dtype=np.int64), np.zeros(shape), np.zeros(shape)
            for i, t in enumerate(self.trees):
                n = len(t["left"])
                left[i, :n], right[i, :n] = t["left"], t["right"]
                thr[i, :n], val[i, :n] = t["threshold"], t["value"]
                feat[i, :n] = np.maximum(np.asarray(t["feature"], dtype=np.int64), 0)  # leaves: -2 in sklearn
            cache = self._cache = (left, right, feat, thr, val)
        return cache

    def to_dict(self) -> dict:
        """JSON-ready parameters."""
        return {"offset": self.offset, "rate": self.rate, "n_features": self.n_features, "trees": self.trees}

    @classmethod
    def from_dict(cls, d: dict) -> "TreeEnsemble":
        """Rebuild from :meth:`to_dict` output, checking that every tree's arrays are consistent."""
        ens = cls(offset=float(d["offset"]), rate=float(d["rate"]), trees=list(d["trees"]),
                  n_features=int(d["n_features"]))
        if not ens.trees:
            raise ValueError("a tree ensemble needs at least one tree")
        for t in ens.trees:
            n = len(t["left"])
            lengths = {len(t[k]) for k in ("right", "feature", "threshold", "value")}
            if n == 0 or lengths != {n}:
                raise ValueError("tree arrays have different lengths")
            if max(t["left"]) >= n or max(t["right"]) >= n or max(t["feature"]) >= ens.n_features:
                raise ValueError("tree node or feature index out of range")
        ens._arrays()
        return ens
