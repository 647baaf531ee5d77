"""Writes partitioned datasets the way real writers lay them out, for tests/writers.rs.

Usage: make_datasets.py OUT_DIR

Each dataset goes to OUT_DIR/<name>/ exactly as its writer wrote it (Hive directories,
the writer's own escaping and file names), and OUT_DIR/expected.json says, per dataset,
the writer, the codec, the files and every row the table must hold after loading
(the partition value included: None is NULL). The rows come from the data given to the
writer, not from reading the files back, so a loader bug cannot hide in both.
"""

import json
import os
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

# Awkward partition values: space, '/', ':', '=', '%', '+', non-ASCII, NULL.
AWKWARD = ["São Paulo", "a/b", "x:y", "k=v", "50%", "C++", "東京", "sp ace", None]
CODECS = ["snappy", "gzip", "zstd", "lz4", "brotli"]


def table(cities):
    ids = list(range(1, 2 * len(cities) + 1))
    names = [f"name-{i}-ü" for i in ids]
    city = [cities[(i - 1) // 2] for i in ids]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array(names, pa.string()),
            "city": pa.array(city, pa.string()),
        }
    )


def write_pyarrow(t, path, codec):
    # write_dataset's hive partitioning: segment_encoding="uri" (UTF-8 percent-encoding),
    # NULL as __HIVE_DEFAULT_PARTITION__; the partition column is left out of the files.
    ds.write_dataset(
        t,
        path,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("city", pa.string())]), flavor="hive"),
        file_options=ds.ParquetFileFormat().make_write_options(compression=codec),
    )


def write_duckdb(t, path, codec):
    con = duckdb.connect()
    con.register("t", t)
    con.execute(
        f"COPY (SELECT * FROM t) TO '{path}' "
        f"(FORMAT parquet, PARTITION_BY (city), COMPRESSION {codec})"
    )
    con.close()


def write_polars(t, path, codec):
    # polars: zstd by default, and the partition column stays in the files too.
    pl.from_arrow(t).write_parquet(path, partition_by="city", compression=codec)


WRITERS = {"pyarrow": write_pyarrow, "duckdb": write_duckdb, "polars": write_polars}
# What the route needs besides the partition column, per writer.
ROUTE_EXTRA = {"polars": 'file_columns = ["id", "name", "city"]'}


def text_table(cities):
    """Rows for the text formats: a UTC timestamp and a NULL name in every partition."""
    import datetime

    t = table(cities)
    at = [
        datetime.datetime(2024, 5, 28, 10, 0, i, tzinfo=datetime.timezone.utc)
        for i in range(t.num_rows)
    ]
    names = [None if i % 2 else n for i, n in enumerate(t.column("name").to_pylist())]
    return pa.table(
        {
            "id": t.column("id"),
            "name": pa.array(names, pa.string()),
            "at": pa.array(at, pa.timestamp("us", tz="UTC")),
            "city": t.column("city"),
        }
    )


def write_pyarrow_csv(t, path):
    # pyarrow's CSV: header, NULL as an empty field, timestamps as ISO 8601 with `Z`.
    ds.write_dataset(
        t,
        path,
        format="csv",
        partitioning=ds.partitioning(pa.schema([("city", pa.string())]), flavor="hive"),
    )


def write_duckdb_json(t, path):
    # DuckDB's JSON: one object per line, TIMESTAMPTZ as `2024-05-28 10:00:00+00`.
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("t", t)
    con.execute(f"COPY (SELECT * FROM t) TO '{path}' (FORMAT json, PARTITION_BY (city))")
    con.close()


TEXT_WRITERS = {
    "pyarrow_csv": ("pyarrow", "csv", write_pyarrow_csv),
    "duckdb_json": ("duckdb", "json", write_duckdb_json),
}


def main(out):
    os.makedirs(out, exist_ok=True)
    datasets = []
    plan = []
    for writer in ["pyarrow", "duckdb"]:
        plan.append((f"{writer}_values", writer, "snappy", AWKWARD))
        for codec in CODECS:
            plan.append((f"{writer}_{codec}", writer, codec, ["São Paulo", None]))
    plan.append(("polars_values", "polars", "zstd", AWKWARD))
    for name, writer, codec, cities in plan:
        t = table(cities)
        path = os.path.join(out, name)
        WRITERS[writer](t, path, codec)
        files = sorted(
            os.path.relpath(os.path.join(root, f), path)
            for root, _, fs in os.walk(path)
            for f in fs
        )
        datasets.append(
            {
                "name": name,
                "writer": writer,
                "codec": codec,
                "route_extra": ROUTE_EXTRA.get(writer, ""),
                "files": files,
                "rows": t.to_pylist(),
            }
        )
    for name, (writer, fmt, write) in TEXT_WRITERS.items():
        t = text_table(["São Paulo", "x:y", None])
        path = os.path.join(out, name)
        write(t, path)
        files = sorted(
            os.path.relpath(os.path.join(root, f), path)
            for root, _, fs in os.walk(path)
            for f in fs
        )
        rows = t.to_pylist()
        for r in rows:
            r["at"] = r["at"].strftime("%Y-%m-%d %H:%M:%S")
        datasets.append(
            {"name": name, "writer": writer, "format": fmt, "files": files, "rows": rows}
        )
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "pyarrow": pa.__version__,
                "duckdb": duckdb.__version__,
                "polars": pl.__version__,
                "datasets": datasets,
            },
            f,
            ensure_ascii=False,
            indent=1,
        )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
