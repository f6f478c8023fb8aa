"""The search-space abstraction shared by every searcher.

A space bundles one genome type with its codec (``encode``/``decode``), a random
sampler and named mutation operators. Searchers only ever see genome *strings*
in configs and results; the space turns them back into typed genomes.
"""

from __future__ import annotations

import abc
from typing import Generic, Sequence, TypeVar

import numpy as np

G = TypeVar("G")
_DECODE_CACHE_SIZE = 1 << 16


class Space(abc.ABC, Generic[G]):
    """A registered search space: genome codec, sampler and mutation operators.

    Subclasses set ``name`` and ``mutation_kinds`` (the names accepted by
    :meth:`mutate`; the first one is the default).
    """

    name: str = ""
    mutation_kinds: Sequence[str] = ("default",)

    @abc.abstractmethod
    def encode(self, genome: G) -> str:
        """Return the canonical string of ``genome``."""

    @abc.abstractmethod
    def decode(self, text: str) -> G:
        """Parse a genome string strictly; raise :class:`nasq.errors.GenomeError` naming the bad token."""

    @abc.abstractmethod
    def random(self, rng: np.random.Generator) -> G:
        """Sample a genome uniformly from the space."""

    @abc.abstractmethod
    def mutate(self, genome: G, rng: np.random.Generator, kind: str | None = None) -> G:
        """Return a mutated copy of ``genome`` using the mutation operator ``kind``."""

    def random_str(self, rng: np.random.Generator) -> str:
        """Sample a genome and return its string (convenience for searchers)."""
        return self.encode(self.random(rng))

    def mutate_str(self, text: str, rng: np.random.Generator, kind: str | None = None) -> str:
        """Mutate a genome given as a string and return the child's string."""
        return self.encode(self.mutate(self.decode_cached(text), rng, kind))

    def decode_cached(self, text: str) -> G:
        """:meth:`decode` memoised per space instance (genomes are immutable, so sharing is safe)."""
        cache = self.__dict__.setdefault("_decode_cache", {})
        genome = cache.get(text)
        if genome is None:
            genome = self.decode(text)
            if len(cache) >= _DECODE_CACHE_SIZE:
                cache.clear()
            cache[text] = genome
        return genome

    def canonical(self, text: str) -> str:
        """Validate a genome string and return its canonical form."""
        return self.encode(self.decode(text))

    def _check_kind(self, kind: str | None) -> str:
        kind = kind or self.mutation_kinds[0]
        if kind not in self.mutation_kinds:
            from nasq.errors import ConfigError, bad_token

            raise ConfigError(bad_token("mutation kind", kind, list(self.mutation_kinds)))
        return kind

    def __reduce__(self):
        # Spaces are rebuilt from the registry on the other side of a pickle when possible,
        # so a searcher shipped to a Ray cluster carries only the name and arguments.
        return (type(self), self._init_args())

    def _init_args(self) -> tuple:
        return ()
