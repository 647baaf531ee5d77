//! Table upkeep after loads, through the real sweep against the local stack: ANALYZE
//! and VACUUM of a table the sweep loaded, nothing when nothing loaded, a table the
//! loader may not touch skipped while its loads go on, a VACUUM of another session
//! making upkeep wait (not fail).

mod common;

use std::time::Duration;

use common::*;
use partition_loader::run::invocation::sweep_measured;
use partition_loader::run::metrics::Settings;
use serde_json::{json, Value};

/// One sweep of the last day, as the schedule runs it; returns the result's `upkeep`.
async fn sweep(loader: &TestLoader) -> Value {
    let m = sweep_measured(loader, &Settings::default(), 1, &holder(), deadline()).await;
    let answer = m.result.expect("swept");
    answer["upkeep"].clone()
}

async fn put_today(stack: &Stack, file: &str, ids: std::ops::Range<i64>) {
    let today = chrono::Utc::now().date_naive();
    stack
        .put_parquet(&format!("orders/order_date={today}/{file}"), ids)
        .await;
}

/// The loader's user owns the orders table and may read SVV_TABLE_INFO (README: grants).
async fn owned_orders(stack: &Stack, extra: &str) -> (TestLoader, String) {
    let (loader, t) = stack.orders(extra).await;
    stack
        .sql(&format!("ALTER TABLE {t} OWNER TO {}", stack.db_user))
        .await;
    stack
        .sql(&format!(
            "GRANT SELECT ON svv_table_info TO {}",
            stack.db_user
        ))
        .await;
    (loader, t)
}

async fn analyzes(stack: &Stack) -> i64 {
    stack
        .count(&format!(
            "SELECT COUNT(*) FROM sys_analyze_history WHERE schema_name = '{}' AND table_name = 'orders'",
            stack.schema
        ))
        .await
}

async fn finished_vacuums(stack: &Stack) -> i64 {
    stack
        .count(&format!(
            "SELECT COUNT(*) FROM sys_vacuum_history WHERE schema_name = '{}' AND table_name = 'orders' \
             AND end_time IS NOT NULL",
            stack.schema
        ))
        .await
}

/// Waits for `n` finished VACUUMs of the orders table (a VACUUM is left to run).
async fn wait_for_vacuums(stack: &Stack, n: i64) {
    for _ in 0..300 {
        if finished_vacuums(stack).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no finished VACUUM of orders");
}

#[tokio::test]
async fn the_sweep_analyzes_and_vacuums_what_it_loaded_and_an_idle_sweep_submits_nothing() {
    let stack = Stack::new().await;
    let (loader, t) = owned_orders(&stack, "").await;
    put_today(&stack, "a.parquet", 0..20).await;

    let upkeep = sweep(&loader).await;
    eprintln!("upkeep calls after a load: {}", upkeep["data_api_calls"]);
    assert_eq!(stack.rows(&t).await, 20);
    let table = &upkeep["tables"][0];
    assert_eq!(table["table"], t.as_str(), "{upkeep:#}");
    assert_eq!(table["analyzed"], true, "{upkeep:#}");
    assert!(table["vacuum_submitted"].is_boolean(), "{upkeep:#}");
    assert_eq!(
        table["would_run"],
        json!([
            format!("ANALYZE \"{}\".\"orders\" PREDICATE COLUMNS", stack.schema),
            format!(
                "VACUUM SORT ONLY \"{}\".\"orders\" TO 95 PERCENT",
                stack.schema
            )
        ])
    );
    wait_for_vacuums(&stack, 1).await;
    assert_eq!(analyzes(&stack).await, 1);
    let info = stack
        .select(&format!(
            "SELECT stats_off::float8, unsorted::float8 FROM svv_table_info \
             WHERE schema = '{}' AND \"table\" = 'orders'",
            stack.schema
        ))
        .await;
    assert_eq!(info[0][0].as_deref(), Some("0"), "{info:?}");
    assert_eq!(info[0][1].as_deref(), Some("0"), "{info:?}");

    // Nothing loaded since, nothing new in S3: the sweep's watermark (S3) says so, and
    // upkeep makes no call at all (issue 22: "a run with no load since the last upkeep
    // makes no upkeep call"; before the watermark, one statement read the upkeep
    // watermarks: 3 to 5 calls).
    let idle = sweep(&loader).await;
    assert_eq!(idle, json!({"tables": [], "data_api_calls": 0}), "{idle:#}");
    assert_eq!(analyzes(&stack).await, 1);
    assert_eq!(finished_vacuums(&stack).await, 1);

    // A second, smaller load: 5 rows on 20 is 20% stale and unsorted, past 10%.
    put_today(&stack, "b.parquet", 100..105).await;
    let upkeep = sweep(&loader).await;
    assert_eq!(upkeep["tables"][0]["analyzed"], true, "{upkeep:#}");
    wait_for_vacuums(&stack, 2).await;
    assert_eq!(analyzes(&stack).await, 2);
}

#[tokio::test]
async fn upkeep_off_makes_no_call_and_thresholds_hold_it_back() {
    let stack = Stack::new().await;
    let (loader, _) = owned_orders(&stack, "analyze = \"off\"\nvacuum = \"off\"").await;
    put_today(&stack, "a.parquet", 0..20).await;
    assert_eq!(
        sweep(&loader).await,
        json!({"tables": [], "data_api_calls": 0})
    );
    assert_eq!(analyzes(&stack).await, 0);

    let stack = Stack::new().await;
    let (loader, _) = owned_orders(
        &stack,
        "analyze_threshold = 100\nvacuum_unsorted_threshold = 100",
    )
    .await;
    put_today(&stack, "a.parquet", 0..20).await;
    let upkeep = sweep(&loader).await;
    assert_eq!(upkeep["tables"][0]["would_run"], json!([]), "{upkeep:#}");
    assert_eq!(analyzes(&stack).await, 0);
}

#[tokio::test]
async fn a_table_the_loader_may_not_upkeep_is_skipped_with_the_reason_while_loads_go_on() {
    let stack = Stack::new().await;
    // The admin owns the table; the loader may read SVV_TABLE_INFO but not vacuum.
    let (loader, t) = stack.orders("").await;
    stack
        .sql(&format!(
            "GRANT SELECT ON svv_table_info TO {}",
            stack.db_user
        ))
        .await;
    put_today(&stack, "a.parquet", 0..10).await;
    let upkeep = sweep(&loader).await;
    assert_eq!(stack.rows(&t).await, 10, "the load went on");
    let skipped = upkeep["tables"][0]["skipped"].as_str().unwrap_or_default();
    assert!(
        skipped.contains(&format!("{} may not analyze or vacuum {t}", stack.db_user)),
        "{upkeep:#}"
    );
    assert_eq!(analyzes(&stack).await, 0);
    assert_eq!(finished_vacuums(&stack).await, 0);

    // Later loads go on too; the skipped table's watermark moved, so no retry loop.
    put_today(&stack, "b.parquet", 10..20).await;
    let upkeep = sweep(&loader).await;
    assert_eq!(stack.rows(&t).await, 20);
    assert!(upkeep["tables"][0]["skipped"].is_string(), "{upkeep:#}");
}

#[tokio::test]
async fn a_member_of_a_role_with_the_analyze_and_vacuum_permissions_upkeeps_a_table_it_does_not_own(
) {
    let stack = Stack::new().await;
    // The admin owns the table; the loader's user gets Redshift's system permissions
    // through a role (https://docs.aws.amazon.com/redshift/latest/dg/r_roles-system-privileges.html).
    let (loader, t) = stack.orders("").await;
    stack
        .sql(&format!(
            "GRANT SELECT ON svv_table_info TO {}",
            stack.db_user
        ))
        .await;
    let role = format!("upkeep_{}", stack.suffix);
    stack.sql(&format!("CREATE ROLE {role}")).await;
    stack
        .sql(&format!("GRANT ANALYZE, VACUUM TO ROLE {role}"))
        .await;
    stack
        .sql(&format!("GRANT ROLE {role} TO {}", stack.db_user))
        .await;
    put_today(&stack, "a.parquet", 0..20).await;
    let upkeep = sweep(&loader).await;
    assert_eq!(stack.rows(&t).await, 20);
    let table = &upkeep["tables"][0];
    assert!(table["skipped"].is_null(), "{upkeep:#}");
    assert_eq!(table["analyzed"], true, "{upkeep:#}");
    assert!(table["vacuum_submitted"].is_boolean(), "{upkeep:#}");
    wait_for_vacuums(&stack, 1).await;
    assert_eq!(analyzes(&stack).await, 1);
}

#[tokio::test]
async fn a_vacuum_another_session_runs_makes_upkeep_wait_then_run() {
    let stack = Stack::new().await;
    let (loader, t) = owned_orders(&stack, "").await;
    let other = stack.create_table("other", "id BIGINT").await;
    stack.sql(&format!("INSERT INTO {other} VALUES (1)")).await;
    stack.fault(json!({"vacuum_ms": 20000})).await;
    // The admin, in the loader's workgroup (one cluster, one VACUUM at a time).
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let admin = aws_sdk_redshiftdata::Client::new(&sdk);
    admin
        .execute_statement()
        .workgroup_name(&stack.workgroup)
        .database(std::env::var("REDSHIFT_DATABASE").expect("database"))
        .sql(format!("VACUUM {other}"))
        .send()
        .await
        .expect("VACUUM submitted");
    // Until it runs (its history row has no end yet).
    let other_running = format!(
        "SELECT COUNT(*) FROM sys_vacuum_history WHERE schema_name = '{}' \
         AND table_name = 'other' AND end_time IS NULL",
        stack.schema
    );
    for _ in 0..100 {
        if stack.count(&other_running).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    put_today(&stack, "a.parquet", 0..20).await;
    let upkeep = sweep(&loader).await;
    assert_eq!(stack.rows(&t).await, 20);
    let table = &upkeep["tables"][0];
    assert_eq!(table["analyzed"], true, "{upkeep:#}");
    assert!(
        table["deferred"]
            .as_str()
            .is_some_and(|d| d.contains("another VACUUM runs")),
        "{upkeep:#}"
    );
    assert!(table["error"].is_null(), "{upkeep:#}");

    // The other VACUUM ends; the next sweep (nothing new loaded) runs ours, which now
    // takes 15 s.
    let other_done = format!(
        "SELECT COUNT(*) FROM sys_vacuum_history WHERE schema_name = '{}' \
         AND table_name = 'other' AND end_time IS NOT NULL",
        stack.schema
    );
    for _ in 0..300 {
        if stack.count(&other_done).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.fault(json!({"vacuum_ms": 15000})).await;
    let upkeep = sweep(&loader).await;
    let table = &upkeep["tables"][0];
    assert!(table["vacuum_submitted"].is_boolean(), "{upkeep:#}");
    assert_eq!(table["analyzed"], false, "analyzed already: {upkeep:#}");

    // Ours still runs: a new load's upkeep does not submit a second one.
    put_today(&stack, "b.parquet", 100..105).await;
    let upkeep = sweep(&loader).await;
    let deferred = upkeep["tables"][0]["deferred"].as_str().unwrap_or_default();
    assert!(
        deferred.contains("a VACUUM of ours still runs"),
        "{upkeep:#}"
    );
    wait_for_vacuums(&stack, 1).await;
}

async fn admin_ctl(stack: &Stack, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_loaderctl"));
    cmd.args(args)
        .env_remove("LOADER_CONFIG_FILE")
        .env_remove("REDSHIFT_CLUSTER_ID")
        .env_remove("REDSHIFT_DB_USER")
        .env_remove("REDSHIFT_SECRET_ARN")
        .env("RUST_LOG", "warn");
    for (k, v) in stack.admin_env(&stack.orders_route("")) {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run loaderctl")
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The table's owner runs what the loader had to skip: `--dry-run` shows the state and
/// the statements, then the real run does them, with a progress line per table.
#[tokio::test]
async fn loaderctl_upkeep_shows_then_runs_what_the_loader_may_not() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    put_today(&stack, "a.parquet", 0..10).await;
    sweep(&loader).await;
    assert_eq!(analyzes(&stack).await, 0);

    let out = admin_ctl(&stack, &["upkeep", "--table", &t, "--dry-run"]).await;
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["table"], t.as_str());
    assert_eq!(lines[0]["stats_off"], 100.0);
    assert_eq!(lines[0]["tbl_rows"], 10);
    assert_eq!(lines[0]["last_analyze"], Value::Null);
    assert_eq!(lines[0]["would_run"].as_array().map(Vec::len), Some(2));
    assert_eq!(analyzes(&stack).await, 0, "a dry run runs nothing");

    let out = admin_ctl(&stack, &["upkeep", "--table", &t]).await;
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    assert_eq!(lines[0]["analyzed"], true, "{lines:?}");
    assert!(lines[0]["vacuum_submitted"].is_boolean(), "{lines:?}");
    assert!(lines[0]["last_analyze"].is_string(), "{lines:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("upkeep {t}: 1/1: analyzed: true")),
        "{stderr}"
    );
    assert_eq!(analyzes(&stack).await, 1);
    wait_for_vacuums(&stack, 1).await;
}

/// A load's EMF record has the COPY's queue and execution time beside CopyTime, read
/// with the rows from Redshift's history in the same statement; `loaderctl history`
/// shows both.
#[tokio::test]
async fn a_loads_record_has_its_copys_queue_and_execution_time() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let event = stack.orders_file("q.parquet", 0..7).await;
    let m = partition_loader::run::invocation::handle_measured(
        &loader,
        &Settings::default(),
        &event,
        &holder(),
        deadline(),
    )
    .await;
    m.result.expect("loaded");
    let r = &m.record;
    assert_eq!(r["RowsLoaded"], 7, "{r:#}");
    let queue = r["CopyQueueTime"].as_f64().expect("CopyQueueTime");
    let execution = r["CopyExecutionTime"].as_f64().expect("CopyExecutionTime");
    let copy = r["CopyTime"].as_f64().expect("CopyTime");
    assert!(queue >= 0.0 && execution > 0.0, "{r:#}");
    assert!(
        queue + execution <= copy + 1.0,
        "parts of the batch's time: {r:#}"
    );
    let metrics = r["_aws"]["CloudWatchMetrics"][0]["Metrics"].to_string();
    assert!(metrics.contains("\"CopyQueueTime\""), "{metrics}");
    assert!(metrics.contains("\"CopyExecutionTime\""), "{metrics}");
    // One file: the mean file size is its size.
    assert_eq!(r["MeanFileSize"], r["BytesLoaded"], "{r:#}");

    let out = admin_ctl(&stack, &["history", &t, "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    assert!(lines[0]["execution_ms"].is_i64(), "{lines:?}");
    assert!(lines[0]["queue_ms"].is_i64(), "{lines:?}");
}

/// `loaderctl status` advises on the files of recent loads: tiny Parquet files here.
#[tokio::test]
async fn status_advises_on_tiny_files_per_copy() {
    let stack = Stack::new().await;
    let (loader, _) = stack.orders("").await;
    for n in 0..3 {
        put_today(&stack, &format!("tiny-{n}.parquet"), n * 10..n * 10 + 2).await;
    }
    sweep(&loader).await;
    let out = admin_ctl(&stack, &["status", "--json"]).await;
    let lines = json_lines(&out);
    let sizes = &lines[0]["file_sizes"];
    assert_eq!(sizes["loads"], 1, "{lines:?}");
    assert_eq!(sizes["files_per_copy"], 3.0, "{lines:?}");
    let advice = sizes["advice"].as_str().unwrap_or_default();
    assert!(advice.starts_with("3.0 files of"), "{advice}");
    assert!(advice.contains("compact them"), "{advice}");
}

/// `loaderctl doctor` names the grant upkeep needs, and sees it once given.
#[tokio::test]
async fn doctor_names_the_svv_table_info_grant() {
    let stack = Stack::new().await;
    let (_loader, _) = stack.orders("").await;
    let run = || async {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_loaderctl"));
        cmd.arg("doctor")
            .env_remove("LOADER_CONFIG_FILE")
            .env_remove("REDSHIFT_SECRET_ARN")
            .env("RUST_LOG", "warn");
        for (k, v) in stack.env(&stack.orders_route("")) {
            if v.is_empty() {
                cmd.env_remove(&k);
            } else {
                cmd.env(k, v);
            }
        }
        let out = cmd.output().await.expect("run loaderctl");
        json_lines(&out)
            .into_iter()
            .find(|l| l["check"] == "upkeep: svv_table_info")
            .expect("the upkeep check")
    };
    let check = run().await;
    // Loads do not need it: an info line naming the grant, not a finding.
    assert_eq!(check["status"], "info", "{check}");
    let detail = check["detail"].as_str().unwrap_or_default();
    assert!(
        detail.ends_with(&format!(
            "for upkeep: GRANT SELECT ON svv_table_info TO \"{}\"",
            stack.db_user
        )),
        "{check}"
    );
    stack
        .sql(&format!(
            "GRANT SELECT ON svv_table_info TO {}",
            stack.db_user
        ))
        .await;
    assert_eq!(run().await["status"], "ok");
}
