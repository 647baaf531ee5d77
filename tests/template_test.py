"""Asserts what template.yaml and samconfig.toml promise (issue 11, issue 12 item 2),
by parsing them: cfn-lint and `sam validate --lint` check the syntax, this checks the
intent. Each check names what broke.

    .local/venv/bin/python tests/template_test.py [template.yaml [samconfig.toml]]
"""

import json
import pathlib
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
TEMPLATE_PATH = "template.yaml"


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


def target_arn(res):
    return res["ObjectCreatedRule"]["Properties"]["Targets"][0]["Arn"]


def statements(template):
    """The function role's statements, each with the condition guarding it (or None)."""
    res = template["Resources"]
    if "LoaderFunctionRole" in res:
        documents = [p["PolicyDocument"] for p in res["LoaderFunctionRole"]["Properties"]["Policies"]]
    else:  # SAM's generated role (before issue 19), so that an old template fails by name
        documents = res["LoaderFunction"]["Properties"].get("Policies", [])
    out = []
    for policy in documents:
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
    global TEMPLATE_PATH
    template_path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    TEMPLATE_PATH = template_path
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
            # Neither takes a resource ARN (statement actions, and ListStatements,
            # which lists the caller's role's own statements).
            if st.get("Sid") in ("FollowOwnStatements", "ListOwnStatements"):
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
    check(sorted([str(c) for c, _ in by_action.get("s3:GetObject", [])]) == ["None", "None", "None", "RoutesFromS3"],
          "template: s3:GetObject under RoutesFromS3 and, for Parquet footers, the sweep watermark and the S3 gates, unconditionally")
    footers = [st for c, st in by_action.get("s3:GetObject", [])
               if c is None and st.get("Sid") not in ("ReadSweepWatermark", "S3GateObjects")]
    check(len(footers) == 1 and footers[0].get("Sid") == "ReadParquetFooters"
          and "${WatchedPrefix}*" in json.dumps(footers[0].get("Resource")),
          "template: the footer reads are limited to the watched prefix")
    # Issue 21 item 6: the sweep's watermark, GetObject on that one key only (its
    # PutObject is WriteManifests', under the manifest prefix).
    marks = [st for c, st in by_action.get("s3:GetObject", [])
             if c is None and st.get("Sid") == "ReadSweepWatermark"]
    mark_res = json.dumps(marks[0].get("Resource")) if marks else ""
    check(len(marks) == 1 and actions(marks[0]) == ["s3:GetObject"]
          and "${ManifestKeyPrefix}sweep-watermark.json" in mark_res
          and "*" not in mark_res.replace("${", ""),
          "template: s3:GetObject on the sweep watermark's key only")
    puts = [st for c, st in by_action.get("s3:PutObject", []) if c is None]
    check(any("${ManifestKeyPrefix}*" in json.dumps(st.get("Resource")) for st in puts),
          "template: the watermark's PutObject is the manifest prefix's")

    # Issue 21 item 4: the S3 gate's objects, read, deleted and listed under
    # <prefix>gates/ only; no other DeleteObject, no other ListBucket on the manifests.
    gates = [st for c, st in sts if st.get("Sid") == "S3GateObjects"]
    gate_res = json.dumps(gates[0].get("Resource")) if gates else ""
    check(len(gates) == 1 and sorted(actions(gates[0])) == ["s3:DeleteObject", "s3:GetObject"]
          and "${ManifestKeyPrefix}gates/*" in gate_res,
          "template: the S3 gate's GetObject and DeleteObject under <prefix>gates/ only")
    check([st.get("Sid") for c, st in by_action.get("s3:DeleteObject", [])] == ["S3GateObjects"],
          "template: s3:DeleteObject only on the S3 gate's objects")
    gate_lists = [st for c, st in by_action.get("s3:ListBucket", []) if st.get("Sid") == "ListS3Gates"]
    check(len(gate_lists) == 1
          and json.dumps(gate_lists[0].get("Condition")) ==
          json.dumps({"StringLike": {"s3:prefix": {"Fn::Sub": "${ManifestKeyPrefix}gates/*"}}}),
          "template: s3:ListBucket on the manifest bucket only under <prefix>gates/")

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
    quarantined = [a for a in alarms.values() if a["Properties"].get("MetricName") == "QuarantinedFiles"]
    check(len(quarantined) == 1
          and quarantined[0]["Properties"].get("Namespace") == {"Ref": "MetricsNamespace"}
          and quarantined[0]["Properties"].get("Statistic") == "Sum"
          and quarantined[0]["Properties"].get("Threshold") == 1
          and "Dimensions" not in quarantined[0]["Properties"]
          and "AlarmActions" in quarantined[0]["Properties"],
          "template: an alarm on QuarantinedFiles (any table, a file Redshift refused)")
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
              == [{"Fn::GetAtt": ["ObjectCreatedRule", "Arn"]},
                  {"Fn::GetAtt": ["StatementStatusRule", "Arn"]}] for s in pol),
          "template: only the rules may send to the event queue")
    # Issue 21.2: the load batches' status changes reach the function or the queue.
    status = res.get("StatementStatusRule", {}).get("Properties", {})
    pattern = status.get("EventPattern", {})
    check(pattern.get("source") == ["aws.redshift-data"]
          and pattern.get("detail-type") == ["Redshift Data Statement Status Change"]
          and pattern.get("detail", {}).get("statementName") == [{"prefix": "partition-loader:"}],
          "template: the status-change rule matches the loader's statement names")
    check(status.get("Targets", [{}])[0].get("Arn") == target_arn(res),
          "template: status changes go where Object Created events go")
    check(res.get("StatementRuleInvokePermission", {}).get("Condition") == "DirectInvoke",
          "template: the status-change rule may invoke the function only without the queue")
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

    # Issue 19 (first deploy, second pass).
    issue_19(t, params, res, cond, rules, sts)

    print(f"\n{len(FAILURES)} failed")
    return 1 if FAILURES else 0


