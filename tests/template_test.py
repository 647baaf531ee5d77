"""Asserts what template.yaml and samconfig.toml promise (issue 11, issue 12 item 2),
by parsing them: cfn-lint and `sam validate --lint` check the syntax, this checks the
intent. Each check names what broke.

    .local/venv/bin/python tests/template_test.py [template.yaml [samconfig.toml]]
"""

import json
import re
import sys
import tomllib

import yaml


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags: !Ref X -> {"Ref": "X"}, !If [...] ->
    {"Fn::If": [...]}, !GetAtt A.B -> {"Fn::GetAtt": ["A", "B"]}."""


def _construct(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Condition":
        return {"Condition": value}
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct)

FAILURES = []


def check(ok, what):
    if not ok:
        FAILURES.append(what)
    print(("ok    " if ok else "FAIL  ") + what)


def walk(node, path=()):
    """Yields (path, node) for every dict and list in the tree."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def statements(template):
    """The function role's statements, each with the condition guarding it (or None)."""
    policies = template["Resources"]["LoaderFunction"]["Properties"]["Policies"]
    out = []
    for policy in policies:
        for st in policy.get("Statement", []):
            if isinstance(st, dict) and "Fn::If" in st:
                cond, then, _else = st["Fn::If"]
                out.append((cond, then))
            else:
                out.append((None, st))
    return out


def actions(st):
    a = st.get("Action", [])
    return [a] if isinstance(a, str) else a


