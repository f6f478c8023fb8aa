"""NAS-Bench-201 cell space (Dong & Yang, ICLR 2020), used to test and benchmark searchers.

A cell has 4 nodes and 6 edges; each edge ``j -> i`` (j < i) carries one of five ops.
Genome strings use the benchmark's own form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nasq.errors import GenomeError, bad_token
from nasq.spaces import register
from nasq.spaces.base import Space

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (target node, source node) of the six edges, in string order.
NB201_EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_NB201_TEMPLATE = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|"  # ops in edge order
_N_OPS = len(NB201_OPS)
_N_CELLS = _N_OPS ** len(NB201_EDGES)
_N_NEIGHBOURS = len(NB201_EDGES) * (_N_OPS - 1)  # cells one mutation away
# A cell's index: its op indices as base-5 digits, edge 0 most significant; _PLACE[e] is edge e's place.
_PLACE: tuple[int, ...] = tuple(_N_OPS ** (len(NB201_EDGES) - 1 - e) for e in range(len(NB201_EDGES)))
# Neighbour j of a cell: edge j // 4 moves (1 + j % 4) ops on, as (the edge's place, the op shift).
_MOVES: tuple[tuple[int, int], ...] = tuple((_PLACE[j // (_N_OPS - 1)], 1 + j % (_N_OPS - 1))
                                          for j in range(_N_NEIGHBOURS))
_CELLS: list[str] = []  # every cell string by index, built on first use (shared, so hashes are cached)
_CELL_INDEX: dict[str, int] = {}


def _cells() -> list[str]:
    """All 15,625 cell strings in index order (built once, ~10 ms)."""
    if not _CELLS:
        import itertools

        strings = [_NB201_TEMPLATE.format(*ops)
                   for ops in itertools.product(NB201_OPS, repeat=len(NB201_EDGES))]
        _CELL_INDEX.update((text, i) for i, text in enumerate(strings))
        _CELLS[:] = strings
    return _CELLS


def _uniform_index(rng: np.random.Generator, n: int) -> int:
    """floor(u * n) for one ``rng.random()`` draw u: uniform over 0..n-1 to within n * 2**-53
    (a third of the cost of ``rng.integers(n)`` on the hot path)."""
    return int(rng.random() * n)


@dataclass(frozen=True)
class NB201Genome:
    """One NAS-Bench-201 cell: the op on each of the six edges, in string order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(NB201_EDGES):
            raise GenomeError(f"an NB201 cell has {len(NB201_EDGES)} edges, got {len(self.ops)}")
        for op in self.ops:
            if op not in NB201_OPS:
                raise GenomeError(bad_token("NB201 op", op, list(NB201_OPS)))


@register("nb201")
class NB201Space(Space[NB201Genome]):
    """NAS-Bench-201 topology space: 5^6 = 15,625 cells; mutation changes one edge's op."""

    name = "nb201"
    mutation_kinds = ("edge",)

    def encode(self, genome: NB201Genome) -> str:
        """Write the standard NB201 architecture string."""
        return _NB201_TEMPLATE.format(*genome.ops)

    def decode(self, text: str) -> NB201Genome:
        """Parse an NB201 architecture string; raise ``GenomeError`` naming the bad part."""
        if not isinstance(text, str):
            raise GenomeError(f"an NB201 genome must be a string, got {type(text).__name__}")
        nodes = text.strip().split("+")
        if len(nodes) != 3:
            raise GenomeError(
                f"NB201 genome {text!r} has {len(nodes)} node groups; expected 3, "
                "like '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|'"
            )
        ops: list[str] = []
        for node, group in enumerate(nodes, start=1):
            if not (group.startswith("|") and group.endswith("|")):
                raise GenomeError(f"node group {group!r} of {text!r} must start and end with '|'")
            edges = group[1:-1].split("|")
            if len(edges) != node:
                raise GenomeError(f"node {node} of {text!r} needs {node} edges, got {len(edges)}")
            for src, edge in enumerate(edges):
                op, sep, idx = edge.partition("~")
                if sep != "~" or idx != str(src):
                    raise GenomeError(f"edge {edge!r} of {text!r} must read 'op~{src}'")
                if op not in NB201_OPS:
                    raise GenomeError(bad_token("NB201 op", op, list(NB201_OPS), where=text))
                ops.append(op)
        return NB201Genome(tuple(ops))

    def random(self, rng: np.random.Generator) -> NB201Genome:
        """Sample each edge's op uniformly (one uniform cell index, see :meth:`random_str`)."""
        return self.decode_cached(self.random_str(rng))

    def mutate(self, genome: NB201Genome, rng: np.random.Generator, kind: str | None = None) -> NB201Genome:
        """Change the op of one uniformly chosen edge to a different op."""
        return self.decode_cached(self.mutate_str(self.encode(genome), rng, kind))

    def random_str(self, rng: np.random.Generator) -> str:
        """A uniform cell string: one draw of the cell index (5^6 cells, six uniform edges)."""
        return (_CELLS or _cells())[_uniform_index(rng, _N_CELLS)]

    def mutate_str(self, text: str, rng: np.random.Generator, kind: str | None = None) -> str:
        """:meth:`mutate` on strings, by cell index (no decode/encode on the hot path): one uniform
        draw picks one of the cell's 24 neighbours (each edge changed to each of its four other ops)."""
        if kind is not None and kind != "edge":
            self._check_kind(kind)
        cells = _CELLS or _cells()
        index = _CELL_INDEX.get(text)
        if index is None:  # not canonical: validate (raises GenomeError naming the bad token)
            index = _CELL_INDEX[self.encode(self.decode(text))]
        place, shift = _MOVES[int(rng.random() * _N_NEIGHBOURS)]  # as _uniform_index, inlined
        old = index // place % _N_OPS
        return cells[index + ((old + shift) % _N_OPS - old) * place]