def evaluate(node, values):
    """Evaluates a Rule assertion with parameter values (strings, as CloudFormation
    passes them to Rules): Fn::Or/And/Not/Equals/Contains and Ref."""
    if isinstance(node, dict):
        (k, v), = node.items()
        if k == "Ref":
            return values[v]
        args = [evaluate(a, values) for a in v] if isinstance(v, list) else evaluate(v, values)
        if k == "Fn::Or":
            return any(args)
        if k == "Fn::And":
            return all(args)
        if k == "Fn::Not":
            return not args[0]
        if k == "Fn::Equals":
            return args[0] == args[1]
        if k == "Fn::Contains":
            return args[1] in args[0]
        raise ValueError(f"rule function {k} not evaluated here")
    if isinstance(node, list):
        return [evaluate(a, values) for a in node]
    return node


def issue_19(t, params, res, cond, rules, sts):
    data_bucket = {"Fn::If": ["CreateBucket", {"Ref": "DataBucket"}, {"Ref": "ExistingBucketName"}]}
    fn = res["LoaderFunction"]["Properties"]
    env = fn["Environment"]["Variables"]

    # Item 2: the sweep lists the stack's data bucket for routes that name none (the
    # default route has no bucket: a created bucket's name exists only after deploy).
    check(env.get("SWEEP_BUCKET") == data_bucket,
          "template: SWEEP_BUCKET is the created or watched bucket")
    check("bucket" not in params["LoaderConfig"]["Default"],
          "template: the default route names no bucket (SWEEP_BUCKET covers it)")

    # Item 5: a SecureString routes parameter under a customer managed key.
    dec = [(c, st) for c, st in sts if st.get("Sid") == "DecryptRoutesParameter"]
    ok = len(dec) == 1
    if ok:
        c, st = dec[0]
        ok = (set(map(str, cond.get(c, {}).get("Fn::And", []))) ==
              {str({"Condition": "HasKmsKey"}), str({"Condition": "RoutesFromSsm"})}
              and actions(st) == ["kms:Decrypt"] and st.get("Resource") == {"Ref": "KmsKeyArn"}
              and st.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
              == {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"})
    check(ok, "template: kms:Decrypt through ssm.<region> only with KmsKeyArn and a routes parameter")

    # Item 7: BatchSize above 10 needs a batching window of at least 1 second.
    rule = rules.get("LargeBatchNeedsWindow", {})
    check(rule.get("RuleCondition") == {"Fn::Equals": [{"Ref": "EventBatching"}, "sqs"]},
          "template: Rule LargeBatchNeedsWindow applies with EventBatching=sqs")
    asserts = rule.get("Assertions", [{}])
    cases = {("100", "0"): False, ("11", "0"): False, ("100", "1"): True, ("10", "0"): True,
             ("1", "0"): True, ("10000", "300"): True}
    for (size, window), want in cases.items():
        try:
            got = all(evaluate(a["Assert"], {"BatchSize": size, "BatchWindowSeconds": window})
                      for a in asserts)
        except (KeyError, ValueError) as e:
            got = f"error {e}"
        check(got == want, f"template: BatchSize={size} BatchWindowSeconds={window} "
                           f"{'passes' if want else 'is refused'} (got {got})")
    check(all("BatchWindowSeconds" in a.get("AssertDescription", "") for a in asserts),
          "template: the batch-window Rule's message names BatchWindowSeconds")
    check(params["BatchSize"]["Default"] <= 10 or params["BatchWindowSeconds"]["Default"] >= 1,
          "template: the defaults pass the batch-window Rule")

    # Item 8: an alarm that sees a function which cannot start, within minutes.
    age = [a for a in res.values() if a["Type"] == "AWS::CloudWatch::Alarm"
           and a["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"]
    check(len(age) == 1 and age[0].get("Condition") == "UseSqsBatching"
          and age[0]["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["EventQueue", "QueueName"]}
          and age[0]["Properties"]["Threshold"] <= 900
          and age[0]["Properties"]["Period"] * age[0]["Properties"]["EvaluationPeriods"] <= 900
          and "AlarmActions" in age[0]["Properties"],
          "template: an alarm on the event queue's oldest message (<= 15 minutes)")

    # Item 11: TLS only on the created bucket.
    bp = res.get("DataBucketPolicy", {})
    sts_ = bp.get("Properties", {}).get("PolicyDocument", {}).get("Statement", [])
    check(bp.get("Condition") == "CreateBucket"
          and bp["Properties"].get("Bucket") == {"Ref": "DataBucket"}
          and any(s.get("Effect") == "Deny" and s.get("Principal") == "*"
                  and s.get("Action") == "s3:*"
                  and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
                  and {"Fn::GetAtt": ["DataBucket", "Arn"]} in s.get("Resource", [])
                  and {"Fn::Sub": "${DataBucket.Arn}/*"} in s.get("Resource", [])
                  for s in sts_),
          "template: the created bucket denies requests without TLS (aws:SecureTransport)")
    # Item 11: logs only to the function's own log group (SAM's generated role would add
    # AWSLambdaBasicExecutionRole: logs on every log group).
    check(fn.get("Role") == {"Fn::GetAtt": ["LoaderFunctionRole", "Arn"]} and "Policies" not in fn,
          "template: the function uses its own role (no SAM-generated one)")
    role = res.get("LoaderFunctionRole", {}).get("Properties", {})
    check(not role.get("ManagedPolicyArns"), "template: the function role has no managed policies")
    logs = [st for _, st in sts if any(a.startswith("logs:") for a in actions(st))]
    check(len(logs) == 1 and logs[0].get("Resource") == {"Fn::GetAtt": ["LoaderLogGroup", "Arn"]}
          and set(actions(logs[0])) == {"logs:CreateLogStream", "logs:PutLogEvents"},
          "template: log permissions only on the function's log group")
    check(fn.get("LoggingConfig", {}).get("LogGroup") == {"Ref": "LoaderLogGroup"},
          "template: the function logs to that log group")
    # The on-failure destination and the schedule still work with our own role.
    check(any(actions(st) == ["sqs:SendMessage"]
              and st.get("Resource") == {"Fn::GetAtt": ["FailureQueue", "Arn"]} for _, st in sts),
          "template: the role may send to the on-failure queue")

    # Items 4 and 11: README's COPY-role policy (First deploy, step 8) reads the watched
    # prefix and the manifest prefix (a separate manifest bucket included), and lists
    # each bucket only under its prefix.
    readme = pathlib.Path(TEMPLATE_PATH).resolve().parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    step = text.split("8. **COPY role reads the data and the manifests**", 1)[-1].split("\n9. ", 1)[0]
    found = re.search(r"--policy-document '(\{.*?\})'", step, re.S)
    policy = None
    if found:
        try:
            policy = json.loads(found.group(1))
        except json.JSONDecodeError as e:
            check(False, f"README: step 8's policy is JSON ({e})")
    check(policy is not None, "README: step 8 gives the COPY role's policy document")
    if policy:
        get = [r for s in policy["Statement"] if s.get("Action") in ("s3:GetObject", ["s3:GetObject"])
               for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])]
        check(sorted(get) == ["arn:aws:s3:::B/P*", "arn:aws:s3:::M/MP*"],
              f"README: s3:GetObject on the watched prefix and the manifest prefix only ({get})")
        lists = {s["Resource"]: s.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
                 for s in policy["Statement"] if s.get("Action") in ("s3:ListBucket", ["s3:ListBucket"])}
        check(lists == {"arn:aws:s3:::B": ["P*"], "arn:aws:s3:::M": ["MP*"]},
              f"README: s3:ListBucket on each bucket only under its prefix ({lists})")
        check(all(s.get("Effect") == "Allow" and "*" not in str(s.get("Action")) for s in policy["Statement"]),
              "README: the COPY role's policy grants no wildcard action")
    check("modify-cluster-iam-roles" in text, "README: step 4 shows the provisioned cluster's command")

    # Cosmetic: a Serverless COPY role is associated with the namespace.
    check("namespace" in params["CopyIamRoleArn"]["Description"],
          "template: CopyIamRoleArn says namespace")


if __name__ == "__main__":
    sys.exit(main())
