"""Connected components of a large graph on Spark DataFrames: alternating large-star/small-star.

The algorithm of Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014).
Edges are kept oriented from the larger node id to the smaller. One round is:

- large-star: every node u links each *larger* neighbour to m(u), the smallest node of u's
  closed neighbourhood;
- small-star: every node u links itself and each *smaller* neighbour to the smallest of them.

Both keep the components and shrink their diameter; the graph stops changing exactly when every
component is a star around its smallest node, i.e. when no node is both a source and a target
and every source has one target. That is checked after every round and takes O(log n) rounds
(a handful in practice), bounded by `max_iterations`. Each round's edges are checkpointed
locally, so the query plan does not grow with the rounds. Nothing is collected but counts.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


def _oriented(edges: DataFrame) -> DataFrame:
    """Distinct edges as (src, dst) with src > dst; self-loops dropped."""
    return (
        edges.select(F.greatest("src", "dst").alias("src"), F.least("src", "dst").alias("dst"))
        .where(F.col("src") != F.col("dst"))
        .distinct()
    )


def large_star(edges: DataFrame) -> DataFrame:
    """Link every larger neighbour v of each node u to m(u). May hold duplicates."""
    neighbours = edges.select(F.col("src").alias("u"), F.col("dst").alias("v")).unionByName(
        edges.select(F.col("dst").alias("u"), F.col("src").alias("v"))
    )
    smallest = F.least(F.min("v").over(Window.partitionBy("u")), F.col("u"))
    return neighbours.withColumn("m", smallest).where(F.col("v") > F.col("u")).select(
        F.col("v").alias("src"), F.col("m").alias("dst")
    )


def small_star(edges: DataFrame) -> DataFrame:
    """Link every node u and its smaller neighbours to the smallest of them. Distinct edges."""
    linked = edges.withColumn("m", F.min("dst").over(Window.partitionBy("src")))
    neighbours_to_min = linked.where(F.col("dst") != F.col("m")).select(F.col("dst").alias("src"), F.col("m").alias("dst"))
    self_to_min = linked.select("src", F.col("m").alias("dst"))
    return neighbours_to_min.unionByName(self_to_min).distinct()


def _is_star_forest(edges: DataFrame) -> bool:
    """Every source has one target and no target is a source: one aggregation, one row back."""
    ends = edges.select(F.col("src").alias("node"), F.lit(1).alias("out"), F.lit(0).alias("in")).unionByName(
        edges.select(F.col("dst").alias("node"), F.lit(0).alias("out"), F.lit(1).alias("in"))
    )
    degrees = ends.groupBy("node").agg(F.sum("out").alias("out"), F.max("in").alias("in"))
    not_star = degrees.where((F.col("out") > 1) | ((F.col("out") == 1) & (F.col("in") == 1)))
    return not_star.limit(1).count() == 0


def connected_components(edges: DataFrame, max_iterations: int = 50) -> tuple[DataFrame, int]:
    """(node, root) for every node of `edges` (root: its component's smallest node), and rounds run.

    `edges` has long columns src and dst, in any orientation, duplicates allowed. A root maps to
    itself. If `max_iterations` rounds do not converge, a component may come back split in
    several (never wrongly merged); a warning says so.
    """
    current = _oriented(edges).localCheckpoint(eager=False)
    rounds = 0
    while not _is_star_forest(current):
        if rounds == max_iterations:
            log.warning("connected components did not converge in %d rounds", max_iterations)
            break
        current = small_star(large_star(current)).localCheckpoint(eager=False)
        rounds += 1
    # At convergence every source has exactly one target; the min keeps a non-converged result
    # consistent too (one label per node, shared only by nodes truly connected).
    labels = current.groupBy(F.col("src").alias("node")).agg(F.min("dst").alias("root"))
    roots = (
        current.select(F.col("dst").alias("node")).distinct()
        .join(labels.select("node"), "node", "left_anti")
        .select("node", F.col("node").alias("root"))
    )
    return labels.unionByName(roots), rounds
