"""A second SDK against redshift-data-local: boto3 must speak to it as to AWS.

Reads the endpoint and target from the environment that
`eval "$(scripts/local-stack env)"` exports.
"""

import os
import sys
import time

import boto3

TERMINAL = {"FINISHED", "FAILED", "ABORTED"}


def wait(client, statement_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        desc = client.describe_statement(Id=statement_id)
        if desc["Status"] in TERMINAL:
            return desc
        if time.monotonic() > deadline:
            raise AssertionError(f"{statement_id} still {desc['Status']} after {timeout}s")
        time.sleep(0.1)


def main():
    if not os.environ.get("AWS_ENDPOINT_URL_REDSHIFT_DATA"):
        sys.exit('AWS_ENDPOINT_URL_REDSHIFT_DATA is not set: run '
                 'scripts/local-stack up && eval "$(scripts/local-stack env)"')
    client = boto3.client("redshift-data")
    target = {"WorkgroupName": os.environ["REDSHIFT_WORKGROUP"],
              "Database": os.environ["REDSHIFT_DATABASE"]}

    submitted = client.execute_statement(
        Sql="SELECT 40 + :n AS answer, 'partition-loader' AS name",
        Parameters=[{"name": "n", "value": "2"}], **target)
    desc = wait(client, submitted["Id"])
    assert desc["Status"] == "FINISHED", desc
    assert desc["HasResultSet"] is True, desc
    result = client.get_statement_result(Id=submitted["Id"])
    assert [c["name"] for c in result["ColumnMetadata"]] == ["answer", "name"], result
    assert result["TotalNumRows"] == 1, result
    answer, name = result["Records"][0]
    assert answer.get("longValue") == 42, answer
    assert name == {"stringValue": "partition-loader"}, name

    # A statement PostgreSQL rejects must come back FAILED with the reason.
    bad = client.execute_statement(Sql="SELECT * FROM no_such_table_boto3_check", **target)
    desc = wait(client, bad["Id"])
    assert desc["Status"] == "FAILED", desc
    assert "no_such_table_boto3_check" in desc.get("Error", ""), desc

    print("boto3 redshift-data check: 2 passed, 0 failed")


if __name__ == "__main__":
    main()
