"""The EventBridge rule in template.yaml, evaluated by moto's EventBridge against
the sample events in events/: the ones meant to wake the function are delivered,
the others are not.

Run with .local/venv's python: `.local/venv/bin/python tests/eventbridge_pattern.py`.
"""

import copy
import json
import os
import sys
from pathlib import Path

import boto3
import yaml
from moto import mock_aws

# This test runs moto in-process. The local stack's `env` exports service endpoints
# (S3, SQS, SSM, Data API) for the moto server; boto3 would send those services there,
# out of the in-process mock, and the rule's SQS target would not exist in the mock.
for _name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
    del os.environ[_name]

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "lake"  # the bucket of the sample events, deployed as ExistingBucketName

WAKES = ["parquet-partition", "multi-column-partition", "form-encoded-key",
         "marker-success", "multipart-upload"]
IGNORED = ["unrouted-key", "malformed"]


class Tagged:
    """A CloudFormation short-form intrinsic (!Ref, !If, ...) as written."""

    def __init__(self, fn, value):
        self.fn, self.value = fn, value


def load_template(path):
    loader = type("CfnLoader", (yaml.SafeLoader,), {})

    def construct(ld, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = ld.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = ld.construct_sequence(node, deep=True)
        else:
            value = ld.construct_mapping(node, deep=True)
        return Tagged(suffix, value)

    loader.add_multi_constructor("!", construct)
    return yaml.load(path.read_text(), Loader=loader)


class Resolver:
    """Evaluates the intrinsics the rule's pattern uses, with given parameters."""

    def __init__(self, template, overrides):
        self.template = template
        self.params = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}
        self.params.update(overrides)

    def condition(self, name):
        return self.resolve(self.template["Conditions"][name])

    def resolve(self, node):
        if isinstance(node, list):
            return [self.resolve(n) for n in node]
        if isinstance(node, dict):
            return {k: self.resolve(v) for k, v in node.items()}
        if not isinstance(node, Tagged):
            return node
        fn, v = node.fn, node.value
        if fn == "Ref":
            if v not in self.params:
                raise KeyError(f"!Ref {v}: not a parameter this check can resolve")
            return self.params[v]
        if fn == "If":
            return self.resolve(v[1] if self.condition(v[0]) else v[2])
        if fn == "Condition":
            return self.condition(v)
        if fn == "Equals":
            a, b = self.resolve(v)
            return a == b
        if fn == "Not":
            return not self.resolve(v[0])
        if fn == "And":
            return all(self.resolve(x) for x in v)
        if fn == "Or":
            return any(self.resolve(x) for x in v)
        raise KeyError(f"!{fn} is not handled by this check")


def rule_pattern(overrides):
    template = load_template(ROOT / "template.yaml")
    # The S3 rule; the other (StatementStatusRule, `aws.redshift-data` completion
    # events of issue 21) never sees an S3 event.
    rules = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Events::Rule"
        and "aws.s3" in r["Properties"]["EventPattern"].get("source", [])
    ]
    assert len(rules) == 1, f"expected one AWS::Events::Rule on aws.s3, found {len(rules)}"
    return Resolver(template, overrides).resolve(rules[0]["Properties"]["EventPattern"])


def variants():
    """(name, event, should wake) for every sample plus hand-made near misses."""
    events = {p.stem: json.loads(p.read_text()) for p in (ROOT / "events").glob("*.json")}
    missing = set(WAKES + IGNORED) - set(events)
    assert not missing, f"missing sample events: {sorted(missing)}"
    cases = [(n, events[n], True) for n in WAKES] + [(n, events[n], False) for n in IGNORED]
    base = events["parquet-partition"]
    other_bucket = copy.deepcopy(base)
    other_bucket["detail"]["bucket"]["name"] = "another-bucket"
    other_source = copy.deepcopy(base)
    other_source["source"] = "custom.lake"
    deleted = copy.deepcopy(base)
    deleted["detail-type"] = "Object Deleted"
    nested_prefix = copy.deepcopy(base)
    nested_prefix["detail"]["object"]["key"] = "archive/" + base["detail"]["object"]["key"]
    cases += [("other-bucket", other_bucket, False), ("other-source", other_source, False),
              ("object-deleted", deleted, False), ("prefix-not-at-start", nested_prefix, False)]
    return cases


@mock_aws
def run():
    pattern = rule_pattern({"ExistingBucketName": BUCKET})
    assert pattern["detail"]["bucket"]["name"] == [BUCKET], pattern
    assert pattern["detail"]["object"]["key"] == [{"prefix": "transformed/"}], pattern

    events = boto3.client("events", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="loader")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="object-created", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="object-created", Targets=[{"Id": "loader", "Arn": queue_arn}])

    passed = failed = 0
    for name, event, should_wake in variants():
        entry = {"Source": event["source"], "DetailType": event["detail-type"],
                 "Detail": json.dumps(event["detail"]), "Resources": event["resources"]}
        result = events.put_events(Entries=[entry])
        assert result["FailedEntryCount"] == 0, result
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        messages = received.get("Messages", [])
        for m in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        woke = len(messages) == 1
        if woke and json.loads(messages[0]["Body"])["detail"] != event["detail"]:
            woke = False
        if woke == should_wake:
            passed += 1
            print(f"  pass  {name}: {'delivered' if woke else 'not delivered'}")
        else:
            failed += 1
            print(f"  FAIL  {name}: expected {'delivery' if should_wake else 'no delivery'}, "
                  f"got {len(messages)} message(s)")
    print(f"eventbridge pattern: {passed} passed, {failed} failed")
    return failed == 0


if __name__ == "__main__":
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.exit(0 if run() else 1)