def main():
    template_path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    samconfig_path = sys.argv[2] if len(sys.argv) > 2 else "samconfig.toml"
    with open(template_path, encoding="utf-8") as f:
        t = yaml.load(f, Loader=CfnLoader)
    params, res, cond, rules = t["Parameters"], t["Resources"], t["Conditions"], t["Rules"]

    # Item 1: build and deploy read one Architecture.
    with open(samconfig_path, "rb") as f:
        sam = tomllib.load(f)["default"]
    glob = sam.get("global", {}).get("parameters", {}).get("parameter_overrides", "")
    check("Architecture=" in glob,
          "samconfig: Architecture is in [default.global.parameters] parameter_overrides")
    for section in ("build", "deploy"):
        own = sam.get(section, {}).get("parameters", {}).get("parameter_overrides", "")
        check("Architecture=" not in own,
              f"samconfig: [default.{section}.parameters] does not override Architecture")
    # Item 2: the beta switch for rust-cargolambda.
    check(sam.get("build", {}).get("parameters", {}).get("beta_features") is True,
          "samconfig: [default.build.parameters] beta_features = true")

    # Item 5: no Data API grant on every workgroup; a Rule requires the id.
    text = open(template_path, encoding="utf-8").read()
    check("workgroup/*" not in text and '"*"]' not in text.replace(" ", ""),
          "template: no workgroup/* resource")
    wg_rule = rules.get("WorkgroupNeedsId", {})
    check(wg_rule.get("RuleCondition") == {"Fn::Not": [{"Fn::Equals": [{"Ref": "WorkgroupName"}, ""]}]}
          and any(a.get("Assert") == {"Fn::Not": [{"Fn::Equals": [{"Ref": "WorkgroupId"}, ""]}]}
                  for a in wg_rule.get("Assertions", [])),
          "template: Rule WorkgroupNeedsId asserts WorkgroupId when WorkgroupName is set")
    sts = statements(t)
    for c, st in sts:
        for r in (st.get("Resource") if isinstance(st.get("Resource"), list) else [st.get("Resource")]):
            if st.get("Sid") in ("FollowOwnStatements",):
                continue
            check(r != "*", f"template: statement {st.get('Sid')} names its resources")

    # Item 6: routes from SSM or S3, each with exactly its IAM permission.
    env = res["LoaderFunction"]["Properties"]["Environment"]["Variables"]
    check(env.get("LOADER_CONFIG_SSM", {}).get("Fn::If", [None])[0] == "RoutesFromSsm",
          "template: LOADER_CONFIG_SSM only with LoaderConfigParameterName")
    check(env.get("LOADER_CONFIG_S3", {}).get("Fn::If", [None])[0] == "RoutesFromS3",
          "template: LOADER_CONFIG_S3 only with LoaderConfigS3Url")
    check(env.get("LOADER_CONFIG", {}).get("Fn::If", [None])[0] == "RoutesInline",
          "template: inline LOADER_CONFIG only when no other source is set")
    by_action = {}
    for c, st in sts:
        for a in actions(st):
            by_action.setdefault(a, []).append((c, st))
    check([c for c, _ in by_action.get("ssm:GetParameter", [])] == ["RoutesFromSsm"],
          "template: ssm:GetParameter only under RoutesFromSsm")
    check(sorted([str(c) for c, _ in by_action.get("s3:GetObject", [])]) == ["None", "RoutesFromS3"],
          "template: s3:GetObject under RoutesFromS3 and, for Parquet footers, on the watched prefix")
    footers = [st for c, st in by_action.get("s3:GetObject", []) if c is None]
    check(len(footers) == 1 and footers[0].get("Sid") == "ReadParquetFooters"
          and "${WatchedPrefix}*" in json.dumps(footers[0].get("Resource")),
          "template: the footer reads are limited to the watched prefix")

    # Item 4: loaderctl doctor reads the buckets' Region with the function's role:
    # s3:GetBucketLocation on the data and manifest buckets only, always granted.
    loc = by_action.get("s3:GetBucketLocation", [])
    check(len(loc) == 1 and loc[0][0] is None,
          "template: s3:GetBucketLocation granted once, unconditionally (loaderctl doctor's Region check)")
    if loc:
        resources = loc[0][1].get("Resource", [])
        text_of = repr(resources)
        check(isinstance(resources, list) and len(resources) == 2
              and "DataBucket" in text_of and "ExistingBucketName" in text_of
              and "ManifestBucketName" in text_of and "*" not in text_of.replace("${", ""),
              "template: s3:GetBucketLocation only on the data bucket and the manifest bucket")

    # Item 7: manifests expire when the stack creates the bucket.
    lc = res["DataBucket"]["Properties"].get("LifecycleConfiguration", {})
    rule_if = lc.get("Fn::If", [None, {}, None])
    rules_ = rule_if[1].get("Rules", []) if isinstance(rule_if[1], dict) else []
    check(rule_if[0] == "ExpireManifestsInCreatedBucket" and any(
        r.get("Prefix") == {"Ref": "ManifestKeyPrefix"}
        and r.get("ExpirationInDays") == {"Ref": "ManifestRetentionDays"}
        and r.get("Status") == "Enabled" for r in rules_),
          "template: lifecycle rule expires the manifest prefix in a created bucket")

    # Item 8: KMS only with the key, each action through its service; full secret ARN.
    kms = [(c, st) for c, st in sts if any(a.startswith("kms:") for a in actions(st))]
    check(len(kms) >= 2, "template: KMS statements exist")
    for c, st in kms:
        implies_key = c == "HasKmsKey" or (
            c in cond and {"Condition": "HasKmsKey"} in cond[c].get("Fn::And", []))
        check(implies_key, f"template: KMS statement {st.get('Sid')} only with KmsKeyArn (condition {c})")
        check(st.get("Resource") == {"Ref": "KmsKeyArn"}, f"template: {st.get('Sid')} names the key only")
        check("kms:ViaService" in st.get("Condition", {}).get("StringEquals", {}),
              f"template: {st.get('Sid')} is limited by kms:ViaService")
    check([a for _, st in kms for a in actions(st)].count("kms:GenerateDataKey") == 1,
          "template: kms:GenerateDataKey for manifests")
    secret_pattern = re.compile(params["SecretArn"]["AllowedPattern"])
    check(bool(secret_pattern.match("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-a1B2c3")),
          "template: SecretArn accepts a full ARN")
    check(not secret_pattern.match("arn:aws:secretsmanager:us-east-1:123456789012:secret:db"),
          "template: SecretArn rejects a partial ARN")

    # Item 9: reserved concurrency; alarms on what needs a human, not Lambda Errors.
    check("ReservedConcurrency" in params and
          res["LoaderFunction"]["Properties"].get("ReservedConcurrentExecutions", {}).get("Fn::If", [None])[0]
          == "HasReservedConcurrency", "template: ReservedConcurrency parameter sets the function's")
    alarms = {k: v for k, v in res.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    check(not any(a["Properties"].get("Namespace") == "AWS/Lambda"
                  and a["Properties"].get("MetricName") == "Errors" for a in alarms.values()),
          "template: no alarm on AWS/Lambda Errors (a busy lease would page)")
    check(any(a["Properties"].get("MetricName") == "PermanentErrors" for a in alarms.values()),
          "template: an alarm on PermanentErrors (the loader's metric of Permanent.* errors)")
    for q in ("FailureQueue", "RuleDeadLetterQueue", "EventDeadLetterQueue"):
        check(any(a["Properties"].get("Dimensions", [{}])[0].get("Value") == {"Fn::GetAtt": [q, "QueueName"]}
                  for a in alarms.values()), f"template: an alarm watches {q}")

    # Region (item 4): said where the user picks bucket and warehouse.
    for p in ("ExistingBucketName", "WorkgroupName", "ClusterIdentifier"):
        check("Region" in params[p]["Description"], f"template: {p} says it must be in the stack's Region")

    # Issue 12 item 2: the SQS option.
    check(cond.get("UseSqsBatching") == {"Fn::Equals": [{"Ref": "EventBatching"}, "sqs"]},
          "template: EventBatching=sqs is the UseSqsBatching condition")
    esm = res.get("EventQueueMapping", {})
    props = esm.get("Properties", {})
    check(esm.get("Condition") == "UseSqsBatching", "template: event source mapping only with sqs")
    check(props.get("FunctionResponseTypes") == ["ReportBatchItemFailures"],
          "template: mapping reports batch item failures")
    check("MaximumBatchingWindowInSeconds" in props and "MaximumConcurrency" in props.get("ScalingConfig", {}),
          "template: mapping has a batching window and maximum concurrency")
    q = res.get("EventQueue", {}).get("Properties", {})
    check(q.get("RedrivePolicy", {}).get("deadLetterTargetArn") == {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]},
          "template: event queue redrives to its dead-letter queue")
    vis = q.get("VisibilityTimeout", {}).get("Fn::FindInMap", [])
    table = t.get("Mappings", {}).get(vis[0] if vis else "", {})
    allowed = params["Timeout"].get("AllowedValues", [])
    check(bool(allowed) and all(table.get(str(v), {}).get("Seconds", 0) >= 6 * v for v in allowed),
          "template: event queue visibility >= 6 x Timeout for every allowed Timeout")
    pol = res.get("EventQueuePolicy", {}).get("Properties", {}).get("PolicyDocument", {}).get("Statement", [])
    check(any(s.get("Principal") == {"Service": "events.amazonaws.com"}
              and s.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn")
              == {"Fn::GetAtt": ["ObjectCreatedRule", "Arn"]} for s in pol),
          "template: only the rule may send to the event queue")
    target = res["ObjectCreatedRule"]["Properties"]["Targets"][0]["Arn"]
    check(target.get("Fn::If", [None])[0] == "UseSqsBatching",
          "template: the rule targets the queue with sqs, the function otherwise")
    check(res["RuleInvokePermission"].get("Condition") == "DirectInvoke",
          "template: the rule may invoke the function only without the queue")

    # Issue 12 item 3: the sweep schedule with its fixed payload.
    sweep = res["LoaderFunction"]["Properties"].get("Events", {}).get("Sweep", {})
    check(sweep.get("Type") == "Schedule"
          and sweep["Properties"].get("Input") == '{"partition-loader": "sweep"}'
          and "SweepRateMinutes" in str(sweep["Properties"].get("Schedule")),
          "template: Sweep schedule sends {\"partition-loader\": \"sweep\"} at SweepRateMinutes")
    check(params.get("SweepRateMinutes", {}).get("Default") == 15, "template: sweep every 15 minutes by default")

    print(f"\n{len(FAILURES)} failed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
