"""JASQ joint architecture + bit-policy space (Chen et al. 2018, §3.2-§3.3).

A genome is a NASNet-style normal cell and reduction cell, each of B combinations
``{input1, input2, op1, op2}``, plus one bit width per cell of the CIFAR skeleton
(N normal, reduction, N normal, reduction, N normal: k = 3N+2 cells).

Genome string grammar (one line, no spaces)::

    genome      := "N:" cell "|R:" cell "|B:" bits
    cell        := combination (";" combination)*          # exactly B combinations
    combination := input "," input "," op "," op
    input       := integer                                 # 0, 1: the two previous cells' outputs;
                                                           # 2+m: output of combination m < this one
    op          := "sep3x3" | "sep5x5" | "avg3x3" | "max3x3" | "zero" | "identity"
    bits        := width ("," width)*                      # exactly 3N+2 widths from the bit choices

Example (B=2, N=1)::

    N:0,1,sep3x3,identity;2,0,avg3x3,zero|R:1,0,max3x3,sep5x5;0,2,sep3x3,sep3x3|B:8,4,16,8,8

Combination ``j`` (0-based) may read inputs ``0 .. j+1``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from nasq.errors import ConfigError, GenomeError, bad_token
from nasq.spaces import register
from nasq.spaces.base import Space

JASQ_OPS: tuple[str, ...] = ("sep3x3", "sep5x5", "avg3x3", "max3x3", "zero", "identity")
DEFAULT_BITS: tuple[int, ...] = (4, 8, 16)
SLOTS: tuple[str, ...] = ("input1", "input2", "op1", "op2")


@dataclass(frozen=True)
class Combination:
    """One combination: two inputs, an op on each, outputs summed (JASQ §3.2)."""

    input1: int
    input2: int
    op1: str
    op2: str


@dataclass(frozen=True)
class Cell:
    """A cell: B combinations in order."""

    combinations: tuple[Combination, ...]


@dataclass(frozen=True)
class JasqGenome:
    """Normal cell, reduction cell and one bit width per skeleton cell (k = 3N+2)."""

    normal: Cell
    reduction: Cell
    bits: tuple[int, ...]

    def cell_at(self, position: int, cells: int) -> Cell:
        """The cell type used at skeleton ``position`` (reductions at N and 2N+1)."""
        return self.reduction if is_reduction(position, cells) else self.normal


def is_reduction(position: int, cells: int) -> bool:
    """True for the two reduction positions N and 2N+1 of the 3N+2-cell skeleton (JASQ Fig. 2)."""
    return position in (cells, 2 * cells + 1)


@register("jasq")
class JasqSpace(Space[JasqGenome]):
    """JASQ space: cells of B combinations and a per-cell bit policy.

    Args:
        combinations: B, combinations per cell (JASQ uses 5).
        cells: N, normal cells per stage; the skeleton has 3N+2 cells.
        bits: allowed bit widths of a cell (JASQ: 4, 8, 16).
    """

    name = "jasq"
    mutation_kinds = ("arch", "bits")

    def __init__(self, combinations: int = 5, cells: int = 3, bits: tuple[int, ...] = DEFAULT_BITS) -> None:
        if int(combinations) < 1 or int(cells) < 1:
            raise ConfigError(f"jasq space needs combinations >= 1 and cells >= 1, "
                              f"got {combinations}, {cells}")
        bits = tuple(int(b) for b in bits)
        if len(bits) < 2 or len(set(bits)) != len(bits) or any(not 1 <= b <= 32 for b in bits):
            raise ConfigError(f"jasq bit choices must be >= 2 distinct widths in 1..32, got {bits}")
        self.combinations = int(combinations)
        self.cells = int(cells)
        self.bit_choices = bits

    @property
    def num_cells(self) -> int:
        """k = 3N+2, the number of bit entries."""
        return 3 * self.cells + 2

    def _init_args(self) -> tuple:
        return (self.combinations, self.cells, self.bit_choices)

    # -- codec --------------------------------------------------------------------------
    def encode(self, genome: JasqGenome) -> str:
        """Write the genome string (grammar in the module docstring)."""
        self.validate(genome)

        def cell(c: Cell) -> str:
            return ";".join(f"{m.input1},{m.input2},{m.op1},{m.op2}" for m in c.combinations)

        return f"N:{cell(genome.normal)}|R:{cell(genome.reduction)}|B:{','.join(map(str, genome.bits))}"

    def decode(self, text: str) -> JasqGenome:
        """Parse a genome string strictly; ``GenomeError`` names the bad token and the allowed values."""
        if not isinstance(text, str):
            raise GenomeError(f"a JASQ genome must be a string, got {type(text).__name__}")
        parts = text.strip().split("|")
        tags = [p[:2] for p in parts]
        if len(parts) != 3 or tags != ["N:", "R:", "B:"]:
            raise GenomeError(f"JASQ genome {text!r} must read 'N:<cell>|R:<cell>|B:<bits>', "
                              "like 'N:0,1,sep3x3,identity;...|R:...|B:8,4,16,...'")
        genome = JasqGenome(self._decode_cell(parts[0][2:], text), self._decode_cell(parts[1][2:], text),
                            self._decode_bits(parts[2][2:], text))
        return genome

    def _decode_cell(self, body: str, text: str) -> Cell:
        combos = body.split(";")
        if len(combos) != self.combinations:
            raise GenomeError(f"cell {body!r} of {text!r} has {len(combos)} combinations; "
                              f"this space needs {self.combinations}")
        out = []
        for j, combo in enumerate(combos):
            fields = combo.split(",")
            if len(fields) != 4:
                raise GenomeError(f"combination {combo!r} of {text!r} must read 'input1,input2,op1,op2'")
            inputs = [self._decode_input(f, j, text) for f in fields[:2]]
            for op in fields[2:]:
                if op not in JASQ_OPS:
                    raise GenomeError(bad_token("JASQ op", op, list(JASQ_OPS), where=text))
            out.append(Combination(inputs[0], inputs[1], fields[2], fields[3]))
        return Cell(tuple(out))

    @staticmethod
    def _decode_input(token: str, j: int, text: str) -> int:
        allowed = list(range(j + 2))
        if not (token.isascii() and token.isdecimal()) or int(token) not in allowed:
            raise GenomeError(bad_token(f"input of combination {j}", token, allowed, where=text))
        return int(token)

    def _decode_bits(self, body: str, text: str) -> tuple[int, ...]:
        tokens = body.split(",")
        if len(tokens) != self.num_cells:
            raise GenomeError(f"bits {body!r} of {text!r} has {len(tokens)} widths; this space needs "
                              f"{self.num_cells} (3N+2 with N={self.cells})")
        allowed = [str(b) for b in self.bit_choices]
        for tok in tokens:
            if tok not in allowed:
                raise GenomeError(bad_token("bit width", tok, list(self.bit_choices), where=text))
        return tuple(int(t) for t in tokens)

    def validate(self, genome: JasqGenome) -> None:
        """Raise ``GenomeError`` if ``genome`` does not fit this space's B, N and bit choices."""
        for cell in (genome.normal, genome.reduction):
            if len(cell.combinations) != self.combinations:
                raise GenomeError(f"cell has {len(cell.combinations)} combinations, "
                                  f"space needs {self.combinations}")
            for j, m in enumerate(cell.combinations):
                for inp in (m.input1, m.input2):
                    if not 0 <= inp <= j + 1:
                        allowed = list(range(j + 2))
                        raise GenomeError(bad_token(f"input of combination {j}", str(inp), allowed))
                for op in (m.op1, m.op2):
                    if op not in JASQ_OPS:
                        raise GenomeError(bad_token("JASQ op", op, list(JASQ_OPS)))
        if len(genome.bits) != self.num_cells or any(b not in self.bit_choices for b in genome.bits):
            raise GenomeError(f"bits {genome.bits} must be {self.num_cells} widths from {self.bit_choices}")

    # -- sampling and mutation (JASQ §3.3) -------------------------------------------------
    def random(self, rng: np.random.Generator) -> JasqGenome:
        """Sample every input, op and bit width uniformly."""

        def cell() -> Cell:
            combos = []
            for j in range(self.combinations):
                i1, i2 = (int(v) for v in rng.integers(j + 2, size=2))
                o1, o2 = (JASQ_OPS[int(v)] for v in rng.integers(len(JASQ_OPS), size=2))
                combos.append(Combination(i1, i2, o1, o2))
            return Cell(tuple(combos))

        draws = rng.integers(len(self.bit_choices), size=self.num_cells)
        bits = tuple(self.bit_choices[int(v)] for v in draws)
        return JasqGenome(cell(), cell(), bits)

    def mutate(self, genome: JasqGenome, rng: np.random.Generator, kind: str | None = None) -> JasqGenome:
        """JASQ §3.3: ``arch`` changes one of {i1, i2, o1, o2} of one combination of one cell;
        ``bits`` changes one cell's bit width; each to a uniformly drawn different value."""
        kind = self._check_kind(kind)
        if kind == "bits":
            bits = list(genome.bits)
            k = int(rng.integers(len(bits)))
            choices = [b for b in self.bit_choices if b != bits[k]]
            bits[k] = choices[int(rng.integers(len(choices)))]
            return JasqGenome(genome.normal, genome.reduction, tuple(bits))
        which = int(rng.integers(2))
        cell = (genome.normal, genome.reduction)[which]
        j = int(rng.integers(self.combinations))
        slot = SLOTS[int(rng.integers(len(SLOTS)))]
        old = getattr(cell.combinations[j], slot)
        pool = list(range(j + 2)) if slot.startswith("input") else list(JASQ_OPS)
        choices = [v for v in pool if v != old]
        combo = replace(cell.combinations[j], **{slot: choices[int(rng.integers(len(choices)))]})
        combos = cell.combinations[:j] + (combo,) + cell.combinations[j + 1:]
        new_cell = Cell(combos)
        if which == 0:
            return JasqGenome(new_cell, genome.reduction, genome.bits)
        return JasqGenome(genome.normal, new_cell, genome.bits)


@register("jasq-tiny")
def jasq_tiny(combinations: int = 2, cells: int = 1, bits: tuple[int, ...] = DEFAULT_BITS) -> JasqSpace:
    """Test twin of ``jasq``: B=2 combinations, N=1 (5 cells)."""
    return JasqSpace(combinations=combinations, cells=cells, bits=bits)
