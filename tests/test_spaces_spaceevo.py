"""SpaceEvo hyperspace, space and subnet genomes (SpaceEvo §4.1, §4.4): codecs, mutations, sampling."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest

from nasq.blocks.spec import BlockSpec, check_chain
from nasq.errors import ConfigError, GenomeError
from nasq.evolution import AgingEvolution
from nasq.spaces import get, list_spaces
from nasq.spaces.spaceevo import (
    SPACEEVO_TYPES,
    Hyperspace,
    SpaceEvoSpace,
    SpaceGenome,
    derive_strides,
    space_from_name,
)
from nasq.spaces.spaceevo_subnet import BlockChoice, SubnetGenome

TINY = "fused_mb:8-16|mbv2:16-24|resnet_bottleneck:24-32"
TINY_SUBNET = "fused_mb:c16_k3_e6,c8_k5_e3|mbv2:c24_k5_e3|resnet_bottleneck:c32_k3_e0.5,c24_k3_e1"


@pytest.fixture(params=["spaceevo", "spaceevo-224", "spaceevo-tiny"])
def space(request) -> SpaceEvoSpace:
    if request.param == "spaceevo-224":
        return get("spaceevo", resolution=224)
    return get(request.param)


# -- hyperspace ------------------------------------------------------------------------------------
def test_registered_and_defaults():
    assert {"spaceevo", "spaceevo-tiny"} <= set(list_spaces("spaceevo*"))
    h = get("spaceevo").hyperspace
    assert (h.resolution, h.num_stages, h.window, h.kernels, h.depths) == (32, 6, 4, (3, 5), (1, 2, 3, 4))
    assert h.expands == (3.0, 4.0, 6.0) and h.types == SPACEEVO_TYPES
    assert h.expands_of("mbv1") == (1.0,) and h.expands_of("resnet_bottleneck_se") == (0.25, 0.5, 1.0)
    assert get("spaceevo-tiny").hyperspace.num_stages == 3


@pytest.mark.parametrize("res, strides, final", [
    (32, (1, 1, 2, 1, 2, 1, 2), 4),     # CIFAR-10: 3 halvings, stem keeps 32
    (224, (2, 1, 2, 2, 1, 2, 2), 7),    # ImageNet-style: stem halves, 224 -> 7
    (160, (2, 1, 2, 2, 1, 2, 2), 5),
    (64, (2, 1, 2, 1, 2, 1, 2), 4),
    (8, (1, 1, 2, 1, 1, 1, 1), 4),      # one halving, at the second stage
])
def test_strides_follow_the_resolution(res, strides, final):
    h = Hyperspace(resolution=res)
    assert h.strides == strides and h.final_resolution == final
    assert derive_strides(res, 6) == strides
    sub = get("spaceevo", resolution=res).candidate(get("spaceevo", resolution=res).homogeneous("mbv2"))
    chain = sub.blocks(sub.largest())
    assert chain[0].resolution == res and chain[-1].resolution == final


def test_resolution_that_does_not_survive_the_strides_is_refused():
    with pytest.raises(ConfigError, match=r"resolution 36 does not survive.*multiple of 8.*\[32, 40\]"):
        Hyperspace(resolution=36)
    with pytest.raises(ConfigError, match="resolution must be an integer >= 8"):
        Hyperspace(resolution=4)
    with pytest.raises(ConfigError, match="multiple of 64"):
        Hyperspace(resolution=96, strides=(2, 2, 2, 2, 2, 2, 1))
    assert Hyperspace(resolution=96, strides=(2, 2, 2, 1, 2, 1, 1)).final_resolution == 6


def test_space_from_name_selects_the_resolution():
    assert space_from_name("spaceevo:224").hyperspace.resolution == 224
    assert space_from_name("spaceevo-tiny:32").hyperspace.resolution == 32
    assert space_from_name("spaceevo").hyperspace.resolution == 32
    with pytest.raises(ConfigError, match="'2²4'"):
        space_from_name("spaceevo:2²4")
    with pytest.raises(ConfigError, match="'nope'"):
        space_from_name("nope:32")


def test_bad_hyperspace_settings_are_refused():
    with pytest.raises(ConfigError, match="stage 0 width list"):
        Hyperspace(widths=((16, 24),) * 6)
    with pytest.raises(ConfigError, match="'conv'"):
        Hyperspace(types=("mbv2", "conv"))
    with pytest.raises(ConfigError, match="strides"):
        Hyperspace(strides=(1, 2, 3, 1, 1, 1, 1))


def test_block_specs_cover_every_candidate(space):
    h = space.hyperspace
    every = {s.key() for s in h.block_specs()}
    assert len(every) == len(h.block_specs())  # distinct
    rng = np.random.default_rng(3)
    for _ in range(5):
        cand = space.candidate(space.random(rng))
        assert {s.key() for s in cand.distinct_blocks()} <= every
    picked = h.sample_block_specs(50, np.random.default_rng(0))
    assert len({s.key() for s in picked}) == 50 and {s.key() for s in picked} <= every
    assert [s.key() for s in picked] == [s.key() for s in h.sample_block_specs(50, np.random.default_rng(0))]


# -- space genome ----------------------------------------------------------------------------------
def test_example_decodes():
    sp = get("spaceevo-tiny")
    g = sp.decode(TINY)
    assert g == SpaceGenome(("fused_mb", "mbv2", "resnet_bottleneck"), (0, 0, 0))
    other = "mbv1:16-24|mbv3:24-32|fused_mb_se:32-40"
    assert sp.encode(sp.decode(other)) == other
    assert sp.decode(other).windows == (1, 1, 1)


def test_space_round_trip_many_random(space):
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(300):
        g = space.random(rng)
        text = space.encode(g)
        assert space.decode(text) == g and space.decode_cached(text) == g
        seen.add(text)
    assert len(seen) > 250
    back = pickle.loads(pickle.dumps(space))
    assert back.hyperspace == space.hyperspace and back.name == space.name


def test_tiny_twin_has_its_own_name():
    assert get("spaceevo-tiny").name == "spaceevo-tiny" and get("spaceevo").name == "spaceevo"


@pytest.mark.parametrize("bad, needle", [
    (TINY.replace("mbv2", "mbv4"), "block type of stage 1 'mbv4'.*allowed: \\['mbv1'"),
    (TINY.replace("8-16", "8-24"), "width window of stage 0.*'8-24'.*allowed: \\['8-16', '16-24'\\]"),
    (TINY.replace("8-16", "8-8"), "'8-8'"),
    (TINY.replace("mbv2:16-24", "mbv2:32-40"), "stage 1.*'32-40'"),   # window outside stage 1's list
    (TINY.replace("8-16", "¹6-24"), "'¹6-24'"),            # non-ASCII digit
    (TINY.replace("8-16", "8-1٦"), "'8-1٦'"),             # Arabic-Indic digit
    (TINY.replace("8-16", "08-16"), "'08-16'"),
    (TINY.replace("fused_mb:", "fused_mb"), "'<type>:<lo>-<hi>'"),
    (TINY + "|mbv2:24-32", "has 4 stages; this hyperspace needs 3"),
    ("mbv2:8-16|mbv2:16-24", "has 2 stages"),
])
def test_space_decode_is_strict(bad, needle):
    with pytest.raises(GenomeError, match=needle):
        get("spaceevo-tiny").decode(bad)


def test_space_validate_refuses_foreign_genomes():
    sp = get("spaceevo-tiny")
    with pytest.raises(GenomeError, match="window index 2 of stage 0"):
        sp.encode(SpaceGenome(("mbv2",) * 3, (2, 0, 0)))
    with pytest.raises(GenomeError, match="needs 3"):
        sp.encode(SpaceGenome(("mbv2",) * 2, (0, 0)))


# -- mutation (SpaceEvo §4.4) ------------------------------------------------------------------------
def test_exactly_two_mutation_kinds():
    assert get("spaceevo").mutation_kinds == ("block", "width")
    with pytest.raises(ConfigError, match="mutation kind"):
        get("spaceevo").mutate(get("spaceevo").homogeneous("mbv2"), np.random.default_rng(0), "depth")


def test_block_child_changes_one_stage_type_only(space):
    rng = np.random.default_rng(2)
    stages = set()
    for _ in range(200):
        g = space.random(rng)
        c = space.mutate(g, rng, "block")
        diff = [i for i in range(len(g.types)) if g.types[i] != c.types[i]]
        assert len(diff) == 1 and c.windows == g.windows
        stages.add(diff[0])
    assert stages == set(range(space.hyperspace.num_stages))


def test_width_child_shifts_one_window_by_one_step_only(space):
    rng = np.random.default_rng(3)
    moves = set()
    for _ in range(300):
        g = space.random(rng)
        c = space.mutate(g, rng, "width")
        diff = [i for i in range(len(g.windows)) if g.windows[i] != c.windows[i]]
        assert len(diff) == 1 and c.types == g.types
        i = diff[0]
        assert abs(c.windows[i] - g.windows[i]) == 1
        assert 0 <= c.windows[i] < space.hyperspace.num_windows(i)
        space.encode(c)
        moves.add(c.windows[i] - g.windows[i])
    assert moves == {-1, 1}
    edge = space.homogeneous("mbv2", window=0)  # at the lower bound a window can only move up
    assert all(min(space.mutate(edge, rng, "width").windows) >= 0 for _ in range(50))


def test_aging_evolution_two_children_per_parent_on_tiny():
    space = get("spaceevo-tiny")

    def score(text: str) -> float:  # a fixed landscape: fused_mb everywhere and wide windows are best
        g = space.decode(text)
        tie = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) * 1e-12  # no two genomes tie
        return sum(t == "fused_mb" for t in g.types) + 0.1 * sum(g.windows) + tie

    strategy = AgingEvolution(space, population_size=8, sample_size=8, children_per_parent=2, seed=0)
    k = 0
    while not strategy.initialized:
        genome = strategy.propose(f"i{k}")
        strategy.report(f"i{k}", score(genome))
        k += 1
    for r in range(15):
        parent = max(strategy.population.members, key=lambda m: m.score)
        a, b = strategy.propose(f"a{r}"), strategy.propose(f"b{r}")
        pg, ga, gb = space.decode(parent.genome), space.decode(a), space.decode(b)
        assert ga.windows == pg.windows and ga.types != pg.types      # the block child
        assert gb.types == pg.types and gb.windows != pg.windows      # the width child
        strategy.report(f"a{r}", score(a))
        strategy.report(f"b{r}", score(b))
        assert len(strategy.population) == 8
    assert strategy.best().score > 2.0


# -- subnets --------------------------------------------------------------------------------------
def test_subnet_example_and_blocks():
    cand = get("spaceevo-tiny").candidate(TINY)
    sub = cand.decode(TINY_SUBNET)
    assert sub.depths == (2, 1, 2)
    assert sub.stages[0] == (BlockChoice(16, 3, 6.0), BlockChoice(8, 5, 3.0))
    assert cand.encode(sub) == TINY_SUBNET
    keys = [s.key() for s in sub.blocks(cand)]
    assert keys == ["stem-r16-i3-o8-k3-s1-e1", "fused_mb-r16-i8-o16-k3-s1-e6", "fused_mb-r16-i16-o8-k5-s1-e3",
                    "mbv2-r16-i8-o24-k5-s2-e3", "resnet_bottleneck-r8-i24-o32-k3-s2-e0.5",
                    "resnet_bottleneck-r4-i32-o24-k3-s1-e1", "head-r4-i24-o10-k1-s1-e1"]


def test_largest_and_smallest_subnets():
    cand = get("spaceevo-tiny").candidate(TINY)
    big, small = cand.largest(), cand.smallest()
    assert cand.encode(big) == ("fused_mb:c16_k5_e6,c16_k5_e6|mbv2:c24_k5_e6,c24_k5_e6|"
                                "resnet_bottleneck:c32_k5_e1,c32_k5_e1")
    assert cand.encode(small) == "fused_mb:c8_k3_e3|mbv2:c16_k3_e3|resnet_bottleneck:c24_k3_e0.5"
    check_chain(big.blocks(cand))


def test_subnet_round_trip_many_random(space):
    rng = np.random.default_rng(4)
    for _ in range(20):
        cand = space.candidate(space.random(rng))
        batch = cand.sample_subnets(40, rng)
        for row in range(len(batch)):
            sub = cand.genome(batch, row)
            text = cand.encode(sub)
            assert cand.decode(text) == sub
            check_chain(sub.blocks(cand))
        again = cand.batch_of([cand.genome(batch, r) for r in range(len(batch))])
        assert np.array_equal(again.codes(), batch.codes())


@pytest.mark.parametrize("bad, needle", [
    (TINY_SUBNET.replace("c24_k5_e3", "c32_k5_e3"), "width of stage 1 \\(window\\) '32'.*\\[16, 24\\]"),
    (TINY_SUBNET.replace("c24_k5_e3", "c24_k7_e3"), "kernel of stage 1 '7'"),
    (TINY_SUBNET.replace("c24_k5_e3", "c24_k5_e4"), "expand of stage 1 \\(mbv2\\) '4'.*\\['3', '6'\\]"),
    (TINY_SUBNET.replace("c32_k3_e0.5", "c32_k3_e.5"), "'.5'"),
    (TINY_SUBNET.replace("c24_k5_e3", "c2٤_k5_e3"), "'2٤'"),
    (TINY_SUBNET.replace("c24_k5_e3", "c¹6_k5_e3"), "'¹6'"),
    (TINY_SUBNET.replace("mbv2:c24_k5_e3", "mbv2:c24_k5_e3,c24_k5_e3,c24_k5_e3"), "depth of stage 1 '3'"),
    (TINY_SUBNET.replace("mbv2:", "mbv3:"), "block type of stage 1 'mbv3'.*\\['mbv2'\\]"),
    (TINY_SUBNET.replace("c24_k5_e3", "24_k5_e3"), "'c<width>_k<kernel>_e<expand>'"),
    (TINY_SUBNET.rsplit("|", 1)[0], "has 2 stages"),
])
def test_subnet_decode_is_strict(bad, needle):
    cand = get("spaceevo-tiny").candidate(TINY)
    with pytest.raises(GenomeError, match=needle):
        cand.decode(bad)


def test_subnet_validate_refuses_width_outside_window():
    cand = get("spaceevo-tiny").candidate(TINY)
    sub = cand.decode(TINY_SUBNET)
    bad = SubnetGenome((sub.stages[0], (BlockChoice(32, 5, 3.0),), sub.stages[2]))
    with pytest.raises(GenomeError, match="outside the stage"):
        cand.encode(bad)


def test_sample_subnets_deterministic_and_inside_the_space():
    sp = get("spaceevo")
    cand = sp.candidate(sp.random(np.random.default_rng(0)))
    a = cand.sample_subnets(5000, np.random.default_rng(7))
    b = cand.sample_subnets(5000, np.random.default_rng(7))
    c = cand.sample_subnets(5000, np.random.default_rng(8))
    assert np.array_equal(a.codes(), b.codes()) and not np.array_equal(a.codes(), c.codes())
    assert set(np.unique(a.depth)) == {1, 2, 3, 4}
    for i, st in enumerate(cand.stages):
        assert a.width[:, i].max() == len(st.widths) - 1 and a.kernel[:, i].max() == len(st.kernels) - 1
        beyond = np.arange(4)[None, :] >= a.depth[:, i, None]
        assert not a.width[:, i][beyond].any()     # nothing drawn past the depth
    for row in range(0, 5000, 250):
        cand.validate(cand.genome(a, row))
    assert len(a.unique()) == 5000 and len(cand.sample_subnets(2000, np.random.default_rng(0)).take(
        np.zeros(3, int)).unique()) == 1


def test_block_index_matches_each_subnets_chain(space):
    rng = np.random.default_rng(5)
    cand = space.candidate(space.random(rng))
    specs = cand.distinct_blocks()
    assert len({s.key() for s in specs}) == len(specs)
    batch = cand.sample_subnets(300, rng)
    body, ends = cand.block_index(batch)
    for row in range(len(batch)):
        rows = [ends[row, 0]] + [int(x) for x in body[row].ravel() if x >= 0] + [ends[row, 1]]
        assert [specs[r].key() for r in rows] == [s.key() for s in cand.genome(batch, row).blocks(cand)]


def test_stage_settings_rows():
    cand = get("spaceevo-tiny").candidate(TINY)
    batch = cand.batch_of([cand.decode(TINY_SUBNET)])
    assert cand.stage_settings(batch, 0).tolist() == [[8, 2, 16, 8, 3, 5, 6, 3]]
    assert cand.stage_settings(batch, 1).tolist() == [[8, 1, 24, 0, 5, 0, 3, 0]]
    assert cand.stage_settings(batch, 2).tolist() == [[24, 2, 32, 24, 3, 3, 0.5, 1]]


def test_blockspec_chain_type():
    chain = get("spaceevo-tiny").candidate(TINY).largest().blocks(get("spaceevo-tiny").candidate(TINY))
    assert all(isinstance(s, BlockSpec) for s in chain)
    assert chain[0].type == "stem" and chain[-1].type == "head"


def test_unique_rows_agrees_with_numpy():
    from nasq.spaces.spaceevo_subnet import unique_rows

    rng = np.random.default_rng(9)
    for _ in range(100):
        shape = (int(rng.integers(1, 80)), int(rng.integers(1, 40)))
        a = rng.integers(0, int(rng.integers(1, 5)), size=shape)
        first, inverse = unique_rows(a)
        _, np_first = np.unique(a, axis=0, return_index=True)
        assert sorted(first.tolist()) == sorted(np_first.tolist())
        assert np.array_equal(a[first][inverse], a)
    wide = rng.integers(0, 2 ** 40, size=(50, 6))  # packing must split words instead of overflowing
    # rows that collide if the packed word overflowed (2 * 2**63 wraps to 0 modulo 2**64)
    first, _ = unique_rows(np.array([[0, 5], [2, 5], [0, 2 ** 63 - 1]]))
    assert len(first) == 3
    twice = np.vstack([wide, wide])
    first, inverse = unique_rows(twice)
    assert len(first) == 50 and np.array_equal(twice[first][inverse], twice)
