"""The subnets of one candidate space as a search space (SpaceEvo §5: latency-constrained subnet search).

Once a quantized-for-all supernet is trained over a candidate space, its best INT8 subnet under a latency
limit is found by evolution over the subnet genome of :mod:`nasq.spaces.spaceevo_subnet` (per stage a
depth, per block a width from the stage's window, a kernel and an expand ratio; Once-for-All and
AttentiveNAS search their supernets the same way). Two mutation kinds:

* ``block``: one block of one stage draws a new (width, kernel, expand), different from its own;
* ``depth``: one stage takes another depth; new blocks are drawn at random, dropped ones are its last.

The space's name (``spaceevo-subnet``) and its two arguments, the hyperspace name and the candidate space
string, travel in pickles and searcher states, so a state is only restored into the same space.
"""

from __future__ import annotations

import numpy as np

from nasq.errors import ConfigError
from nasq.spaces import register
from nasq.spaces.base import Space
from nasq.spaces.spaceevo import space_from_name
from nasq.spaces.spaceevo_subnet import BlockChoice, CandidateSpace, SubnetGenome

NAME = "spaceevo-subnet"


@register(NAME)
class SubnetSpace(Space[SubnetGenome]):
    """Subnets of the candidate space ``space`` of hyperspace ``hyperspace`` (SpaceEvo §5 subnet search).

    Args:
        hyperspace: hyperspace name, e.g. ``spaceevo`` or ``spaceevo-tiny:16``.
        space: the candidate space string (the supernet's).
    """

    name = NAME
    mutation_kinds = ("block", "depth")

    def __init__(self, hyperspace: str, space: str) -> None:
        if not isinstance(hyperspace, str) or not isinstance(space, str):
            raise ConfigError("a subnet space needs a hyperspace name and a candidate space string")
        self.hyperspace_name, self.space_string = hyperspace, space
        self.candidate: CandidateSpace = space_from_name(hyperspace).candidate(space)

    def _init_args(self) -> tuple:
        return (self.hyperspace_name, self.space_string)

    def encode(self, genome: SubnetGenome) -> str:
        """The subnet string (grammar in :mod:`nasq.spaces.spaceevo`)."""
        return self.candidate.encode(genome)

    def decode(self, text: str) -> SubnetGenome:
        """Parse a subnet string strictly; ``GenomeError`` names the bad token."""
        return self.candidate.decode(text)

    def random(self, rng: np.random.Generator) -> SubnetGenome:
        """A subnet drawn like :meth:`CandidateSpace.sample_subnets` (depth, then every block uniform)."""
        return self.candidate.genome(self.candidate.sample_subnets(1, rng), 0)

    def _block(self, stage: int, rng: np.random.Generator) -> BlockChoice:
        st = self.candidate.stages[stage]
        return BlockChoice(st.widths[int(rng.integers(len(st.widths)))],
                           st.kernels[int(rng.integers(len(st.kernels)))],
                           st.expands[int(rng.integers(len(st.expands)))])

    def mutate(self, genome: SubnetGenome, rng: np.random.Generator, kind: str | None = None) -> SubnetGenome:
        """``block``: one block gets a new (width, kernel, expand); ``depth``: one stage gets a new depth.

        Raises:
            ConfigError: the space has a single choice for every block (``block``) or depth (``depth``).
        """
        kind = self._check_kind(kind)
        stages = [list(blocks) for blocks in genome.stages]
        cand = self.candidate
        if kind == "block":
            sizes = [len(st.widths) * len(st.kernels) * len(st.expands) for st in cand.stages]
            slots = [(i, j) for i, blocks in enumerate(stages) for j in range(len(blocks)) if sizes[i] > 1]
            if not slots:
                raise ConfigError("the block mutation needs a stage with more than one block choice")
            i, j = slots[int(rng.integers(len(slots)))]
            new = stages[i][j]
            while new == stages[i][j]:
                new = self._block(i, rng)
            stages[i][j] = new
        else:
            movable = [i for i, st in enumerate(cand.stages) if len(st.depths) > 1]
            if not movable:
                raise ConfigError("the depth mutation needs a stage with more than one depth")
            i = movable[int(rng.integers(len(movable)))]
            depths = [d for d in cand.stages[i].depths if d != len(stages[i])]
            depth = depths[int(rng.integers(len(depths)))]
            stages[i] = stages[i][:depth] + [self._block(i, rng) for _ in range(depth - len(stages[i]))]
        return SubnetGenome(tuple(tuple(blocks) for blocks in stages))
