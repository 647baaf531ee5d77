"""Writes Parquet files whose columns drift the way real writers' do, for tests/schema_drift.rs.

Usage: make_schema_drift.py OUT_DIR

The target table is (id BIGINT, qty BIGINT, name VARCHAR, city VARCHAR), city the
partition column (in the path, not in the files). Files, all written by pyarrow:
- city=A/base.parquet       id, qty, name       (the table's order)
- city=A/reordered.parquet  qty, id, name       (same types: by position it loads
                                                  qty into id and id into qty)
- city=B/dropped.parquet    name, id            (qty missing: loads NULL)
- city=C/added.parquet      id, qty, name, extra (a column the table lacks)
- city=D/retyped.parquet    id, qty (string), name
- city=E/upper.parquet      NAME, ID, QTY       (names differ only in case)
For the route option add_new_columns:
- city=F/wide.parquet       id, qty, name, price decimal(10,2), seen timestamp[us, UTC],
                            small int16, label string, day date32 (five new columns)
- city=G/unsigned.parquet   id, qty, name, big uint64          (no Redshift type holds it)
- city=H/nested.parquet     id, qty, name, tags struct<a: int64> (nested)
- city=I/spaced.parquet     id, qty, name, "Order Date" string (not an identifier)
CSV with a header row (route header = true), under csv/:
- csv/city=A/pyarrow.csv    name, id, qty   (pyarrow.csv: every header name quoted)
- csv/city=A/polars.csv     qty, name, id   (polars write_csv)
- csv/city=B/dropped.csv    name, id        (qty missing: loads NULL)
- csv/city=C/added.csv      id, qty, name, extra (a column the table lacks)
"""

import datetime
import decimal
import os
import sys

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def write(out, rel, columns):
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(columns), path)


def main(out):
    write(out, "city=A/base.parquet", {
        "id": pa.array([1, 2], pa.int64()),
        "qty": pa.array([10, 20], pa.int64()),
        "name": pa.array(["one", "two"], pa.string()),
    })
    write(out, "city=A/reordered.parquet", {
        "qty": pa.array([30, 40], pa.int64()),
        "id": pa.array([3, 4], pa.int64()),
        "name": pa.array(["three", "four"], pa.string()),
    })
    write(out, "city=B/dropped.parquet", {
        "name": pa.array(["five"], pa.string()),
        "id": pa.array([5], pa.int64()),
    })
    write(out, "city=C/added.parquet", {
        "id": pa.array([6], pa.int64()),
        "qty": pa.array([60], pa.int64()),
        "name": pa.array(["six"], pa.string()),
        "extra": pa.array([1.5], pa.float64()),
    })
    write(out, "city=D/retyped.parquet", {
        "id": pa.array([7], pa.int64()),
        "qty": pa.array(["70"], pa.string()),
        "name": pa.array(["seven"], pa.string()),
    })
    write(out, "city=E/upper.parquet", {
        "NAME": pa.array(["eight"], pa.string()),
        "ID": pa.array([8], pa.int64()),
        "QTY": pa.array([80], pa.int64()),
    })

    write(out, "city=F/wide.parquet", {
        "id": pa.array([9], pa.int64()),
        "qty": pa.array([90], pa.int64()),
        "name": pa.array(["nine"], pa.string()),
        "price": pa.array([decimal.Decimal("12.34")], pa.decimal128(10, 2)),
        "seen": pa.array([datetime.datetime(2024, 6, 1, 10, 30, tzinfo=datetime.timezone.utc)],
                         pa.timestamp("us", tz="UTC")),
        "small": pa.array([7], pa.int16()),
        "label": pa.array(["new"], pa.string()),
        "day": pa.array([datetime.date(2024, 6, 1)], pa.date32()),
    })
    base = {
        "id": pa.array([10], pa.int64()),
        "qty": pa.array([100], pa.int64()),
        "name": pa.array(["ten"], pa.string()),
    }
    write(out, "city=G/unsigned.parquet", {**base, "big": pa.array([2**63], pa.uint64())})
    write(out, "city=H/nested.parquet", {
        **base,
        "tags": pa.array([{"a": 1}], pa.struct([("a", pa.int64())])),
    })
    write(out, "city=I/spaced.parquet", {**base, "Order Date": pa.array(["x"], pa.string())})

    csv_dir = os.path.join(out, "csv")

    def write_csv(rel, table):
        path = os.path.join(csv_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pacsv.write_csv(table, path)

    write_csv("city=A/pyarrow.csv", pa.table({
        "name": pa.array(["eleven"], pa.string()),
        "id": pa.array([11], pa.int64()),
        "qty": pa.array([110], pa.int64()),
    }))
    polars_path = os.path.join(csv_dir, "city=A/polars.csv")
    pl.DataFrame({"qty": [120], "name": ["twelve"], "id": [12]}).write_csv(polars_path)
    write_csv("city=B/dropped.csv", pa.table({
        "name": pa.array(["thirteen"], pa.string()),
        "id": pa.array([13], pa.int64()),
    }))
    write_csv("city=C/added.csv", pa.table({
        "id": pa.array([14], pa.int64()),
        "qty": pa.array([140], pa.int64()),
        "name": pa.array(["fourteen"], pa.string()),
        "extra": pa.array([1.5], pa.float64()),
    }))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
