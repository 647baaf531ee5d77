//! The operator's CLI, run as the built binary against the local stack.

mod common;

use std::process::Output;

use common::*;
use serde_json::Value;

/// loaderctl as the function's user (the loader's own configuration).
async fn ctl(stack: &Stack, args: &[&str]) -> Output {
    run_ctl(stack.env(&stack.orders_route("")), args).await
}

/// loaderctl as the operator (the admin, who owns the schemas).
async fn admin_ctl(stack: &Stack, args: &[&str]) -> Output {
    run_ctl(stack.admin_env(&stack.orders_route("")), args).await
}

async fn run_ctl(env: Vec<(String, String)>, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_loaderctl"));
    cmd.args(args)
        .env_remove("LOADER_CONFIG_FILE")
        .env_remove("REDSHIFT_CLUSTER_ID")
        .env_remove("REDSHIFT_DB_USER")
        .env_remove("REDSHIFT_SECRET_ARN")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run loaderctl")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn loaderctl_commands() {
    let stack = Stack::new().await;
    // The function's user may not create the schema: the operator does, and grants.
    let out = ctl(&stack, &["bootstrap"]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        describe(&out)
    );
    for _ in 0..2 {
        let out = admin_ctl(&stack, &["bootstrap", "--grant-to", &stack.db_user]).await;
        assert!(
            out.status.success(),
            "bootstrap is idempotent: {}",
            describe(&out)
        );
        let out = lines(&out);
        assert_eq!(out[1]["granted_to"], stack.db_user.as_str());
        let table_grants = out[2]["run_as_table_owner"].to_string();
        assert!(
            table_grants.contains(&format!(
                "GRANT INSERT, SELECT ON \\\"{}\\\".\\\"orders\\\"",
                stack.schema
            )),
            "{table_grants}"
        );
    }
    let t = stack.orders_table().await;

    // replay: one outcome line per event, up_to_date the second time.
    let key = "orders/order_date=2024-05-28/part-0.parquet";
    let size = stack.put_parquet(key, 0..4).await;
    let dir = std::env::temp_dir().join(format!("loaderctl-{}", stack.suffix));
    std::fs::create_dir_all(&dir).unwrap();
    let event_file = dir.join("event.json");
    let marker = stack.event("orders/order_date=2024-05-28/_SUCCESS", 0);
    std::fs::write(
        &event_file,
        format!("{}\n{}\n", stack.event(key, size), marker),
    )
    .unwrap();
    let file = event_file.to_str().unwrap();
    let out = ctl(&stack, &["replay", file]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let outcomes = lines(&out);
    assert_eq!(outcomes.len(), 2, "{}", describe(&out));
    assert_eq!(outcomes[0]["outcome"], "loaded");
    assert_eq!(outcomes[0]["files"], 1);
    assert_eq!(outcomes[0]["partition"]["order_date"], "2024-05-28");
    assert_eq!(outcomes[1]["outcome"], "skipped");
    let out = ctl(&stack, &["replay", file]).await;
    assert_eq!(
        lines(&out)[0]["outcome"],
        "up_to_date",
        "{}",
        describe(&out)
    );
    assert_eq!(stack.rows(&t).await, 4);

    // A malformed event makes replay fail, after printing its error line.
    let bad_file = dir.join("bad.json");
    std::fs::write(
        &bad_file,
        r#"{"source": "aws.s3", "detail-type": "Object Created", "detail": {}}"#,
    )
    .unwrap();
    let out = ctl(&stack, &["replay", bad_file.to_str().unwrap()]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    let error = &lines(&out)[0];
    assert_eq!(error["outcome"], "error");
    assert_eq!(error["error_type"], "Permanent.BadEvent");

    // ledger
    let out = ctl(&stack, &["ledger", &t]).await;
    let ledger = lines(&out);
    assert_eq!(ledger.len(), 1, "{}", describe(&out));
    assert_eq!(ledger[0]["s3_url"], format!("s3://{}/{key}", stack.bucket));
    assert_eq!(ledger[0]["partition"], "order_date=2024-05-28/");
    // Another day, and the same day with a trailing blank (Redshift's `=` ignores it).
    for other in ["order_date=2024-05-27/", "order_date=2024-05-28/ "] {
        let out = ctl(&stack, &["ledger", &t, other]).await;
        assert!(
            out.status.success() && lines(&out).is_empty(),
            "{other:?}: {}",
            describe(&out)
        );
    }
    let out = ctl(&stack, &["ledger", &t, "order_date=2024-05-28/"]).await;
    assert_eq!(lines(&out).len(), 1, "{}", describe(&out));

    // backfill: files that were there before (no events), partition by partition.
    for day in ["2024-05-26", "2024-05-27"] {
        for i in 0..2 {
            stack
                .put_parquet(
                    &format!("orders/order_date={day}/part-{i}.parquet"),
                    i * 10..i * 10 + 3,
                )
                .await;
        }
    }
    let url = format!("s3://{}/orders/", stack.bucket);
    let out = ctl(&stack, &["backfill", &url]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let results = lines(&out);
    let loaded: Vec<_> = results
        .iter()
        .filter(|r| r["outcome"] == "loaded")
        .collect();
    assert_eq!(loaded.len(), 2, "{}", describe(&out));
    assert!(loaded.iter().all(|r| r["files"] == 2));
    assert_eq!(
        results
            .iter()
            .filter(|r| r["outcome"] == "up_to_date")
            .count(),
        1
    );
    assert_eq!(stack.rows(&t).await, 4 + 12);
    assert_eq!(stack.ledger_rows(&t).await, 5);

    // locks / unlock: a live lease is refused without --force.
    stack.insert_lease(&t, "crashed-run", 600).await;
    let out = ctl(&stack, &["locks"]).await;
    let locks = lines(&out);
    assert_eq!(locks.len(), 1, "{}", describe(&out));
    assert_eq!(locks[0]["holder"], "crashed-run");
    assert_eq!(locks[0]["state"], "live");
    let out = ctl(&stack, &["unlock", &t]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("crashed-run"));
    assert_eq!(stack.lease_rows(&t).await, 1);
    let out = ctl(&stack, &["unlock", &t, "--force"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stack.lease_rows(&t).await, 0);

    // An expired lease needs no --force.
    stack.insert_lease(&t, "old-run", -5).await;
    assert_eq!(lines(&ctl(&stack, &["locks"]).await)[0]["state"], "expired");
    let out = ctl(&stack, &["unlock", &t]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stack.lease_rows(&t).await, 0);

    let out = ctl(&stack, &["unlock", "not-a-table"]).await;
    assert!(!out.status.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn loaderctl_names_a_bad_variable() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loaderctl"))
        .arg("locks")
        .env_clear()
        .env("REDSHIFT_WORKGROUP", "wg")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDSHIFT_DATABASE"));
}

/// `loaderctl` prints an outcome exactly as the Lambda returns it: the partition in the
/// route's column order (here not alphabetical), a NULL partition value as `null`.
#[tokio::test]
async fn loaderctl_prints_partitions_in_route_order() {
    let stack = Stack::new().await;
    let t = stack
        .create_table(
            "regional",
            "id BIGINT, name VARCHAR(64), region VARCHAR(16), day DATE",
        )
        .await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"regional/\"\ntable = \"{t}\"\n\
         format = \"parquet\"\npartition_columns = [\"region\", {{ name = \"day\", type = \"date\" }}]\n",
        stack.bucket
    );
    stack.loader(&routes).await;
    let key = "regional/region=eu/day=__HIVE_DEFAULT_PARTITION__/part-0.parquet";
    let size = stack.put_parquet(key, 0..2).await;
    let dir = std::env::temp_dir().join(format!("loaderctl-order-{}", stack.suffix));
    std::fs::create_dir_all(&dir).unwrap();
    let event_file = dir.join("event.json");
    std::fs::write(&event_file, format!("{}\n", stack.event(key, size))).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_loaderctl"));
    cmd.args(["replay", event_file.to_str().unwrap()])
        .env_remove("LOADER_CONFIG_FILE")
        .env_remove("REDSHIFT_CLUSTER_ID")
        .env("RUST_LOG", "warn");
    for (k, v) in stack.env(&routes) {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run loaderctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#""partition":{"region":"eu","day":null}"#),
        "{}",
        describe(&out)
    );
    assert_eq!(stack.rows(&t).await, 2);
}

/// `status` and `history` after two loads, a failed COPY and a held lease.
#[tokio::test]
async fn status_and_history_report_loads_failures_and_the_lease() {
    let stack = Stack::new().await;
    let loader = stack.loader(&stack.orders_route("")).await;
    // No partition column in the table: the COPY goes straight into it, where the
    // injected fault is aimed.
    let t = stack
        .create_table("orders", "id BIGINT, name VARCHAR(64)")
        .await;
    stack
        .put_parquet(&format!("{ORDERS_DAY}/part-0.parquet"), 0..3)
        .await;
    let first = stack.orders_file("part-1.parquet", 3..7).await;
    assert_eq!(loaded_files(&handle(&loader, &first).await), 2);
    // The ledger's loaded_at has whole seconds (GETDATE()): two loads in one second
    // have no order, so the second load starts in the next second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let day2 = "orders/order_date=2024-05-29";
    let second = stack
        .parquet_event(&format!("{day2}/part-0.parquet"), 0..5)
        .await;
    assert_eq!(loaded_files(&handle(&loader, &second).await), 1);
    // A failed COPY of a third partition, recorded by the emulator in
    // sys_load_error_detail (outside the rolled-back transaction, as Redshift does).
    stack
        .fault(serde_json::json!({"fail_copies": [{"table": t, "count": 1, "message": "injected: S3 read failed"}]}))
        .await;
    let third = stack
        .parquet_event("orders/order_date=2024-05-30/part-0.parquet", 0..2)
        .await;
    assert!(handle(&loader, &third).await.is_err());
    stack.insert_lease(&t, "stuck-run", 600).await;
    // An event while the lease is held is handed to its holder: one pending wake-up.
    let fourth = stack
        .parquet_event("orders/order_date=2024-05-31/part-0.parquet", 0..2)
        .await;
    let queued = handle(&loader, &fourth).await;
    assert!(
        matches!(queued, Ok(partition_loader::Outcome::Queued { .. })),
        "{queued:?}"
    );

    let out = ctl(&stack, &["status", &t, "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failure newer than the last load: {}",
        describe(&out)
    );
    let status = lines(&out);
    assert_eq!(status.len(), 1, "{}", describe(&out));
    let s = &status[0];
    assert_eq!(s["table"], t.as_str());
    assert_eq!(s["files_total"], 3);
    assert_eq!(s["files_last_hour"], 3);
    assert_eq!(s["files_last_day"], 3);
    let last = &s["last_load"];
    assert_eq!(
        last["files"], 1,
        "the newest load is the second partition's"
    );
    assert_eq!(last["rows"], 5, "rows from sys_load_history");
    assert!(last["holder"].as_str().unwrap().starts_with("test-"));
    assert!(last["age_seconds"].as_i64().unwrap() < 120);
    let lag = s["newest_object_lag_seconds"].as_i64().expect("a lag");
    assert!((0..120).contains(&lag), "{lag}");
    assert_eq!(s["lease"]["holder"], "stuck-run");
    assert_eq!(s["lease"]["state"], "live");
    assert_eq!(s["pending_wakeups"], 1, "{}", describe(&out));
    let failures = s["recent_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{}", describe(&out));
    assert!(failures[0]["reason"]
        .as_str()
        .unwrap()
        .contains("injected: S3 read failed"));
    let manifests = format!("s3://{}/_loader/{t}/order_date=2024-05-30/", stack.bucket);
    assert!(
        failures[0]["file"]
            .as_str()
            .unwrap()
            .starts_with(&manifests),
        "{}",
        failures[0]
    );

    // The text table, for people.
    let out = ctl(&stack, &["status", &t]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("TABLE"), "{text}");
    assert!(text.contains("live stuck-run"), "{text}");
    assert!(text.contains("injected: S3 read failed"), "{text}");

    // Every table: the routes' table appears even when asked without a name.
    let out = ctl(&stack, &["status", "--json"]).await;
    assert!(
        lines(&out).iter().any(|s| s["table"] == t.as_str()),
        "{}",
        describe(&out)
    );

    let out = ctl(&stack, &["history", &t, "--json"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let loads = lines(&out);
    assert_eq!(
        loads.len(),
        2,
        "the failed load left nothing: {}",
        describe(&out)
    );
    assert_eq!(
        loads[0]["partition"], "order_date=2024-05-29/",
        "newest first"
    );
    assert_eq!(loads[0]["files"], 1);
    assert_eq!(loads[0]["rows"], 5);
    assert_eq!(loads[1]["files"], 2);
    assert_eq!(loads[1]["rows"], 7);
    assert_eq!(loads[1]["query_ids"].as_array().unwrap().len(), 1);
    assert!(loads[1]["duration_ms"].as_i64().unwrap() >= 0);
    let out = ctl(&stack, &["history", &t, "order_date=2024-05-28/", "--json"]).await;
    let loads = lines(&out);
    assert_eq!(loads.len(), 1, "{}", describe(&out));
    assert_eq!(loads[0]["rows"], 7);
    // Exact: Redshift's `=` would let a trailing blank match the partition.
    let out = ctl(
        &stack,
        &["history", &t, "order_date=2024-05-28/ ", "--json"],
    )
    .await;
    assert!(lines(&out).is_empty(), "{}", describe(&out));
    let out = ctl(&stack, &["history", &t]).await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("LOADED (UTC)"));
}

/// `backfill --dry-run` lists per partition what it would load and loads nothing;
/// the real backfill then writes one plain progress line per partition to stderr
/// (not a terminal here) and its outcomes to stdout.
#[tokio::test]
async fn backfill_dry_run_lists_and_progress_goes_to_stderr_as_lines() {
    let stack = Stack::new().await;
    let loader = stack.loader(&stack.orders_route("")).await;
    let t = stack.orders_table().await;
    let loaded = stack.orders_file("part-0.parquet", 0..3).await;
    assert_eq!(loaded_files(&handle(&loader, &loaded).await), 1);
    let new_key = format!("{ORDERS_DAY}/part-1.parquet");
    let new_size = stack.put_parquet(&new_key, 3..5).await;
    let other = "orders/order_date=2024-05-29";
    for i in 0..2 {
        stack
            .put_parquet(&format!("{other}/part-{i}.parquet"), 0..2)
            .await;
    }
    stack.put(&format!("{other}/_SUCCESS"), Vec::new()).await;
    let url = format!("s3://{}/orders/", stack.bucket);

    let out = ctl(&stack, &["backfill", &url, "--dry-run"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let plan = lines(&out);
    assert_eq!(plan.len(), 2, "{}", describe(&out));
    assert!(plan
        .iter()
        .all(|p| p["dry_run"] == true && p["table"] == t.as_str()));
    assert_eq!(plan[0]["partition_path"], "order_date=2024-05-28/");
    assert_eq!(plan[0]["action"], "load");
    assert_eq!(
        plan[0]["files"],
        serde_json::json!([format!("s3://{}/{new_key}", stack.bucket)]),
        "only the file the ledger lacks"
    );
    assert_eq!(plan[0]["bytes"], new_size);
    assert_eq!(plan[1]["partition_path"], "order_date=2024-05-29/");
    assert_eq!(plan[1]["files"].as_array().unwrap().len(), 2, "no marker");
    assert_eq!(stack.rows(&t).await, 3, "a dry run loads nothing");
    assert_eq!(stack.ledger_rows(&t).await, 1);
    assert!(out.stderr.is_empty(), "{}", describe(&out));

    let out = ctl(&stack, &["backfill", &url]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(lines(&out).len(), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("backfill: "))
        .collect();
    assert_eq!(progress.len(), 2, "{stderr}");
    assert!(
        progress[0].starts_with("backfill: 1/2 partitions, files 2/4, "),
        "{stderr}"
    );
    assert!(
        progress[0].ends_with(&format!("{t} order_date=2024-05-28/: loaded")),
        "{stderr}"
    );
    assert!(
        progress[1].starts_with("backfill: 2/2 partitions, files 4/4, "),
        "{stderr}"
    );
    assert!(progress[1].contains("ETA 0s"), "{stderr}");
    assert!(
        !stderr.contains('\r'),
        "no bar drawing off a terminal: {stderr:?}"
    );
    assert_eq!(stack.rows(&t).await, 3 + 2 + 4);

    let out = ctl(&stack, &["backfill", &url, "--dry-run"]).await;
    assert!(
        lines(&out).iter().all(|p| p["action"] == "up_to_date"),
        "{}",
        describe(&out)
    );
}

/// The doctor's lines as (check, status) pairs, and its exit code.
async fn doctor(stack: &Stack) -> (i32, Vec<Value>) {
    let out = ctl(stack, &["doctor"]).await;
    (out.status.code().unwrap_or(-1), lines(&out))
}

fn findings(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["status"] == "finding")
        .map(|l| format!("{} | {} | {}", l["check"], l["detail"], l["fix"]))
        .collect()
}

#[tokio::test]
async fn doctor_names_each_missing_grant_with_its_fix() {
    let stack = Stack::new().await;
    stack.bootstrap_as_admin(&stack.orders_route("")).await;
    let t = stack.orders_table().await;
    let (code, out) = doctor(&stack).await;
    assert_eq!(code, 0, "healthy: {:?}", findings(&out));
    assert_eq!(
        stack.lease_rows(&t).await,
        0,
        "the take_… probe rolled back: no lease taken"
    );
    for procedure in ["fence_", "take_"] {
        assert!(
            out.iter().any(
                |l| l["check"].as_str().is_some_and(|c| c.contains(procedure))
                    && l["status"] == "ok"
            ),
            "{procedure} probed: {out:?}"
        );
    }
    let isolation = out
        .iter()
        .find(|l| l["check"] == "isolation level")
        .unwrap();
    assert!(
        isolation["detail"]
            .as_str()
            .unwrap()
            .contains("Snapshot Isolation")
            || isolation["detail"]
                .as_str()
                .unwrap()
                .contains("Serializable"),
        "{isolation}"
    );
    assert!(out
        .iter()
        .any(|l| l["check"] == "manifest prefix" && l["status"] == "ok"));
    assert!(
        stack.keys("_loader/").await.is_empty(),
        "the probe object is deleted"
    );

    let (pl, data, user) = (&stack.loader_schema, &stack.schema, &stack.db_user);
    // The route's own lease and wake-up tables (the per-table layout).
    let (lease, wakeup) = (
        stack.loader_table(&t, "lease"),
        stack.loader_table(&t, "wakeup"),
    );
    let cases = [
        (
            format!("REVOKE USAGE ON SCHEMA {pl} FROM {user}"),
            format!("GRANT USAGE ON SCHEMA {pl} TO {user}"),
            "loader schema",
        ),
        (
            format!("REVOKE DELETE ON {lease} FROM {user}"),
            format!("GRANT DELETE ON {lease} TO {user}"),
            "GRANT DELETE ON",
        ),
        (
            format!("REVOKE INSERT ON {wakeup} FROM {user}"),
            format!("GRANT INSERT ON {wakeup} TO {user}"),
            "GRANT INSERT ON",
        ),
        (
            format!("REVOKE EXECUTE ON ALL PROCEDURES IN SCHEMA {pl} FROM {user}"),
            format!("GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA {pl} TO {user}"),
            "GRANT EXECUTE ON ALL PROCEDURES",
        ),
        (
            format!("REVOKE INSERT ON {t} FROM {user}"),
            format!("GRANT INSERT ON {t} TO {user}"),
            "missing INSERT",
        ),
        (
            format!("REVOKE SELECT ON {t} FROM {user}"),
            format!("GRANT SELECT ON {t} TO {user}"),
            "missing SELECT",
        ),
        (
            format!("REVOKE USAGE ON SCHEMA {data} FROM {user}"),
            format!("GRANT USAGE ON SCHEMA {data} TO {user}"),
            "missing USAGE on schema",
        ),
    ];
    for (revoke, grant, expected) in cases {
        stack.sql(&revoke).await;
        let (code, out) = doctor(&stack).await;
        let found = findings(&out);
        assert_eq!(code, 1, "{revoke}: {found:?}");
        assert!(
            found.iter().any(|f| f.contains(expected)),
            "{revoke}: expected a finding with {expected:?}, got {found:?}"
        );
        stack.sql(&grant).await;
    }
    let (code, out) = doctor(&stack).await;
    assert_eq!(code, 0, "healthy again: {:?}", findings(&out));

    // A missing route table and an identity that cannot log in.
    stack.sql(&format!("DROP TABLE {t}")).await;
    let (code, out) = doctor(&stack).await;
    assert_eq!(code, 1);
    assert!(
        findings(&out).iter().any(|f| f.contains("does not exist")),
        "{out:?}"
    );
    let mut env = stack.env(&stack.orders_route(""));
    for (k, v) in env.iter_mut() {
        if k == "REDSHIFT_DB_USER" {
            *v = format!("nobody_{}", stack.suffix);
        }
    }
    let out = run_ctl(env, &["doctor"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// An unpartitioned route's partition path is empty; the Data API refuses an empty
/// parameter value, so `loaderctl ledger TABLE ""` must not bind one.
#[tokio::test]
async fn loaderctl_ledger_of_the_empty_partition_binds_no_empty_parameter() {
    let stack = Stack::new().await;
    let t = stack.table("events");
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"events/\"\ntable = \"{t}\"\nformat = \"parquet\"\n",
        stack.bucket
    );
    stack.bootstrap_as_admin(&routes).await;
    stack
        .sql(&format!(
            "INSERT INTO {} VALUES ('', 's3://{}/events/a.parquet', 'e', 1, GETDATE(), 'h', 'l')",
            stack.loader_table(&t, "ledger"),
            stack.bucket
        ))
        .await;
    let out = ctl(&stack, &["ledger", &t, ""]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let rows = lines(&out);
    assert_eq!(rows.len(), 1, "{}", describe(&out));
    assert_eq!(rows[0]["partition"], "");
}

#[tokio::test]
async fn loaderctl_redrive_deletes_only_what_succeeded() {
    let stack = Stack::new().await;
    let boot = admin_ctl(&stack, &["bootstrap", "--grant-to", &stack.db_user]).await;
    assert!(boot.status.success(), "{}", describe(&boot));
    let table = stack.orders_table().await;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs
        .create_queue()
        .queue_name(format!("dlq-{}", stack.suffix))
        .send()
        .await
        .expect("create queue (moto SQS: AWS_ENDPOINT_URL_SQS)")
        .queue_url
        .expect("queue url");
    let event = stack.orders_file("a.parquet", 0..5).await;
    let wrapped = serde_json::json!({"version": "1.0", "requestPayload": event});
    for body in [wrapped.to_string(), "{\"source\": \"aws.ec2\"}".to_string()] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }
    let out = ctl(&stack, &["redrive", &url]).await;
    assert_eq!(out.status.code(), Some(1), "one failed: {}", describe(&out));
    let got: Vec<(String, bool)> = lines(&out)
        .iter()
        .map(|l| {
            (
                l["outcome"].as_str().unwrap_or_default().to_string(),
                l["deleted"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("loaded".to_string(), true), ("error".to_string(), false)],
        "{}",
        describe(&out)
    );
    assert_eq!(stack.rows(&table).await, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 failed and kept"));
    // Off a terminal, one plain progress line per message, against the queue's depth.
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("redrive: "))
        .collect();
    assert_eq!(progress.len(), 2, "{stderr}");
    assert!(
        progress[0].starts_with("redrive: 1/2 messages, 1 succeeded, 0 failed, 1 deleted, "),
        "{stderr}"
    );
    assert!(progress[0].ends_with(": loaded"), "{stderr}");
    assert!(
        progress[1].starts_with("redrive: 2/2 messages, 1 succeeded, 1 failed, 1 deleted, "),
        "{stderr}"
    );
    assert!(progress[1].contains(", ETA 0s: "), "{stderr}");
    assert!(progress[1].ends_with(": error"), "{stderr}");
    assert!(!stderr.contains('\r'), "no bar drawing off a terminal");
    // The failed message is still there for the next attempt.
    let left = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive");
    assert_eq!(left.messages.unwrap_or_default().len(), 1);
}

/// Issue 11 item 4: bucket, stack and warehouse in one Region. A route bucket created
/// in another Region (moto honours the LocationConstraint) is a finding whose fix names
/// the bucket's Region; the stack's own bucket (us-east-1, where the function runs)
/// passes.
#[tokio::test]
async fn doctor_finds_a_bucket_in_another_region() {
    let stack = Stack::new().await;
    let elsewhere = format!("lake-eu-{}", stack.suffix);
    let sdk = aws_config::from_env()
        .region(aws_config::Region::new("eu-west-1"))
        .load()
        .await;
    let eu = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    eu.create_bucket()
        .bucket(&elsewhere)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .expect("create a bucket in eu-west-1");
    let routes = format!(
        "{}[[routes]]\nbucket = \"{elsewhere}\"\nprefix = \"events/\"\ntable = \"{}\"\nformat = \"parquet\"\n",
        stack.orders_route(""),
        stack.table("events")
    );
    stack.bootstrap_as_admin(&routes).await;
    stack.orders_table().await;
    stack
        .create_table("events", "id BIGINT, name VARCHAR(64)")
        .await;

    let out = run_ctl(stack.env(&routes), &["doctor"]).await;
    let lines = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let region = |bucket: &str| {
        lines
            .iter()
            .find(|l| l["check"] == format!("bucket region {bucket}").as_str())
            .unwrap_or_else(|| panic!("no region check for {bucket}: {lines:?}"))
            .clone()
    };
    let eu_line = region(&elsewhere);
    assert_eq!(eu_line["status"], "finding", "{eu_line}");
    assert!(
        eu_line["detail"]
            .as_str()
            .is_some_and(|d| d.contains("eu-west-1") && d.contains("us-east-1")),
        "{eu_line}"
    );
    assert!(
        eu_line["fix"]
            .as_str()
            .is_some_and(|f| f.contains("deploy the stack") && f.contains("eu-west-1")),
        "{eu_line}"
    );
    let home = region(&stack.bucket);
    assert_eq!(home["status"], "ok", "{home}");
    assert_eq!(
        findings(&lines).len(),
        1,
        "the Region is the only finding: {:?}",
        findings(&lines)
    );
}

/// `loaderctl sweep` finds a file whose event never came; off a terminal it writes one
/// plain progress line per partition of each table to stderr.
#[tokio::test]
async fn loaderctl_sweep_loads_what_no_event_announced_with_progress_lines() {
    let stack = Stack::new().await;
    let loader = stack.loader(&stack.orders_route("")).await;
    let t = stack.orders_table().await;
    let today = chrono::Utc::now().date_naive();
    let yesterday = today.pred_opt().expect("a day before");
    for (day, ids) in [(today, 0..4), (yesterday, 4..6)] {
        stack
            .put_parquet(&format!("orders/order_date={day}/lost.parquet"), ids)
            .await;
    }
    // Loaded with its event: the sweep finds it up to date.
    let loaded = stack
        .parquet_event(&format!("orders/order_date={today}/seen.parquet"), 6..7)
        .await;
    assert_eq!(loaded_files(&handle(&loader, &loaded).await), 2);
    assert_eq!(stack.rows(&t).await, 5);
    stack
        .put_parquet(&format!("orders/order_date={today}/late.parquet"), 7..9)
        .await;

    let out = ctl(&stack, &["sweep", "--days", "2"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let outcomes: Vec<String> = lines(&out)
        .iter()
        .map(|l| l["outcome"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(outcomes, ["loaded", "loaded"], "{}", describe(&out));
    assert_eq!(stack.rows(&t).await, 9, "both partitions complete, once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("sweep ")).collect();
    assert_eq!(progress.len(), 2, "{stderr}");
    assert!(
        progress[0].starts_with(&format!("sweep {t}: 1/2 partitions, 1 files loaded, ")),
        "{stderr}"
    );
    assert!(
        progress[0].ends_with(&format!("order_date={today}/: loaded")),
        "{stderr}"
    );
    assert!(
        progress[1].starts_with(&format!("sweep {t}: 2/2 partitions, 2 files loaded, ")),
        "{stderr}"
    );
    assert!(progress[1].contains(" files/s, ETA 0s: "), "{stderr}");
    assert!(!stderr.contains('\r'), "no bar drawing off a terminal");

    let out = ctl(&stack, &["sweep", "--days", "2"]).await;
    assert!(
        lines(&out).iter().all(|l| l["outcome"] == "up_to_date"),
        "{}",
        describe(&out)
    );
}

/// Issue 19 item 6: `IAMR:<role>` exists only after the role's first call, so the grant
/// of README's step 10 failed before the function ever ran; bootstrap now creates it.
#[tokio::test]
async fn bootstrap_grants_to_an_iam_role_before_its_first_call() {
    let stack = Stack::new().await;
    let role_user = format!("IAMR:partition-loader-{}", stack.suffix);
    for round in 0..2 {
        let out = admin_ctl(&stack, &["bootstrap", "--grant-to", &role_user]).await;
        assert!(out.status.success(), "{}", describe(&out));
        let created = lines(&out)
            .iter()
            .any(|l| l["created_user"] == role_user.as_str());
        assert_eq!(created, round == 0, "created once: {}", describe(&out));
    }
    let usage = stack
        .text(&format!(
            "SELECT HAS_SCHEMA_PRIVILEGE('{role_user}', '{}', 'USAGE')",
            stack.loader_schema
        ))
        .await;
    assert!(
        matches!(usage.as_deref(), Some("true" | "t")),
        "the role's user got USAGE: {usage:?}"
    );
    // A name that is not an IAM identity's is not created: the grant fails as before.
    let out = admin_ctl(&stack, &["bootstrap", "--grant-to", "nobody_here"]).await;
    assert!(!out.status.success(), "{}", describe(&out));
}

/// Issue 19 item 4: doctor runs a probe COPY from the manifest prefix with the COPY role,
/// so a role that cannot read a separate manifest bucket is found before the first load.
#[tokio::test]
async fn doctor_probes_that_the_copy_role_reads_the_manifest_prefix() {
    let stack = Stack::new().await;
    stack.bootstrap_as_admin(&stack.orders_route("")).await;
    stack.orders_table().await;
    let probe = |out: &[Value]| {
        out.iter()
            .find(|l| l["check"] == "copy role reads manifests")
            .unwrap_or_else(|| panic!("no COPY probe: {out:?}"))
            .clone()
    };
    let (code, out) = doctor(&stack).await;
    assert_eq!(code, 0, "healthy: {:?}", findings(&out));
    assert_eq!(probe(&out)["status"], "ok", "{out:?}");
    assert!(
        stack.keys("_loader/").await.is_empty(),
        "probe objects deleted"
    );

    // Redshift refusing the read (as it does for a role without s3:GetObject there).
    stack
        .fault(serde_json::json!({"fail_copies": [{"table": "partition_loader_doctor_probe", "count": 1,
            "message": "S3ServiceException:Access Denied,Status 403"}]}))
        .await;
    let (code, out) = doctor(&stack).await;
    let line = probe(&out);
    assert_eq!(code, 1, "{out:?}");
    assert_eq!(line["status"], "finding", "{line}");
    assert!(
        line["detail"].as_str().unwrap().contains("Access Denied"),
        "{line}"
    );
    assert!(
        line["fix"].as_str().unwrap().contains("s3:GetObject"),
        "{line}"
    );
}

/// `add_new_columns` needs the function's user to own the table (Redshift runs ALTER
/// TABLE for the owner, a superuser or a holder of the ALTER TABLE system permission;
/// GRANT has no table privilege ALTER): the doctor names it, and what `bootstrap
/// --grant-to` prints for the table's owner, run as printed, is accepted (the `GRANT
/// ALTER ON TABLE` printed before was refused) and satisfies the doctor.
#[tokio::test]
async fn add_new_columns_rights_are_printed_as_redshift_takes_them_and_checked_by_the_doctor() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("add_new_columns = true");
    stack.bootstrap_as_admin(&routes).await;
    stack.orders_table().await;
    let out = run_ctl(stack.env(&routes), &["doctor"]).await;
    let found = findings(&lines(&out));
    assert_eq!(out.status.code(), Some(1), "{found:?}");
    assert!(
        found
            .iter()
            .any(|f| f.contains("add_new_columns") && f.contains("OWNER TO")),
        "{found:?}"
    );
    let out = run_ctl(
        stack.admin_env(&routes),
        &["bootstrap", "--grant-to", &stack.db_user],
    )
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    let printed = lines(&out)
        .into_iter()
        .find_map(|l| l["run_as_table_owner"].as_array().cloned())
        .expect("the table owner's statements");
    for statement in &printed {
        let statement = statement.as_str().unwrap_or_default();
        if let Err(e) = stack.try_sql(statement).await {
            panic!("printed for the owner, refused: {statement}: {e}");
        }
    }
    let out = run_ctl(stack.env(&routes), &["doctor"]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", findings(&lines(&out)));
}

/// With `ready_marker`, `backfill --dry-run` shows what the backfill then does: a
/// partition with its marker would load, one without waits, its files named (the dry
/// run listed them as to be loaded before).
#[tokio::test]
async fn backfill_dry_run_shows_the_files_waiting_for_their_marker() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("ready_marker = \"_SUCCESS\"");
    stack.bootstrap_as_admin(&routes).await;
    let t = stack.orders_table().await;
    let (marked, unmarked) = (
        "orders/order_date=2024-05-28",
        "orders/order_date=2024-05-29",
    );
    stack
        .put_parquet(&format!("{marked}/part-0.parquet"), 0..2)
        .await;
    stack.put(&format!("{marked}/_SUCCESS"), Vec::new()).await;
    let waiting = format!("{unmarked}/part-0.parquet");
    stack.put_parquet(&waiting, 0..3).await;
    let url = format!("s3://{}/orders/", stack.bucket);

    let out = run_ctl(stack.env(&routes), &["backfill", &url, "--dry-run"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let plan = lines(&out);
    assert_eq!(plan.len(), 2, "{}", describe(&out));
    assert_eq!(plan[0]["action"], "load", "{plan:?}");
    assert_eq!(plan[0]["files"].as_array().map(Vec::len), Some(1));
    assert_eq!(plan[1]["action"], "waiting", "{plan:?}");
    assert_eq!(
        plan[1]["waiting_for_marker"],
        serde_json::json!([format!("s3://{}/{waiting}", stack.bucket)])
    );

    let out = run_ctl(stack.env(&routes), &["backfill", &url]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stack.rows(&t).await,
        2,
        "the backfill did what the dry run said"
    );
}
