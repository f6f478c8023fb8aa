"""Bit-policy space for an existing network (JASQ §4.1): one bit width per quantizable layer.

A genome string lists the widths in layer order joined by ``-``, e.g. ``"8-4-16-8"``. The search
uses {4, 8, 16} as in the paper; the choices are a constructor argument. Mutation (JASQ §3.3,
restricted to the bit policy) changes one layer's width to a different choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nasq.errors import ConfigError, GenomeError, bad_token
from nasq.spaces import register
from nasq.spaces.base import Space

DEFAULT_CHOICES: tuple[int, ...] = (4, 8, 16)


@dataclass(frozen=True)
class QuantPolicyGenome:
    """Bits of each quantizable layer, in module order."""

    bits: tuple[int, ...]

    def encode(self) -> str:
        """The genome string, e.g. ``"8-4-16"``."""
        return "-".join(str(b) for b in self.bits)


@register("quant-policy")
class QuantPolicySpace(Space[QuantPolicyGenome]):
    """One bit width per layer from ``choices`` for a network with ``num_layers`` quantizable layers."""

    name = "quant-policy"
    mutation_kinds = ("bits",)

    def __init__(self, num_layers: int, choices: tuple[int, ...] | list[int] = DEFAULT_CHOICES) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
            raise ConfigError(f"a quant-policy space needs num_layers >= 1, got {num_layers!r}")
        choices = tuple(int(c) for c in choices)
        if len(choices) < 2 or len(set(choices)) != len(choices) or not all(1 <= c <= 32 for c in choices):
            raise ConfigError(f"bit choices {choices} must be at least two distinct widths in 1..32")
        self.num_layers = int(num_layers)
        self.choices = tuple(sorted(choices))

    def _init_args(self) -> tuple:
        return (self.num_layers, self.choices)

    def encode(self, genome: QuantPolicyGenome) -> str:
        """Write ``"b1-b2-...-bL"``."""
        self._check(genome)
        return genome.encode()

    def decode(self, text: str) -> QuantPolicyGenome:
        """Parse ``"b1-b2-...-bL"`` strictly: L widths, each one of the space's choices."""
        if not isinstance(text, str) or not text.strip():
            raise GenomeError(
                f"a bit-policy genome must be a non-empty string like "
                f"{'-'.join(['8'] * min(self.num_layers, 4))}..., got {text!r}"
            )
        tokens = text.strip().split("-")
        if len(tokens) != self.num_layers:
            raise GenomeError(
                f"bit policy {text!r} has {len(tokens)} widths; the model has "
                f"{self.num_layers} quantizable layers"
            )
        bits = []
        for tok in tokens:
            if not (tok.isascii() and tok.isdecimal()) or int(tok) not in self.choices or tok != str(int(tok)):
                raise GenomeError(bad_token("bit width", tok, list(self.choices), where=text))
            bits.append(int(tok))
        return QuantPolicyGenome(tuple(bits))

    def random(self, rng: np.random.Generator) -> QuantPolicyGenome:
        """Each layer's width drawn uniformly from the choices."""
        idx = rng.integers(len(self.choices), size=self.num_layers)
        return QuantPolicyGenome(tuple(self.choices[i] for i in idx))

    def mutate(
        self, genome: QuantPolicyGenome, rng: np.random.Generator, kind: str | None = None
    ) -> QuantPolicyGenome:
        """Change one uniformly chosen layer's width to a different choice (JASQ §3.3)."""
        self._check_kind(kind)
        self._check(genome)
        bits = list(genome.bits)
        layer = int(rng.integers(len(bits)))
        others = [c for c in self.choices if c != bits[layer]]
        bits[layer] = others[int(rng.integers(len(others)))]
        return QuantPolicyGenome(tuple(bits))

    def uniform(self, bits: int) -> QuantPolicyGenome:
        """The policy with every layer at ``bits`` (need not be one of the search choices)."""
        return QuantPolicyGenome((int(bits),) * self.num_layers)

    def _check(self, genome: QuantPolicyGenome) -> None:
        if len(genome.bits) != self.num_layers:
            raise GenomeError(f"bit policy has {len(genome.bits)} widths; expected {self.num_layers}")
