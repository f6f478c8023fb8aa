"""The weight-shared supernet of one SpaceEvo candidate space (SpaceEvo §5, Once-for-All / BigNAS shape).

A :class:`Supernet` is built from a :class:`~nasq.spaces.spaceevo_subnet.CandidateSpace`: the stem
(fixed size, from :meth:`Hyperspace.stem`), one :class:`~nasq.supernet.elastic.ElasticStageModule` per
stage and a classifier head elastic in its input width (:class:`DynamicHead`). It holds one *active
subnet* (:class:`~nasq.spaces.spaceevo_subnet.SubnetGenome`), set by :meth:`Supernet.set_active`; it
never samples on its own (:meth:`Supernet.sample` takes the caller's generator).

:meth:`Supernet.extract_subnet` returns the active subnet as a static ``nn.Sequential`` of
:mod:`nasq.blocks.torch_blocks` modules (stem, body blocks, head; the chain of
:meth:`CandidateSpace.blocks`) with the weights copied, equal to the supernet in eval mode. The static
modules carry no quantizers, so the copy equals the supernet's fp32 forward; the LSQ+ scales (SpaceEvo
§5 quantized-for-all) stay in the supernet, where :mod:`nasq.quant.export` style exporters read them.

Fake quantization (LSQ+, :mod:`nasq.quant.lsq`): the stem quantizes the image and its weights; the
head quantizes the last stage's output (the stage leaves it to its consumer), the pooled vector that
the linear layer reads, and the linear weights per output channel. :func:`nasq.quant.lsq.set_quant`
turns every quantizer of the supernet on or off.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasq.blocks.torch_blocks import build_chain
from nasq.errors import GenomeError
from nasq.quant.lsq import LsqActQuant, LsqWeightQuant
from nasq.spaces.spaceevo import space_from_name
from nasq.spaces.spaceevo_subnet import CandidateSpace, SubnetGenome
from nasq.supernet.dynamic_ops import DynamicConvBNAct, static_state
from nasq.supernet.elastic import ElasticStageModule


class DynamicHead(nn.Module):
    """Global average pool + linear on the first ``cin`` input channels (elastic twin of ``Head``).

    Names mirror the static :class:`nasq.blocks.torch_blocks.Head` (``fc``), so
    :func:`~nasq.supernet.dynamic_ops.static_state` copies ``fc.weight[:, :cin]`` into it.

    Args:
        max_in: largest input width (the widest last-stage width).
        classes: output width.
    """

    def __init__(self, max_in: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(max_in, classes)
        self.in_q = LsqActQuant()  # the last stage's output
        self.pool_q = LsqActQuant()  # the pooled vector the linear layer reads
        self.wq = LsqWeightQuant(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        if self.wq.enabled and not self.wq.initialized:
            self.wq.init_from(self.fc.weight)  # from the full weight, like DynamicConv2d
        v = self.pool_q(torch.flatten(F.adaptive_avg_pool2d(self.in_q(x), 1), 1))
        return F.linear(v, self.wq(self.fc.weight[:, :cin]), self.fc.bias)


class Supernet(nn.Module):
    """Weight-shared supernet of a candidate space (SpaceEvo §5): stem, elastic stages, elastic head.

    Args:
        space: the candidate space (:meth:`nasq.spaces.spaceevo.SpaceEvoSpace.candidate`).
    """

    def __init__(self, space: CandidateSpace) -> None:
        super().__init__()
        self.space = space
        stem = space.hyperspace.stem()
        self.stem = DynamicConvBNAct(stem.cin, stem.cout, stem.kernel, stem.stride, act="relu")
        self.stages = nn.ModuleList(ElasticStageModule(st) for st in space.stages)
        self.head = DynamicHead(max(space.stages[-1].widths), space.hyperspace.classes)
        self.active: SubnetGenome = space.largest()
        self.set_active(self.active)

    @classmethod
    def from_string(cls, space_string: str, hyperspace: str = "spaceevo") -> Supernet:
        """The supernet of ``space_string`` in the named hyperspace (:func:`build_supernet`)."""
        return cls(space_from_name(hyperspace).candidate(space_string))

    # -- active subnet (never sampled here) ------------------------------------------------------------
    def set_active(self, subnet: SubnetGenome | str) -> SubnetGenome:
        """Make ``subnet`` (a genome or its string) the active subnet and return its genome.

        Raises:
            GenomeError: a string the space's strict decoder refuses (it names the bad token) or a
                genome outside the space.
        """
        genome = self.space.decode(subnet) if isinstance(subnet, str) else subnet
        if not isinstance(genome, SubnetGenome):
            raise GenomeError(f"a subnet must be a SubnetGenome or its string, got {type(subnet).__name__}")
        self.space.validate(genome)
        for stage, blocks in zip(self.stages, genome.stages):
            stage.set_active(blocks)
        self.active = genome
        return genome

    def largest(self) -> SubnetGenome:
        """The space's largest subnet (sandwich rule's max)."""
        return self.space.largest()

    def smallest(self) -> SubnetGenome:
        """The space's smallest subnet (sandwich rule's min)."""
        return self.space.smallest()

    def sample(self, rng: np.random.Generator, n: int = 1) -> SubnetGenome | list[SubnetGenome]:
        """One subnet (``n == 1``) or a list of ``n``, drawn with ``rng`` like ``sample_subnets`` (§4.2)."""
        batch = self.space.sample_subnets(n, rng)
        subnets = [self.space.genome(batch, r) for r in range(n)]
        return subnets[0] if n == 1 else subnets

    # -- forward and extraction -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def active_modules(self) -> list[nn.Module]:
        """The elastic modules the active subnet runs, one per module of :meth:`extract_subnet`'s chain:
        the stem, the first ``depth`` blocks of every stage, the head (SpaceEvo §5)."""
        modules: list[nn.Module] = [self.stem]
        for stage, blocks in zip(self.stages, self.active.stages):
            modules.extend(stage.blocks[:len(blocks)])
        return modules + [self.head]

    def extract_subnet(self, subnet: SubnetGenome | str | None = None) -> nn.Sequential:
        """The active subnet (``subnet`` is made active first when given) as a static chain (§5).

        Returns:
            ``nn.Sequential`` of the :mod:`nasq.blocks.torch_blocks` modules of
            :meth:`CandidateSpace.blocks` (stem, body blocks, head) with the weights and BN statistics
            copied, in the supernet's train/eval mode; in eval mode its output equals the supernet's
            fp32 output.
        """
        if subnet is not None:
            self.set_active(subnet)
        chain = build_chain(self.space.blocks(self.active))
        for dynamic, static in zip(self.active_modules(), chain):
            static.load_state_dict(static_state(dynamic, static))
        return chain.train(self.training)


def build_supernet(space_string: str, hyperspace: str = "spaceevo") -> Supernet:
    """The supernet of a candidate space string (SpaceEvo §5), e.g. ``build_supernet("mbv2:8-16|...",
    "spaceevo-tiny")``; ``hyperspace`` is a :func:`~nasq.spaces.spaceevo.space_from_name` name.

    Raises:
        GenomeError: the space string does not parse in that hyperspace.
        ConfigError: an unknown hyperspace name.
    """
    return Supernet.from_string(space_string, hyperspace)
