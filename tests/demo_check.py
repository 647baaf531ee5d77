"""Checks what `scripts/demo --fresh` and then `scripts/demo` printed.

    python tests/demo_check.py FIRST_RUN_OUTPUT SECOND_RUN_OUTPUT

First run: every data file is loaded exactly once (the files counts of the
`loaded` outcomes of a partition add up to the files demo_data wrote there), the
markers are `skipped`. Second run: every data event is `up_to_date`. After each run
demo.orders holds exactly the rows demo_data wrote, per day: nothing lost, nothing
loaded twice.
"""

import json
import re
import sys
from collections import defaultdict

WROTE = re.compile(r"^demo_data: order_date=(\S+) files=(\d+) rows=(\d+)$")
INVOKE = re.compile(r"^invoke (\S+): (.*)$")
ROWS = re.compile(r"^rows order_date=(\S+): (\d+)$")


def parse(path):
    wrote, invokes, rows = {}, [], {}
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if m := WROTE.match(line):
            wrote[m[1]] = (int(m[2]), int(m[3]))
        elif m := INVOKE.match(line):
            try:
                outcome = json.loads(m[2])
            except json.JSONDecodeError:
                outcome = {"outcome": "unparsable", "text": m[2]}
            invokes.append((m[1], outcome))
        elif m := ROWS.match(line):
            rows[m[1]] = int(m[2])
    return wrote, invokes, rows


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL  {what}")


def run_checks(first, second):
    c = Checks()
    wrote, invokes1, rows1 = parse(first)
    _, invokes2, rows2 = parse(second)
    c.check(len(wrote) > 0, "first run: demo_data reported what it wrote")
    expected_rows = {day: r for day, (_, r) in wrote.items()}
    expected_events = len(wrote) * 3  # two part files and a _SUCCESS per day
    for label, invokes in (("first run", invokes1), ("second run", invokes2)):
        c.check(len(invokes) == expected_events,
                f"{label}: {len(invokes)} invocations, expected {expected_events}")
        for name, o in invokes:
            if "_SUCCESS" in name:
                c.check(o.get("outcome") == "skipped", f"{label}: {name} should be skipped: {o}")

    loaded_files = defaultdict(int)
    for name, o in invokes1:
        if "_SUCCESS" in name:
            continue
        c.check(o.get("outcome") in ("loaded", "up_to_date"),
                f"first run: {name} should be loaded or up_to_date: {o}")
        if o.get("outcome") == "loaded":
            c.check(o.get("table") == "demo.orders", f"first run: {name} table: {o}")
            loaded_files[o.get("partition", {}).get("order_date")] += o.get("files", 0)
    for day, (files, _) in wrote.items():
        c.check(loaded_files[day] == files,
                f"first run: {loaded_files[day]} files loaded for {day}, demo_data wrote {files}")

    for name, o in invokes2:
        if "_SUCCESS" not in name:
            c.check(o.get("outcome") == "up_to_date", f"second run: {name} should be up_to_date: {o}")

    c.check(rows1 == expected_rows, f"first run rows {rows1} != written {expected_rows}")
    c.check(rows2 == expected_rows, f"second run rows {rows2} != written {expected_rows}")
    print(f"demo check: {c.passed} passed, {c.failed} failed")
    return c.failed == 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(0 if run_checks(sys.argv[1], sys.argv[2]) else 1)
