"""LSH banding on Spark DataFrames: band rows -> candidate groups -> edges (-> verified edges).

Every document with a signature contributes one row per band. Documents with the same key in
the same band, within one scope (a snapshot, or everything), form a candidate group. A group of
g members becomes g-1 "star" edges, each member to the group's smallest key, rather than
g(g-1)/2 pairs: the connected components are the same, and a group of 10,000 boilerplate pages
stays 9,999 edges. Optionally each edge is verified: kept only if the two signatures, joined in Spark,
estimate a Jaccard similarity of at least a threshold.

All of it runs as Spark SQL (a window per group, joins); nothing is collected.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F


def band_rows(sketches: DataFrame) -> DataFrame:
    """(bucket, key) for every band of every sketch that has bands.

    The bucket is one 64-bit hash of (scope, band, band key), so that grouping shuffles and
    sorts two longs a row, not a string and three numbers.
    """
    with_bands = sketches.where(F.col("bands").isNotNull())
    exploded = with_bands.select("scope", "key", F.posexplode("bands").alias("band", "band_key"))
    return exploded.select(bucket("scope", "band", "band_key"), "key")


def bucket(scope: str, band: str, band_key: str) -> Column:
    """The candidate group of a (scope, band: int, band key: long) triple, as one long."""
    return F.xxhash64(scope, F.col(band).cast("int"), F.col(band_key).cast("long")).alias("bucket")


def candidate_edges(bands: DataFrame) -> DataFrame:
    """Distinct (src, dst) edges: every member of a candidate group to the group's smallest key."""
    return (
        bands.withColumn("dst", F.min("key").over(Window.partitionBy("bucket")))
        .where(F.col("key") != F.col("dst"))
        .select(F.col("key").alias("src"), "dst")
        .distinct()
    )


def verify_edges(edges: DataFrame, sketches: DataFrame, threshold: float) -> DataFrame:
    """The edges whose two signatures estimate a Jaccard similarity >= `threshold`.

    An edge to a document without a signature here (an indexed document from an earlier run)
    cannot be verified and is kept: the collision is all the evidence there is.
    """
    signatures = sketches.where(F.col("signature").isNotNull()).select("key", "signature")
    src = signatures.select(F.col("key").alias("src"), F.col("signature").alias("src_signature"))
    dst = signatures.select(F.col("key").alias("dst"), F.col("signature").alias("dst_signature"))
    equal = F.zip_with("src_signature", "dst_signature", lambda x, y: F.when(x == y, 1).otherwise(0))
    matches = F.aggregate(equal, F.lit(0), lambda total, one: total + one)
    similarity = matches / F.size("src_signature")
    return (
        edges.join(src, "src", "left")
        .join(dst, "dst", "left")
        .where(F.col("src_signature").isNull() | F.col("dst_signature").isNull() | (similarity >= threshold))
        .select("src", "dst")
    )
