"""Replays every sample event in events/ the way a user does (README "Replay an event"):
`scripts/replay-setup --fresh`, then `cargo lambda invoke --data-file` for each file
against the `cargo lambda watch` it started, each outcome checked, the rows counted,
a second round changing nothing, and `scripts/replay-setup --stop`.

    .local/venv/bin/python tests/replay_check.py        (after eval "$(scripts/local-stack env)")
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV = ROOT / ".local" / "venv"
PORT = os.environ.get("DEMO_WATCH_PORT", "9000")
ENV = dict(os.environ, PATH=f"{VENV / 'bin'}:{os.environ['PATH']}")
FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


def invoke(path):
    """(succeeded, parsed JSON or the raw text) of one `cargo lambda invoke`."""
    p = subprocess.run(
        ["cargo", "lambda", "invoke", "partition-loader", "--invoke-port", PORT,
         "--data-file", str(path), "--output-format", "json"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    out = (p.stdout + p.stderr).strip()
    try:
        return p.returncode == 0, json.loads(p.stdout)
    except json.JSONDecodeError:
        return p.returncode == 0, out


def sql(query):
    p = subprocess.run([str(VENV / "bin" / "python"), "scripts/redshift_sql.py", query],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
    return [[c.strip() for c in line.split("|")] for line in p.stdout.splitlines() if line.strip()]


def first_round(results):
    """Each sample's first outcome, as README "Replay an event" lists them."""
    ok, o = results["form-encoded-key.json"]
    check(ok and o.get("outcome") == "loaded" and o.get("files") == 1
          and o.get("partition") == {"order_date": "2024-05-29"},
          f"form-encoded-key: loaded 1 file into order_date=2024-05-29: {o}")
    ok, o = results["malformed.json"]
    check(not ok and "Permanent.BadEvent" in json.dumps(o),
          f"malformed: fails with Permanent.BadEvent: {o}")
    ok, o = results["marker-success.json"]
    check(ok and o.get("outcome") == "skipped" and "_SUCCESS" in o.get("reason", ""),
          f"marker-success: skipped as a marker: {o}")
    ok, o = results["multi-column-partition.json"]
    check(ok and o.get("outcome") == "loaded" and o.get("files") == 1
          and o.get("partition") == {"year": "2024", "month": "05", "day": "28"},
          f"multi-column-partition: loaded 1 file into year=2024/month=05/day=28: {o}")
    # Two files of one partition: the first of the two events loads both.
    pair = [results["multipart-upload.json"], results["parquet-partition.json"]]
    outcomes = sorted((o.get("outcome"), o.get("files")) for ok, o in pair if ok and isinstance(o, dict))
    check(outcomes == [("loaded", 2), ("up_to_date", None)],
          f"multipart-upload + parquet-partition: one loads both files of 2024-05-28, the other is up_to_date: {pair}")
    ok, o = results["sqs-batch.json"]
    check(ok and o == {"batchItemFailures": [{"itemIdentifier": "b8c1e6a2-4d7f-4f0a-9b3e-5c2d8a1f6e04"}]},
          f"sqs-batch: only the bad-partition message fails: {o}")
    ok, o = results["unrouted-key.json"]
    check(ok and o.get("outcome") == "skipped" and "no route" in o.get("reason", ""),
          f"unrouted-key: skipped, no route: {o}")


def second_round(results):
    for name, (ok, o) in results.items():
        if name == "malformed.json":
            check(not ok, f"again {name}: still fails")
        elif name == "sqs-batch.json":
            check(ok and len(o.get("batchItemFailures", [])) == 1, f"again {name}: same single failure: {o}")
        elif name in ("marker-success.json", "unrouted-key.json"):
            check(ok and o.get("outcome") == "skipped", f"again {name}: skipped: {o}")
        else:
            check(ok and o.get("outcome") == "up_to_date", f"again {name}: up_to_date: {o}")


def counts():
    days = dict(map(tuple, sql("SELECT order_date, COUNT(*) FROM sales.orders GROUP BY 1 ORDER BY 1")))
    events = sql("SELECT COUNT(*) FROM analytics.events WHERE year = 2024 AND month = 5 AND day = 28")
    return days, events[0][0]


def port_open():
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(PORT))) == 0


def main():
    setup = subprocess.run(["scripts/replay-setup", "--fresh"], cwd=ROOT, env=ENV)
    check(setup.returncode == 0, "scripts/replay-setup --fresh")
    if setup.returncode != 0:
        return 1
    try:
        samples = sorted((ROOT / "events").glob("*.json"))
        check(len(samples) == 8, f"8 sample events: {[p.name for p in samples]}")
        results = {p.name: invoke(p) for p in samples}
        for name, r in results.items():
            print(f"invoke {name}: {r}")
        first_round(results)
        # 2024-05-28: parquet-partition (10 rows) + multipart (5600); 2024-05-29: the
        # form-encoded key (10); 2024-05-30: the batch's two files (10 + 10).
        want = ({"2024-05-28": "5610", "2024-05-29": "10", "2024-05-30": "20"}, "8")
        check(counts() == want, f"rows after the first round: {counts()} == {want}")
        ledger = subprocess.run(
            [str(ROOT / "target" / "debug" / "loaderctl"), "ledger", "sales.orders", "order_date=2024-05-28/"],
            cwd=ROOT, capture_output=True, text=True,
            env=dict(ENV, LOADER_CONFIG_FILE=str(ROOT / "events" / "routes.toml"), LOADER_SCHEMA="replay_loader",
                     MANIFEST_PREFIX="s3://lake/_partition_loader/manifests/", RUST_LOG="warn"))
        etag = [json.loads(l)["etag"] for l in ledger.stdout.splitlines() if "part-00001-6a1f3c2e" in l]
        check(len(etag) == 1 and etag[0].endswith("-3"),
              f"the multipart sample's ledger row keeps S3's 3-part ETag: {etag} {ledger.stderr[-300:]}")
        second_round({p.name: invoke(p) for p in samples})
        check(counts() == want, "a second round loads nothing twice")
        again = subprocess.run(["scripts/replay-setup"], cwd=ROOT, env=ENV, capture_output=True, text=True)
        check(again.returncode == 0, f"scripts/replay-setup again (watch running): {again.stderr[-300:]}")
        sweep = ROOT / ".local" / "sweep-event.json"
        sweep.write_text('{"partition-loader": "sweep"}')
        ok, o = invoke(sweep)
        check(ok and o.get("outcome") == "swept", f"the schedule's sweep event: {o}")
        check(counts() == want, "setup again and a sweep load nothing twice")
    finally:
        subprocess.run(["scripts/replay-setup", "--stop"], cwd=ROOT, env=ENV)
    check(not port_open(), f"replay-setup --stop closed port {PORT}")
    print(f"\n{len(FAILURES)} failed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
