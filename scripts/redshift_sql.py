"""Runs SQL statements through the Redshift Data API (boto3), in order, and prints
the rows of those that return any as `value | value` lines.

    .local/venv/bin/python scripts/redshift_sql.py "SELECT ..." ["CREATE ..." ...]

Target and endpoint come from the environment (`scripts/local-stack env`, or the
real REDSHIFT_WORKGROUP / REDSHIFT_CLUSTER_ID + REDSHIFT_DB_USER and AWS credentials).
"""

import os
import sys
import time

import boto3

TERMINAL = {"FINISHED", "FAILED", "ABORTED"}


def target():
    t = {"Database": os.environ["REDSHIFT_DATABASE"]}
    if os.environ.get("REDSHIFT_WORKGROUP"):
        t["WorkgroupName"] = os.environ["REDSHIFT_WORKGROUP"]
    else:
        t["ClusterIdentifier"] = os.environ["REDSHIFT_CLUSTER_ID"]
        t["DbUser"] = os.environ["REDSHIFT_DB_USER"]
    return t


def field_text(field):
    if field.get("isNull"):
        return "NULL"
    (value,) = field.values()
    return str(value)


def run(client, sql, timeout=60.0):
    statement_id = client.execute_statement(Sql=sql, **target())["Id"]
    deadline = time.monotonic() + timeout
    while (desc := client.describe_statement(Id=statement_id))["Status"] not in TERMINAL:
        if time.monotonic() > deadline:
            sys.exit(f"redshift_sql: statement {statement_id} not done after {timeout}s: {sql}")
        time.sleep(0.1)
    if desc["Status"] != "FINISHED":
        sys.exit(f"redshift_sql: {desc['Status']}: {desc.get('Error')}\n  in: {sql}")
    if desc.get("HasResultSet"):
        token = None
        while True:
            page = client.get_statement_result(Id=statement_id, **({"NextToken": token} if token else {}))
            for record in page["Records"]:
                print(" | ".join(field_text(f) for f in record))
            token = page.get("NextToken")
            if not token:
                break


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    client = boto3.client("redshift-data")
    for sql in sys.argv[1:]:
        run(client, sql)


if __name__ == "__main__":
    main()
