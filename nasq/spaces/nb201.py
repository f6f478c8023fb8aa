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
_OP_INDEX = {op: i for i, op in enumerate(NB201_OPS)}


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
        """Sample each edge's op uniformly."""
        return NB201Genome(tuple(NB201_OPS[i] for i in rng.integers(len(NB201_OPS), size=len(NB201_EDGES))))

    def mutate(self, genome: NB201Genome, rng: np.random.Generator, kind: str | None = None) -> NB201Genome:
        """Change the op of one uniformly chosen edge to a different op."""
        self._check_kind(kind)
        # One draw picks the edge and one of the four other ops (uniform over the 24 neighbours).
        others = len(NB201_OPS) - 1
        edge, step = divmod(int(rng.integers(len(NB201_EDGES) * others)), others)
        ops = list(genome.ops)
        ops[edge] = NB201_OPS[(_OP_INDEX[ops[edge]] + 1 + step) % len(NB201_OPS)]
        return NB201Genome(tuple(ops))
