"""Connected components (large-star/small-star), candidate edges and verification, on local Spark.

Known answers: hand-made graphs (a long chain, a cycle, duplicate and reversed edges, negative
ids) and a random graph, checked against a plain union-find; star edges from candidate groups
scoped by snapshot; verification by the share of equal signature values.
"""

from __future__ import annotations

import numpy as np
import pytest

from tasks.dedup.components import connected_components
from tasks.dedup.lsh import band_rows, candidate_edges, verify_edges

pytestmark = pytest.mark.spark


def _union_find(edges: list[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {node: find(node) for node in parent}


def _components(spark, edges, max_iterations=50):
    frame = spark.createDataFrame(edges, "src long, dst long")
    labels, rounds = connected_components(frame, max_iterations)
    return {row["node"]: row["root"] for row in labels.collect()}, rounds


def test_components_match_union_find(spark):
    chain = [(i, i + 1) for i in range(100, 120)]  # diameter 20
    cycle = [(1, 2), (2, 3), (3, 4), (4, 1)]
    messy = [(900, 50), (50, 900), (50, 50), (900, 50), (-7, 900)]  # duplicates, self-loop, negative id
    rng = np.random.default_rng(11)
    nodes = 10**6 + rng.choice(10**12, 200, replace=False)  # a random graph, apart from the rest
    random_graph = [(int(nodes[a]), int(nodes[b])) for a, b in rng.integers(0, 200, (150, 2))]
    edges = chain + cycle + messy + random_graph
    labels, rounds = _components(spark, edges)
    assert labels == _union_find(edges)
    assert {labels[n] for n in range(100, 121)} == {100}
    assert labels[900] == labels[50] == -7
    assert 1 <= rounds <= 7  # O(log n) rounds, not O(diameter)


def test_no_edges(spark):
    assert _components(spark, []) == ({}, 0)


def test_unconverged_result_is_split_never_merged(spark):
    chain = [(i, i + 1) for i in range(16)]
    labels, rounds = _components(spark, chain, max_iterations=1)
    assert rounds == 1 and set(labels) == set(range(17))  # every node, exactly one label
    assert len(set(labels.values())) > 1  # not done yet: split
    truth = _union_find(chain)
    assert all(truth[node] == truth[label] for node, label in labels.items())


def test_candidate_edges_are_stars_within_a_scope_and_band(spark):
    rows = [
        ("A", 10, [111, 7, 1]), ("A", 20, [111, 8, 2]), ("A", 30, [111, 9, 3]), ("A", 40, [111, 7, 4]),
        ("B", 99, [111, 0, 0]),  # same key in band 0, other snapshot: no edge
        ("A", 50, [5, 111, 6]),  # the key 111 in another band: no edge
        ("A", 60, None),  # too short for a signature
    ]
    sketches = spark.createDataFrame(rows, "scope string, key long, bands array<long>")
    edges = sorted(tuple(row) for row in candidate_edges(band_rows(sketches)).collect())
    assert edges == [(20, 10), (30, 10), (40, 10)]  # band 0: a star on 10; band 1 adds 40-10 again


@pytest.mark.parametrize("threshold, expected", [(0.5, [(2, 1), (3, 1), (9, -5)]), (0.9, [(2, 1), (9, -5)])])
def test_verification_keeps_edges_with_enough_equal_values(spark, threshold, expected):
    base = list(range(112))
    near = base[:106] + [-1] * 6  # 106/112 = 0.946 equal
    far = base[:70] + [-1] * 42  # 70/112 = 0.625 equal
    sketches = spark.createDataFrame(
        [(1, base), (2, near), (3, far), (9, base)], "key long, signature array<long>"
    )
    edges = spark.createDataFrame([(2, 1), (3, 1), (9, -5)], "src long, dst long")  # -5: indexed, no signature
    kept = sorted(tuple(row) for row in verify_edges(edges, sketches, threshold).collect())
    assert kept == expected
