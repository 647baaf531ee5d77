"""Cold start and peak RSS of the Lambda binary under a stub of the Lambda runtime API.

Cold start: process start until its first `GET /runtime/invocation/next` (it has read
its configuration, built the AWS clients and is ready for an event), over --runs
starts. Peak RSS: one process serves --events events, each loading one new CSV file
of one partition through the local stack (moto + redshift-data-local), then VmHWM
from /proc is read. Needs the local stack's environment:

    scripts/local-stack up && eval "$(scripts/local-stack env)"
    .local/venv/bin/python scripts/cold_start.py --binary target/lambda/partition-loader/bootstrap
"""

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

PREFIX = "/2018-06-01/runtime"


class Stub:
    """The runtime API: hands out queued events, collects responses."""

    def __init__(self):
        self.events = queue.Queue()
        self.responses = queue.Queue()
        self.first_next = None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != f"{PREFIX}/invocation/next":
                    self.send_error(404)
                    return
                if stub.first_next is None:
                    stub.first_next = time.perf_counter()
                request_id, body = stub.events.get()
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int((time.time() + 60) * 1000)))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                 "arn:aws:lambda:us-east-1:123456789012:function:partition-loader")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                stub.responses.put((self.path, body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self):
        host, port = self.server.server_address
        return f"{host}:{port}"


def event(bucket, key, size):
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created",
        "source": "aws.s3", "account": "123456789012", "time": "2024-05-28T10:00:00Z",
        "region": "us-east-1", "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket},
                   "object": {"key": key, "size": size}, "reason": "PutObject"},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--events", type=int, default=100)
    args = ap.parse_args()

    suffix = uuid.uuid4().hex[:8]
    bucket, schema, loader_schema = f"cold-{suffix}", f"cold_{suffix}", f"pl_{suffix}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    rsd = boto3.client("redshift-data")

    def sql(text):
        sid = rsd.execute_statement(WorkgroupName="cold-admin", Database=os.environ["REDSHIFT_DATABASE"], Sql=text)["Id"]
        while True:
            d = rsd.describe_statement(Id=sid)
            if d["Status"] in ("FINISHED", "FAILED", "ABORTED"):
                assert d["Status"] == "FINISHED", d
                return
            time.sleep(0.05)

    sql(f"CREATE SCHEMA {schema}")
    sql(f"CREATE TABLE {schema}.clicks (id BIGINT, name VARCHAR(16))")
    routes = (f'[[routes]]\nbucket = "{bucket}"\nprefix = "clicks/"\ntable = "{schema}.clicks"\n'
              f'format = "csv"\npartition_columns = [{{ name = "day", type = "date" }}]\n')
    env = dict(os.environ,
               AWS_LAMBDA_FUNCTION_NAME="partition-loader", AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
               AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256", AWS_LAMBDA_LOG_STREAM_NAME="cold",
               AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/partition-loader",
               REDSHIFT_WORKGROUP=f"cold-{suffix}", LOADER_SCHEMA=loader_schema,
               MANIFEST_PREFIX=f"s3://{bucket}/_loader/", LOADER_CONFIG=routes, RUST_LOG="warn")
    loaderctl = os.path.join(os.path.dirname(args.binary), "loaderctl")
    subprocess.run([loaderctl if os.path.exists(loaderctl) else "target/debug/loaderctl", "bootstrap"],
                   env=env, check=True, capture_output=True)

    starts = []
    for _ in range(args.runs):
        stub = Stub()
        t0 = time.perf_counter()
        proc = subprocess.Popen([args.binary], env=dict(env, AWS_LAMBDA_RUNTIME_API=stub.address),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while stub.first_next is None and proc.poll() is None:
            time.sleep(0.0005)
        starts.append((stub.first_next or time.perf_counter()) - t0)
        proc.kill()
        proc.wait()
        stub.server.shutdown()
    ms = sorted(s * 1000 for s in starts)
    print(f"cold start to first /next over {len(ms)} starts: median {statistics.median(ms):.1f} ms, "
          f"min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms")

    stub = Stub()
    proc = subprocess.Popen([args.binary], env=dict(env, AWS_LAMBDA_RUNTIME_API=stub.address),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    outcomes = {}
    t0 = time.perf_counter()
    for i in range(args.events):
        key = f"clicks/day=2024-05-28/part-{i:05}.csv"
        body = "".join(f"{i * 1000 + r},n{r}\n" for r in range(20)).encode()
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        stub.events.put((str(uuid.uuid4()), event(bucket, key, len(body))))
        path, response = stub.responses.get(timeout=120)
        kind = "error" if path.endswith("/error") else json.loads(response).get("outcome", "?")
        outcomes[kind] = outcomes.get(kind, 0) + 1
    elapsed = time.perf_counter() - t0
    with open(f"/proc/{proc.pid}/status") as f:
        status = {line.split(":")[0]: line.split(":")[1].strip() for line in f}
    proc.kill()
    proc.wait()
    print(f"{args.events} events in {elapsed:.1f} s, outcomes {outcomes}; "
          f"peak RSS (VmHWM) {status['VmHWM']}, RSS at end {status['VmRSS']}")
    if outcomes.get("loaded", 0) != args.events:
        sys.exit("not every event loaded its file")


if __name__ == "__main__":
    main()
