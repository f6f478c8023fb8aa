"""JASQ genome space (JASQ §3.2-§3.3): codec round trip, strict decoding, mutation."""

from __future__ import annotations

import pickle
from dataclasses import fields

import numpy as np
import pytest

from nasq.errors import ConfigError, GenomeError
from nasq.spaces import get
from nasq.spaces.jasq import JASQ_OPS, Cell, Combination, JasqGenome, JasqSpace

EXAMPLE = "N:0,1,sep3x3,identity;2,0,avg3x3,zero|R:1,0,max3x3,sep5x5;0,2,sep3x3,sep3x3|B:8,4,16,8,8"


@pytest.fixture(params=["jasq", "jasq-tiny"])
def space(request) -> JasqSpace:
    return get(request.param)


def test_example_decodes_to_typed_genome():
    g = get("jasq-tiny").decode(EXAMPLE)
    assert g.normal.combinations[1] == Combination(2, 0, "avg3x3", "zero")
    assert g.reduction.combinations[0] == Combination(1, 0, "max3x3", "sep5x5")
    assert g.bits == (8, 4, 16, 8, 8)
    assert get("jasq-tiny").encode(g) == EXAMPLE


def test_round_trip_many_random(space):
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(300):
        g = space.random(rng)
        text = space.encode(g)
        assert space.decode(text) == g
        assert len(g.bits) == 3 * space.cells + 2
        seen.add(text)
    assert len(seen) > 290  # the sampler explores the space


def test_defaults_and_pickle():
    full = get("jasq")
    assert (full.combinations, full.cells, full.bit_choices, full.num_cells) == (5, 3, (4, 8, 16), 11)
    tiny = get("jasq-tiny")
    back = pickle.loads(pickle.dumps(tiny))
    assert (back.combinations, back.cells, back.bit_choices) == (2, 1, (4, 8, 16))
    custom = get("jasq", combinations=3, cells=2, bits=(2, 8))
    assert custom.num_cells == 8 and pickle.loads(pickle.dumps(custom)).bit_choices == (2, 8)


@pytest.mark.parametrize("bad, needle", [
    (EXAMPLE.replace("sep3x3,identity", "conv3x3,identity"), "'conv3x3'"),
    (EXAMPLE.replace("B:8,4,16,8,8", "B:8,4,16,8,2"), "bit width '2'"),
    (EXAMPLE.replace("B:8,4,16,8,8", "B:8,4,16,8"), "needs 5"),
    (EXAMPLE.replace("2,0,avg3x3", "3,0,avg3x3"), "input of combination 1 '3'"),
    (EXAMPLE.replace("N:0,1,", "N:2,1,"), "input of combination 0 '2'"),
    (EXAMPLE.replace("N:0,1,", "N:-1,1,"), "'-1'"),
    (EXAMPLE.replace("|R:", "|X:"), "N:<cell>|R:<cell>|B:<bits>"),
    (EXAMPLE.replace(";2,0,avg3x3,zero", ""), "1 combinations"),
    (EXAMPLE.replace("2,0,avg3x3,zero", "2,0,avg3x3"), "input1,input2,op1,op2"),
])
def test_strict_errors_name_token_and_allowed(bad, needle):
    with pytest.raises(GenomeError) as err:
        get("jasq-tiny").decode(bad)
    assert needle in str(err.value)


def test_error_lists_allowed_ops():
    with pytest.raises(GenomeError) as err:
        get("jasq-tiny").decode(EXAMPLE.replace("max3x3", "maxpool"))
    assert all(op in str(err.value) for op in JASQ_OPS)


def test_bad_space_arguments():
    with pytest.raises(ConfigError):
        JasqSpace(combinations=0)
    with pytest.raises(ConfigError):
        JasqSpace(bits=(8,))


def _diff(a: JasqGenome, b: JasqGenome) -> list[tuple]:
    out = []
    for cell in ("normal", "reduction"):
        ca, cb = getattr(a, cell), getattr(b, cell)
        for j, (ma, mb) in enumerate(zip(ca.combinations, cb.combinations)):
            names = [f.name for f in fields(Combination)]
            out += [(cell, j, n) for n in names if getattr(ma, n) != getattr(mb, n)]
    out += [("bits", k) for k, (x, y) in enumerate(zip(a.bits, b.bits)) if x != y]
    return out


def test_each_mutation_changes_exactly_one_element(space):
    rng = np.random.default_rng(7)
    slots = set()
    for _ in range(400):
        g = space.random(rng)
        arch = space.mutate(g, rng, "arch")
        d = _diff(g, arch)
        assert len(d) == 1 and d[0][0] in ("normal", "reduction")
        slots.add(d[0][2])
        space.validate(arch)  # the new input is still in range
        bits = space.mutate(g, rng, "bits")
        d = _diff(g, bits)
        assert len(d) == 1 and d[0][0] == "bits"
        assert bits.bits[d[0][1]] in space.bit_choices
    assert slots == {"input1", "input2", "op1", "op2"}


def test_tournament_child_mutates_arch_and_bits(space):
    """The tournament strategy applies every mutation kind: one arch element and one cell's bits."""
    rng = np.random.default_rng(3)
    g = space.random_str(rng)
    child = g
    for kind in space.mutation_kinds:
        child = space.mutate_str(child, rng, kind)
    kinds = sorted(x[0] == "bits" for x in _diff(space.decode(g), space.decode(child)))
    assert kinds == [False, True]


def test_unknown_mutation_kind(space):
    with pytest.raises(ConfigError):
        space.mutate(space.random(np.random.default_rng(0)), np.random.default_rng(0), "edge")


def test_validate_rejects_foreign_genome():
    tiny = get("jasq-tiny")
    g = tiny.random(np.random.default_rng(0))
    with pytest.raises(GenomeError):
        get("jasq").encode(g)
    bad = JasqGenome(Cell((Combination(0, 5, "zero", "zero"),) * 2), g.reduction, g.bits)
    with pytest.raises(GenomeError):
        tiny.encode(bad)
