"""NAS-Bench-201 cell space: codec, sampler, mutation, registry (Dong & Yang 2020, §2)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import nasq.spaces as spaces
from nasq.errors import ConfigError, GenomeError
from nasq.spaces.nb201 import NB201_EDGES, NB201_OPS, NB201Genome, NB201Space

EXAMPLE = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return spaces.get("nb201")


@pytest.fixture(scope="module")
def table_strings(nb201_table) -> list[str]:
    with open(nb201_table, newline="") as f:
        return [row["ArchitectureString"] for row in csv.DictReader(f)]


def test_example_decodes_to_edges_in_string_order(space):
    genome = space.decode(EXAMPLE)
    assert genome == NB201Genome(
        ("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "none", "nor_conv_1x1"))
    assert space.encode(genome) == EXAMPLE


def test_round_trip_over_many_random_genomes(space):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(3000):
        genome = space.random(rng)
        text = space.encode(genome)
        assert space.decode(text) == genome
        assert space.canonical(text) == text
        seen.add(genome)
    # 3000 uniform draws from 15,625 cells: the sampler must not be stuck on a few genomes.
    assert len(seen) > 2500


def test_random_is_uniform_per_edge(space):
    rng = np.random.default_rng(1)
    counts = np.zeros((len(NB201_EDGES), len(NB201_OPS)))
    for _ in range(5000):
        for e, op in enumerate(space.random(rng).ops):
            counts[e, NB201_OPS.index(op)] += 1
    freq = counts / counts.sum(axis=1, keepdims=True)
    assert np.all(np.abs(freq - 0.2) < 0.03)


def test_all_table_strings_decode_and_cover_the_space(space, table_strings):
    assert len(table_strings) == 5 ** 6
    genomes = set()
    for text in table_strings:
        genome = space.decode(text)
        assert space.encode(genome) == text
        genomes.add(genome)
    assert len(genomes) == 5 ** 6


@pytest.mark.parametrize(
    "text, token",
    [
        (EXAMPLE.replace("nor_conv_3x3~0", "conv_5x5~0"), "conv_5x5"),
        (EXAMPLE.replace("none~1", "max_pool_3x3~1"), "max_pool_3x3"),
        (EXAMPLE.replace("skip_connect", "Skip_Connect"), "Skip_Connect"),
    ],
)
def test_unknown_op_names_token_and_allowed_ops(space, text, token):
    with pytest.raises(GenomeError) as info:
        space.decode(text)
    message = str(info.value)
    assert repr(token) in message
    for op in NB201_OPS:
        assert op in message


@pytest.mark.parametrize(
    "text, part",
    [
        ("|nor_conv_3x3~0|+|none~0|skip_connect~1|", "2 node groups"),
        (EXAMPLE + "+|none~0|", "4 node groups"),
        (EXAMPLE.replace("none~1|nor_conv_1x1~2|", "none~1|"), "needs 3 edges"),
        (EXAMPLE.replace("skip_connect~1", "skip_connect~0"), "skip_connect~0"),
        (EXAMPLE.replace("skip_connect~1", "skip_connect"), "'skip_connect'"),
        (EXAMPLE[1:], "must start and end with '|'"),
        ("", "1 node groups"),
    ],
)
def test_malformed_strings_name_the_bad_part(space, text, part):
    with pytest.raises(GenomeError) as info:
        space.decode(text)
    assert part in str(info.value)


def test_decode_rejects_non_strings_and_errors_are_value_errors(space):
    with pytest.raises(ValueError, match="must be a string"):
        space.decode(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        NB201Genome(("none",) * 5)
    with pytest.raises(GenomeError, match="'conv'"):
        NB201Genome(("none",) * 5 + ("conv",))


def test_genome_is_frozen(space):
    genome = space.decode(EXAMPLE)
    with pytest.raises(AttributeError):
        genome.ops = ("none",) * 6  # type: ignore[misc]


def test_mutation_changes_exactly_one_edge_to_a_different_op(space):
    rng = np.random.default_rng(2)
    edges_hit = set()
    for _ in range(2000):
        parent = space.random(rng)
        child = space.mutate(parent, rng)
        diff = [i for i, (a, b) in enumerate(zip(parent.ops, child.ops)) if a != b]
        assert len(diff) == 1
        edges_hit.add(diff[0])
        # The string form follows the typed form.
        child_str = space.mutate_str(space.encode(parent), rng, "edge")
        diff_str = [a != b for a, b in zip(parent.ops, space.decode(child_str).ops)]
        assert sum(diff_str) == 1
    assert edges_hit == set(range(len(NB201_EDGES)))


def test_mutation_is_driven_by_the_given_generator(space):
    parent = space.decode(EXAMPLE)
    a = [space.mutate(parent, np.random.default_rng(7)) for _ in range(5)]
    b = [space.mutate(parent, np.random.default_rng(7)) for _ in range(5)]
    assert a == b
    rng = np.random.default_rng(7)
    assert len({space.mutate(parent, rng) for _ in range(50)}) > 5


def test_unknown_mutation_kind_is_a_config_error(space):
    with pytest.raises(ConfigError, match="'block'.*edge"):
        space.mutate(space.decode(EXAMPLE), np.random.default_rng(0), "block")


def test_registry_get_and_list():
    space = spaces.get("nb201")
    assert isinstance(space, NB201Space)
    assert space.name == "nb201" and tuple(space.mutation_kinds) == ("edge",)
    assert spaces.get(space) is space
    assert "nb201" in spaces.list_spaces()
    assert spaces.list_spaces("nb*") == ["nb201"]
    assert spaces.list_spaces("zz*") == []
    assert spaces.list_spaces() == sorted(spaces.list_spaces())


def test_registry_unknown_name_names_the_allowed_spaces():
    with pytest.raises(ConfigError) as info:
        spaces.get("nb202")
    assert "'nb202'" in str(info.value) and "nb201" in str(info.value)


def test_space_pickles_by_name():
    import pickle

    space = spaces.get("nb201")
    copy = pickle.loads(pickle.dumps(space))
    assert isinstance(copy, NB201Space) and copy.decode(EXAMPLE) == space.decode(EXAMPLE)
