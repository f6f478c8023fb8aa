"""Subnets of a SpaceEvo candidate space: genome, strict codec, vectorised sampling, block look-ups.

A :class:`CandidateSpace` is one point of the SpaceEvo search (block type + width window per stage,
built by :meth:`nasq.spaces.spaceevo.SpaceEvoSpace.candidate`). Its subnets (SpaceEvo §4.2: "sample 5k
subnets from a candidate space") choose per stage a depth and per block a width from the window, a kernel
and an expand ratio. :meth:`CandidateSpace.sample_subnets` draws them as index arrays
(:class:`SubnetBatch`), so the Q-T score can price thousands of subnets with table look-ups:
:meth:`CandidateSpace.block_index` maps every block of every subnet to its row in
:meth:`CandidateSpace.distinct_blocks` (each distinct block is priced once), and
:meth:`CandidateSpace.stage_settings` gives each stage's setting as a numeric row for the accuracy table.
The string grammar is in :mod:`nasq.spaces.spaceevo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nasq.blocks.spec import BlockSpec, check_chain
from nasq.errors import ConfigError, GenomeError, bad_token
from nasq.spaces.spaceevo import _BLOCK, _EXPAND, _NUM, ElasticStage, Hyperspace, _fmt


@dataclass(frozen=True)
class BlockChoice:
    """One block of a subnet: output width, kernel, expand ratio (SpaceEvo §4.1 elastic dimensions)."""

    width: int
    kernel: int
    expand: float


@dataclass(frozen=True)
class SubnetGenome:
    """A subnet: per stage the tuple of its blocks (the depth is the tuple's length)."""

    stages: tuple[tuple[BlockChoice, ...], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        """Blocks per stage."""
        return tuple(len(s) for s in self.stages)

    def blocks(self, space: CandidateSpace) -> list[BlockSpec]:
        """The subnet's BlockSpec chain in ``space``: stem, every stage's blocks, head."""
        return space.blocks(self)


@dataclass
class SubnetBatch:
    """``n`` subnets as index arrays (indices into each stage's window, kernels, expands).

    Attributes:
        depth: (n, N) blocks per stage.
        width: (n, N, D) window index of each block's width; 0 beyond the depth.
        kernel: (n, N, D) kernel index; 0 beyond the depth.
        expand: (n, N, D) expand index; 0 beyond the depth.
    """

    depth: np.ndarray
    width: np.ndarray
    kernel: np.ndarray
    expand: np.ndarray

    def __len__(self) -> int:
        return int(self.depth.shape[0])

    def codes(self) -> np.ndarray:
        """(n, N·(1+3D)) integer matrix identifying each subnet."""
        n = len(self)
        return np.concatenate([self.depth, self.width.reshape(n, -1), self.kernel.reshape(n, -1),
                               self.expand.reshape(n, -1)], axis=1)

    def unique(self) -> SubnetBatch:
        """The distinct subnets of the batch, each at its first occurrence, in draw order."""
        first, _ = unique_rows(self.codes())
        return self.take(np.sort(first))

    def take(self, rows: np.ndarray) -> SubnetBatch:
        """The subnets at ``rows``."""
        return SubnetBatch(self.depth[rows], self.width[rows], self.kernel[rows], self.expand[rows])


@dataclass(frozen=True)
class CandidateSpace:
    """A candidate space of a hyperspace: N elastic stages (SpaceEvo §4.1), its subnets and blocks."""

    hyperspace: Hyperspace
    stages: tuple[ElasticStage, ...]
    name: str                                   # the space string
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_depth(self) -> int:
        """D, the largest depth of any stage."""
        return max(self.hyperspace.depths)

    # -- codec ---------------------------------------------------------------------------------
    def encode(self, subnet: SubnetGenome) -> str:
        """Write the subnet string (grammar in :mod:`nasq.spaces.spaceevo`)."""
        self.validate(subnet)
        return "|".join(f"{st.type}:" + ",".join(f"c{b.width}_k{b.kernel}_e{_fmt(b.expand)}" for b in blocks)
                        for st, blocks in zip(self.stages, subnet.stages))

    def decode(self, text: str) -> SubnetGenome:
        """Parse a subnet string of this space strictly; ``GenomeError`` names the bad token."""
        if not isinstance(text, str):
            raise GenomeError(f"a subnet must be a string, got {type(text).__name__}")
        parts = text.strip().split("|")
        if len(parts) != len(self.stages):
            raise GenomeError(f"subnet {text!r} has {len(parts)} stages; space {self.name!r} has "
                              f"{len(self.stages)}")
        stages = []
        for i, (part, st) in enumerate(zip(parts, self.stages)):
            t, sep, body = part.partition(":")
            if not sep or t != st.type:
                raise GenomeError(bad_token(f"block type of stage {i}", t, [st.type], text))
            blocks = body.split(",")
            if len(blocks) not in st.depths:
                raise GenomeError(bad_token(f"depth of stage {i}", str(len(blocks)), list(st.depths), text))
            stages.append(tuple(self._decode_block(i, tok, st, text) for tok in blocks))
        return SubnetGenome(tuple(stages))

    @staticmethod
    def _decode_block(i: int, tok: str, st: ElasticStage, text: str) -> BlockChoice:
        m = _BLOCK.fullmatch(tok)
        if not m:
            raise GenomeError(bad_token(f"block of stage {i}", tok, "'c<width>_k<kernel>_e<expand>'", text))
        w, k, e = m.groups()
        if not _NUM.fullmatch(w) or int(w) not in st.widths:
            raise GenomeError(bad_token(f"width of stage {i} (window)", w, list(st.widths), text))
        if not _NUM.fullmatch(k) or int(k) not in st.kernels:
            raise GenomeError(bad_token(f"kernel of stage {i}", k, list(st.kernels), text))
        allowed = [_fmt(x) for x in st.expands]
        if not _EXPAND.fullmatch(e) or e not in allowed:
            raise GenomeError(bad_token(f"expand of stage {i} ({st.type})", e, allowed, text))
        return BlockChoice(int(w), int(k), float(e))

    def validate(self, subnet: SubnetGenome) -> None:
        """Raise ``GenomeError`` unless every depth, width, kernel and expand of ``subnet`` is allowed."""
        if len(subnet.stages) != len(self.stages):
            raise GenomeError(f"subnet has {len(subnet.stages)} stages; space {self.name!r} has "
                              f"{len(self.stages)}")
        for i, (blocks, st) in enumerate(zip(subnet.stages, self.stages)):
            if len(blocks) not in st.depths:
                raise GenomeError(bad_token(f"depth of stage {i}", str(len(blocks)), list(st.depths)))
            for b in blocks:
                if b.width not in st.widths or b.kernel not in st.kernels or b.expand not in st.expands:
                    raise GenomeError(f"block {b} of stage {i} is outside the stage: widths {st.widths}, "
                                      f"kernels {st.kernels}, expands {st.expands}")

    # -- subnets --------------------------------------------------------------------------------
    def blocks(self, subnet: SubnetGenome) -> list[BlockSpec]:
        """Stem, body blocks and head of ``subnet`` as a checked BlockSpec chain."""
        self.validate(subnet)
        h = self.hyperspace
        chain = [h.stem()]
        for st, blocks in zip(self.stages, subnet.stages):
            res = st.resolution
            for j, b in enumerate(blocks):
                stride = st.stride if j == 0 else 1
                chain.append(BlockSpec(st.type, res, chain[-1].cout, b.width, b.kernel, stride, b.expand))
                res = chain[-1].out_resolution
        chain.append(h.head(chain[-1].cout))
        check_chain(chain)
        return chain

    def largest(self) -> SubnetGenome:
        """Deepest, widest subnet with the largest kernels and expands (sandwich rule's max)."""
        return SubnetGenome(tuple((BlockChoice(max(s.widths), max(s.kernels), max(s.expands)),)
                                  * max(s.depths) for s in self.stages))

    def smallest(self) -> SubnetGenome:
        """Shallowest, narrowest subnet with the smallest kernels and expands (sandwich rule's min)."""
        return SubnetGenome(tuple((BlockChoice(min(s.widths), min(s.kernels), min(s.expands)),)
                                  * min(s.depths) for s in self.stages))

    def sample_subnets(self, n: int, rng: np.random.Generator) -> SubnetBatch:
        """Draw ``n`` subnets: depth uniform per stage, width/kernel/expand uniform per block (§4.2)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"the number of subnets must be an integer >= 1, got {n!r}")
        s, d = len(self.stages), self.max_depth
        depth = np.stack([np.asarray(st.depths)[rng.integers(len(st.depths), size=n)]
                          for st in self.stages], axis=1)
        active = np.arange(d)[None, None, :] < depth[:, :, None]

        def draw(sizes: list[int]) -> np.ndarray:
            u = rng.random((n, s, d))
            return (u * np.asarray(sizes)[None, :, None]).astype(np.int64) * active

        return SubnetBatch(depth.astype(np.int64), draw([len(st.widths) for st in self.stages]),
                           draw([len(st.kernels) for st in self.stages]),
                           draw([len(st.expands) for st in self.stages]))

    def batch_of(self, subnets: list[SubnetGenome]) -> SubnetBatch:
        """Index arrays of the given subnet genomes (the inverse of :meth:`genome`)."""
        n, s, d = len(subnets), len(self.stages), self.max_depth
        depth = np.zeros((n, s), np.int64)
        arrays = [np.zeros((n, s, d), np.int64) for _ in range(3)]
        for r, sub in enumerate(subnets):
            self.validate(sub)
            for i, (st, blocks) in enumerate(zip(self.stages, sub.stages)):
                depth[r, i] = len(blocks)
                for j, b in enumerate(blocks):
                    arrays[0][r, i, j] = st.widths.index(b.width)
                    arrays[1][r, i, j] = st.kernels.index(b.kernel)
                    arrays[2][r, i, j] = st.expands.index(b.expand)
        return SubnetBatch(depth, *arrays)

    def genome(self, batch: SubnetBatch, row: int) -> SubnetGenome:
        """The genome of subnet ``row`` of ``batch``."""
        stages = []
        for i, st in enumerate(self.stages):
            w, k, e = batch.width[row, i], batch.kernel[row, i], batch.expand[row, i]
            stages.append(tuple(BlockChoice(st.widths[w[j]], st.kernels[k[j]], st.expands[e[j]])
                                for j in range(int(batch.depth[row, i]))))
        return SubnetGenome(tuple(stages))

    # -- distinct blocks and vectorised look-ups -----------------------------------------------------
    def distinct_blocks(self) -> list[BlockSpec]:
        """Every distinct BlockSpec a subnet of this space can contain (stem, body blocks, heads)."""
        return list(self._tables()["specs"])

    def distinct_keys(self) -> list[str]:
        """Canonical keys of :meth:`distinct_blocks`, in the same order."""
        return list(self._tables()["keys"])

    def _tables(self) -> dict:
        """Distinct specs plus, per stage, index arrays (cin, cout, kernel, expand) -> spec row."""
        if self._index:
            return self._index
        rows: dict[str, int] = {}
        specs: list[BlockSpec] = []

        def row(spec: BlockSpec) -> int:
            key = spec.key()
            if key not in rows:
                rows[key] = len(specs)
                specs.append(spec)
            return rows[key]

        stem = row(self.hyperspace.stem())
        first, rest = [], []
        for st in self.stages:
            out_res = st.resolution // st.stride
            for table, cins, stride, res in ((first, st.in_widths, st.stride, st.resolution),
                                             (rest, st.widths, 1, out_res)):
                table.append(np.array([[[[row(BlockSpec(st.type, res, ci, co, k, stride, e))
                                          for e in st.expands] for k in st.kernels] for co in st.widths]
                                       for ci in cins], np.int64))
        head = np.array([row(self.hyperspace.head(w)) for w in self.stages[-1].widths], np.int64)
        self._index.update(specs=tuple(specs), keys=tuple(rows), stem=stem, first=first, rest=rest, head=head)
        return self._index

    def block_index(self, batch: SubnetBatch) -> tuple[np.ndarray, np.ndarray]:
        """Rows into :meth:`distinct_blocks` of every block of every subnet.

        Returns:
            ``(body, ends)``: ``body`` (n, N, D) with -1 beyond each stage's depth; ``ends`` (n, 2) the
            stem's and the head's rows.
        """
        t = self._tables()
        n, d = len(batch), self.max_depth
        body = np.full((n, len(self.stages), d), -1, np.int64)
        active = np.arange(d)[None, :] < batch.depth[:, :, None]
        cin0 = np.zeros(n, np.int64)  # the stem has one width
        for i in range(len(self.stages)):
            w, k, e = batch.width[:, i], batch.kernel[:, i], batch.expand[:, i]
            body[:, i, 0] = t["first"][i][cin0, w[:, 0], k[:, 0], e[:, 0]]
            if d > 1:
                body[:, i, 1:] = t["rest"][i][w[:, :-1], w[:, 1:], k[:, 1:], e[:, 1:]]
            cin0 = self.last_width_index(batch, i)
        body[~active] = -1
        ends = np.stack([np.full(n, t["stem"]), t["head"][cin0]], axis=1)
        return body, ends

    @staticmethod
    def last_width_index(batch: SubnetBatch, stage: int) -> np.ndarray:
        """Window index of the last block's width of ``stage`` for each subnet."""
        return np.take_along_axis(batch.width[:, stage], batch.depth[:, stage, None] - 1, axis=1)[:, 0]

    def stage_codes(self, batch: SubnetBatch, stage: int) -> np.ndarray:
        """(n, 2 + 3D) integer codes of one stage's setting: input-width index, depth, block indices.

        Equal codes mean equal :meth:`stage_settings` rows (used to query the table once per setting).
        """
        cin = (np.zeros(len(batch), np.int64) if stage == 0 else self.last_width_index(batch, stage - 1))
        return np.concatenate([cin[:, None], batch.depth[:, stage, None], batch.width[:, stage],
                               batch.kernel[:, stage], batch.expand[:, stage]], axis=1)

    def stage_settings(self, batch: SubnetBatch, stage: int) -> np.ndarray:
        """Numeric setting rows of one stage for the accuracy table (SpaceEvo §4.5 LUT rows).

        Returns:
            (n, 2 + 3D) float array: input width, depth, then the D widths, D kernels, D expands
            (0 beyond the depth). :func:`setting_key` turns a row into its canonical string.
        """
        st = self.stages[stage]
        active = np.arange(self.max_depth)[None, :] < batch.depth[:, stage, None]
        cin = (np.full(len(batch), st.in_widths[0]) if stage == 0
               else np.asarray(st.in_widths)[self.last_width_index(batch, stage - 1)])
        pairs = ((st.widths, batch.width), (st.kernels, batch.kernel), (st.expands, batch.expand))
        cols = [np.asarray(vals, np.float64)[idx[:, stage]] * active for vals, idx in pairs]
        head = [cin[:, None].astype(np.float64), batch.depth[:, stage, None].astype(np.float64)]
        return np.concatenate(head + cols, axis=1)


def setting_key(row: np.ndarray | list[float]) -> str:
    """Canonical string of a stage setting row, e.g. ``i16:c24_k3_e4,c40_k5_e6`` (input width: blocks)."""
    values = [float(v) for v in row]
    depth = int(values[1])
    d = (len(values) - 2) // 3
    widths, kernels, expands = values[2:2 + d], values[2 + d:2 + 2 * d], values[2 + 2 * d:]
    blocks = ",".join(f"c{int(widths[j])}_k{int(kernels[j])}_e{_fmt(expands[j])}" for j in range(depth))
    return f"i{int(values[0])}:{blocks}"


def subnet_stage_keys(space: CandidateSpace, subnet: SubnetGenome) -> list[str]:
    """The :func:`setting_key` of each stage of one subnet (for dict-backed accuracy tables)."""
    chain = space.blocks(subnet)[1:-1]
    keys, pos = [], 0
    for blocks in subnet.stages:
        cin = chain[pos].cin
        body = ",".join(f"c{b.width}_k{b.kernel}_e{_fmt(b.expand)}" for b in blocks)
        keys.append(f"i{cin}:{body}")
        pos += len(blocks)
    return keys


def unique_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a non-negative integer matrix: (first index of each, inverse), exactly.

    Columns are packed into as few int64 words as their ranges allow, then sorted with ``lexsort``:
    much faster than ``np.unique(axis=0)`` on the wide code matrices of a subnet batch. The distinct
    rows come in lexicographic order of the packed words; ``first`` holds each one's first occurrence.
    """
    codes = np.asarray(codes, np.int64)
    n = codes.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    words, word, span = [], np.zeros(n, np.int64), 1
    for col in codes.T:
        radix = int(col.max()) + 1
        if span > 1 and span * radix >= 1 << 63:  # the word would overflow int64: start a new one
            words.append(word)
            word, span = np.zeros(n, np.int64), 1
        word = col.copy() if span == 1 else word * radix + col
        span *= radix
    words.append(word)
    order = np.lexsort(words[::-1])
    packed = np.stack(words, axis=1)[order]
    new = np.ones(n, bool)
    new[1:] = np.any(packed[1:] != packed[:-1], axis=1)
    inverse = np.empty(n, np.int64)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse
