"""The Spark session factory.

`local[*]` by default, any `spark://` (or other) master by setting. Workers must run the same
Python as the driver, with crawl2chat importable, so `PYSPARK_PYTHON` is set to the running
interpreter before the JVM starts. Spark's s3a connector is not used: jobs read and write object
storage from Python (infra.storage) inside their tasks, which keeps one code path for local
files and S3 and needs no extra jars.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from infra.settings import SparkSettings

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


def spark_session(settings: SparkSettings | None = None):
    """Get (or create) the SparkSession described by `settings`."""
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Let Python workers import flows/, tasks/, infra/ and model/ even when crawl2chat runs from
    # a source checkout rather than an installed package.
    python_path = os.environ.get("PYTHONPATH", "")
    if _PROJECT_ROOT not in python_path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, python_path) if p)
    builder = (
        SparkSession.builder.master(settings.master)
        .appName(settings.app_name)
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # One task per input file: never retry a bad file forever, report it instead.
        .config("spark.task.maxFailures", "2")
        .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
    )
    if settings.master.startswith(("local", "spark://127.0.0.1:", "spark://localhost:")):
        # Everything on loopback, for local masters and a cluster on this machine (`crawl2chat up
        # --spark`): the driver's RPC and block manager by these two settings, and the web UI
        # (port 4040), which binds to SPARK_LOCAL_IP or else every interface, by that variable,
        # read when the JVM starts. A SPARK_LOCAL_IP the user set is left alone.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    for key, value in settings.extra_conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
