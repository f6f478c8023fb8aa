"""The evolution core's random generator: numpy's, with scalar uniforms served from a buffer.

One evolution step draws a handful of scalar uniforms (the parent's rank, the mutated edge, ...).
A scalar ``Generator.random()`` call costs about 0.8 µs on the 2-core test machine, most of it
call overhead, against 0.25 µs for a float popped from a list; at P = 500 that is a tenth of a
step (issue 7, searcher cost). :class:`BufferedGenerator` is a :class:`numpy.random.Generator`
whose argument-less ``random()`` pops from a block of :data:`BLOCK` uniforms drawn at once; every
other method draws from the bit generator as usual. Runs stay reproducible per seed, and
:meth:`BufferedGenerator.get_state` / :meth:`BufferedGenerator.set_state` save and restore the
bit generator *and* the unused uniforms, as plain JSON, so a resumed search continues exactly.
"""

from __future__ import annotations

import numpy as np

BLOCK = 256  # scalar uniforms drawn per refill


class BufferedGenerator(np.random.Generator):
    """A PCG64 :class:`numpy.random.Generator` whose scalar ``random()`` is buffered."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(np.random.PCG64(seed))
        self._buffer: list[float] = []

    def random(self, size=None, dtype=np.float64, out=None):  # noqa: D401 - numpy's signature
        """numpy's ``random``; a scalar float64 draw (no arguments) comes from the buffer."""
        if size is None and out is None and dtype is np.float64:
            buffer = self._buffer
            if not buffer:
                buffer.extend(super().random(BLOCK)[::-1].tolist())
            return buffer.pop()
        return super().random(size, dtype, out)

    def get_state(self) -> dict:
        """JSON state: the bit generator's state and the uniforms drawn but not used yet."""
        return {"bit_generator": self.bit_generator.state, "buffered": list(self._buffer)}

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`; a bare bit-generator state (older files) has an empty buffer.

        Raises:
            TypeError, ValueError, KeyError: the state is malformed.
        """
        if isinstance(state.get("bit_generator"), dict):  # a bare state names it: "PCG64"
            buffered = state.get("buffered", [])
            if not isinstance(buffered, list) or not all(isinstance(u, float) and 0.0 <= u < 1.0
                                                         for u in buffered):
                raise ValueError("buffered uniforms must be a list of floats in [0, 1)")
            self.bit_generator.state = state["bit_generator"]
            self._buffer = list(buffered)
        else:
            self.bit_generator.state = state
            self._buffer = []

    def __reduce__(self):
        return (_restore, (self.get_state(),))


def _restore(state: dict) -> BufferedGenerator:
    rng = BufferedGenerator()
    rng.set_state(state)
    return rng
