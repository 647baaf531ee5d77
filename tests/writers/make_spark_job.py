"""Writes tests/writers/fixtures/spark/: one tiny Spark job's output, exactly as Spark
writes it (run once by hand; the output is committed, pyspark is not in scripts/test).

    python3 -m venv .local/venv-spark && .local/venv-spark/bin/pip install pyspark
    .local/venv-spark/bin/python tests/writers/make_spark_job.py tests/writers/fixtures/spark

`partitionBy` with the default output committer (FileOutputCommitter, algorithm 1 in
Spark 4) writes `order_date=…/part-…c000.snappy.parquet` per partition, one `_SUCCESS`
at the output root for the whole job, and a `.crc` beside every file (local file
system). The test uploads the tree under a route prefix, `_SUCCESS` last.
"""

import json
import shutil
import sys

from pyspark.sql import SparkSession

out = sys.argv[1]
shutil.rmtree(out, ignore_errors=True)
spark = (
    SparkSession.builder.master("local[1]")
    .appName("partition-loader-fixture")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.shuffle.partitions", "2")
    .getOrCreate()
)
rows = [
    (1, "ana", "2024-06-01"),
    (2, "bo", "2024-06-01"),
    (3, "cy", "2024-06-01"),
    (4, "di", "2024-06-02"),
    (5, "ed", "2024-06-02"),
    (6, "fa", "2024-06-03"),
]
df = spark.createDataFrame(rows, "id BIGINT, name STRING, order_date STRING")
# Two tasks, so a partition may get a file from each (as a real job's many files).
df.repartition(2).write.partitionBy("order_date").parquet(out)
with open(f"{out}.expected.json", "w") as f:
    json.dump(
        {
            "spark": spark.version,
            "rows": [{"id": i, "name": n, "order_date": d} for i, n, d in rows],
        },
        f,
        indent=1,
    )
spark.stop()
