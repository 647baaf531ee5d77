//! The Data API operations, transactions and translations, through the real SDK.

mod common;

use aws_sdk_redshiftdata::error::ProvideErrorMetadata;
use aws_sdk_redshiftdata::types::{ExecutionMode, Field, StatusString};
use common::{error_code, start, status, text, unique};
use std::time::{Duration, Instant};

#[tokio::test]
async fn execute_describe_and_typed_results() {
    let h = start().await;
    let t = h.table("typed");
    h.ok(&format!(
        "CREATE TABLE {t} (i int8, s varchar(20), n numeric(10,2), f float8, b bool, d date, ts timestamp, z int4)"
    ))
    .await;
    let d = h
        .ok(&format!(
            "INSERT INTO {t} VALUES (1, 'one', 12.50, 1.5, true, '2024-05-28', '2024-05-28 10:00:00', NULL), (2, 'two', -0.05, 2.0, false, NULL, NULL, 7)"
        ))
        .await;
    assert_eq!(d.result_rows(), 2);
    assert!(!d.has_result_set().unwrap_or(true));
    assert!(d.redshift_query_id() > 0);
    assert!(d.redshift_pid() > 0);
    assert!(d.duration() > 0);
    assert!(d.created_at().is_some() && d.updated_at().is_some());

    let d = h.ok(&format!("SELECT * FROM {t} ORDER BY i")).await;
    assert!(d.has_result_set().unwrap_or(false));
    assert_eq!(d.result_rows(), 2);
    let page = h
        .client
        .get_statement_result()
        .id(&d.id)
        .send()
        .await
        .unwrap();
    assert_eq!(page.total_num_rows(), 2);
    let names: Vec<_> = page
        .column_metadata()
        .iter()
        .map(|c| c.type_name().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "int8",
            "varchar",
            "numeric",
            "float8",
            "bool",
            "date",
            "timestamp",
            "int4"
        ]
    );
    assert_eq!(page.column_metadata()[1].length(), 20);
    assert_eq!(page.column_metadata()[2].precision(), 10);
    assert_eq!(page.column_metadata()[2].scale(), 2);
    assert_eq!(page.column_metadata()[0].nullable(), 1);
    let first = &page.records()[0];
    assert_eq!(first[0], Field::LongValue(1));
    assert_eq!(first[1], Field::StringValue("one".into()));
    assert_eq!(first[2], Field::StringValue("12.50".into()));
    assert_eq!(first[3], Field::DoubleValue(1.5));
    assert_eq!(first[4], Field::BooleanValue(true));
    assert_eq!(first[5], Field::StringValue("2024-05-28".into()));
    assert_eq!(first[6], Field::StringValue("2024-05-28 10:00:00".into()));
    assert_eq!(first[7], Field::IsNull(true));
    assert_eq!(page.records()[1][2], Field::StringValue("-0.05".into()));
    assert_eq!(page.records()[1][5], Field::IsNull(true));
}

#[tokio::test]
async fn workgroup_or_cluster_exactly_one() {
    let h = start().await;
    let user = common::unique("awsuser");
    h.ok(&format!("CREATE USER {user} PASSWORD DISABLE")).await;
    let by_cluster = h
        .client
        .execute_statement()
        .cluster_identifier("local-cluster")
        .db_user(&user)
        .database("dev")
        .sql("SELECT 1")
        .send()
        .await
        .expect("ClusterIdentifier accepted");
    let d = h.wait(by_cluster.id().expect("Id")).await;
    assert_eq!(status(&d), "FINISHED");
    assert_eq!(d.cluster_identifier(), Some("local-cluster"));

    let neither = h
        .client
        .execute_statement()
        .database("dev")
        .sql("SELECT 1")
        .send()
        .await;
    assert_eq!(error_code(neither), "ValidationException");
    let both = h
        .client
        .batch_execute_statement()
        .workgroup_name("a")
        .cluster_identifier("b")
        .database("dev")
        .sqls("SELECT 1")
        .send()
        .await;
    assert_eq!(error_code(both), "ValidationException");
    let no_database = h
        .client
        .execute_statement()
        .workgroup_name("a")
        .sql("SELECT 1")
        .send()
        .await;
    assert_eq!(error_code(no_database), "ValidationException");
}

#[tokio::test]
async fn unknown_database_fails_with_redshift_words() {
    let h = start().await;
    let db = unique("nodb");
    let id = h
        .client
        .execute_statement()
        .workgroup_name(&h.workgroup)
        .database(&db)
        .sql("SELECT 1")
        .send()
        .await
        .unwrap()
        .id
        .unwrap();
    let d = h.wait(&id).await;
    assert_eq!(status(&d), "FAILED");
    assert!(
        d.error()
            .unwrap()
            .contains(&format!("database \"{db}\" does not exist")),
        "{:?}",
        d.error()
    );
}

#[tokio::test]
async fn client_token_is_idempotent() {
    let h = start().await;
    let t = h.table("tok");
    h.ok(&format!("CREATE TABLE {t} (a int)")).await;
    let token = uuid::Uuid::new_v4().to_string();
    let send = |sql: String| h.execute().client_token(&token).sql(sql).send();
    let first = send(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap()
        .id
        .unwrap();
    let second = send(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap()
        .id
        .unwrap();
    assert_eq!(first, second);
    h.wait(&first).await;
    assert_eq!(h.scalar(&format!("SELECT count(*) FROM {t}")).await, "1");
    let different = send(format!("INSERT INTO {t} VALUES (2)")).await;
    assert_eq!(error_code(different), "ValidationException");
}

#[tokio::test]
async fn batch_runs_in_one_transaction_and_rolls_back() {
    let h = start().await;
    let t = h.table("b");
    h.ok(&format!("CREATE TABLE {t} (a int primary key)")).await;
    h.ok(&format!("INSERT INTO {t} VALUES (1)")).await;
    let i2 = format!("INSERT INTO {t} VALUES (2)");
    let dup = format!("INSERT INTO {t} VALUES (1)");
    let i3 = format!("INSERT INTO {t} VALUES (3)");
    let d = h.batch(&[&i2, &dup, &i3]).await;
    assert_eq!(status(&d), "FAILED");
    assert!(
        d.error().unwrap().starts_with("ERROR: duplicate key value"),
        "{:?}",
        d.error()
    );
    let subs = d.sub_statements();
    assert_eq!(subs.len(), 3);
    let sub_status: Vec<_> = subs
        .iter()
        .map(|s| s.status().unwrap().as_str().to_string())
        .collect();
    assert_eq!(sub_status, ["FINISHED", "FAILED", "ABORTED"]);
    assert_eq!(subs[1].id(), format!("{}:2", d.id));
    assert_eq!(
        h.scalar(&format!(
            "SELECT string_agg(a::text, ',' ORDER BY a) FROM {t}"
        ))
        .await,
        "1"
    );

    // Sub-statement results are read with <id>:N; the batch id itself has none.
    let ok = h
        .batch(&[
            &format!("INSERT INTO {t} VALUES (5)"),
            &format!("SELECT a FROM {t} ORDER BY a"),
        ])
        .await;
    assert_eq!(status(&ok), "FINISHED");
    assert_eq!(ok.sub_statements()[0].result_rows(), 1);
    assert!(ok.sub_statements()[1].has_result_set().unwrap());
    let rows = h.all_records(&format!("{}:2", ok.id)).await;
    assert_eq!(
        rows,
        vec![vec![Field::LongValue(1)], vec![Field::LongValue(5)]]
    );
    let whole = h.client.get_statement_result().id(&ok.id).send().await;
    assert_eq!(error_code(whole), "ValidationException");
    let no_result = h
        .client
        .get_statement_result()
        .id(format!("{}:1", ok.id))
        .send()
        .await;
    assert_eq!(error_code(no_result), "ResourceNotFoundException");
    let sub = h
        .client
        .describe_statement()
        .id(format!("{}:2", ok.id))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sub.query_string(),
        Some(format!("SELECT a FROM {t} ORDER BY a").as_str())
    );
}

#[tokio::test]
async fn batch_limits_and_auto_commit() {
    let h = start().await;
    let many: Vec<String> = (0..41).map(|i| format!("SELECT {i}")).collect();
    let too_many = h.batch_execute().set_sqls(Some(many)).send().await;
    assert_eq!(error_code(too_many), "ValidationException");

    let t = h.table("ac");
    h.ok(&format!("CREATE TABLE {t} (a int primary key)")).await;
    let id = h
        .batch_execute()
        .execution_mode(ExecutionMode::AutoCommit)
        .sqls(format!("INSERT INTO {t} VALUES (1)"))
        .sqls(format!("INSERT INTO {t} VALUES (1)"))
        .sqls(format!("INSERT INTO {t} VALUES (2)"))
        .send()
        .await
        .unwrap()
        .id
        .unwrap();
    let d = h.wait(&id).await;
    assert_eq!(status(&d), "FAILED");
    let sub_status: Vec<_> = d
        .sub_statements()
        .iter()
        .map(|s| s.status().unwrap().as_str().to_string())
        .collect();
    assert_eq!(sub_status, ["FINISHED", "FAILED", "FINISHED"]);
    assert_eq!(h.scalar(&format!("SELECT count(*) FROM {t}")).await, "2");
}

#[tokio::test]
async fn get_statement_result_pages_with_next_token() {
    let h = start().await;
    let d = h
        .ok("SELECT g AS n FROM generate_series(1, 2500) AS g")
        .await;
    let first = h
        .client
        .get_statement_result()
        .id(&d.id)
        .send()
        .await
        .unwrap();
    assert_eq!(first.total_num_rows(), 2500);
    assert_eq!(first.records().len(), 1000);
    assert!(first.next_token().is_some());
    let all = h.all_records(&d.id).await;
    assert_eq!(all.len(), 2500);
    assert_eq!(all[2499][0], Field::LongValue(2500));
    let bad = h
        .client
        .get_statement_result()
        .id(&d.id)
        .next_token("garbage")
        .send()
        .await;
    assert_eq!(error_code(bad), "ValidationException");
}

#[tokio::test]
async fn describe_unknown_and_malformed_ids() {
    let h = start().await;
    let missing = h
        .client
        .describe_statement()
        .id(uuid::Uuid::new_v4().to_string())
        .send()
        .await;
    assert_eq!(error_code(missing), "ResourceNotFoundException");
    let malformed = h.client.describe_statement().id("not-an-id").send().await;
    assert_eq!(error_code(malformed), "ValidationException");
}

#[tokio::test]
async fn list_statements_newest_first_with_filters() {
    let h = start().await;
    let name = unique("list");
    for i in 0..3 {
        let id = h
            .execute()
            .statement_name(format!("{name}-{i}"))
            .sql(if i == 1 { "SELECT 1/0" } else { "SELECT 1" })
            .send()
            .await
            .unwrap()
            .id
            .unwrap();
        h.wait(&id).await;
    }
    let all = h
        .client
        .list_statements()
        .statement_name(&name)
        .send()
        .await
        .unwrap();
    let names: Vec<_> = all
        .statements()
        .iter()
        .map(|s| s.statement_name().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names,
        [
            format!("{name}-2"),
            format!("{name}-1"),
            format!("{name}-0")
        ]
    );
    let failed = h
        .client
        .list_statements()
        .statement_name(&name)
        .status(StatusString::Failed)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.statements().len(), 1);
    assert_eq!(failed.statements()[0].query_string(), Some("SELECT 1/0"));
    let page = h
        .client
        .list_statements()
        .statement_name(&name)
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.statements().len(), 2);
    let rest = h
        .client
        .list_statements()
        .statement_name(&name)
        .max_results(2)
        .next_token(page.next_token().expect("more"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.statements().len(), 1);
    assert!(rest.next_token().is_none());
}

#[tokio::test]
async fn cancel_running_statement() {
    let h = start().await;
    let id = h.submit("SELECT pg_sleep(30)").await;
    // Wait until it is really running in PostgreSQL.
    for _ in 0..100 {
        let d = h.client.describe_statement().id(&id).send().await.unwrap();
        if status(&d) == "STARTED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let out = h.client.cancel_statement().id(&id).send().await.unwrap();
    assert_eq!(out.status(), Some(true));
    let d = h.wait(&id).await;
    assert_eq!(status(&d), "ABORTED");
    assert!(started.elapsed() < Duration::from_secs(10));
    let again = h.client.cancel_statement().id(&id).send().await;
    assert_eq!(error_code(again), "ValidationException");
}

#[tokio::test]
async fn data_api_parameters() {
    let h = start().await;
    let t = h.table("p");
    h.ok(&format!(
        "CREATE TABLE {t} (id int, name varchar(20), d date)"
    ))
    .await;
    let id = h
        .submit_with(
            &format!("INSERT INTO {t} VALUES (:id, :name, :day::date)"),
            &[("id", "7"), ("name", "O'Brien"), ("day", "2024-05-28")],
        )
        .await;
    assert_eq!(status(&h.wait(&id).await), "FINISHED");
    let id = h
        .submit_with(
            &format!("SELECT name, d FROM {t} WHERE id = :id AND name <> ':id'"),
            &[("id", "7")],
        )
        .await;
    h.wait(&id).await;
    let rows = h.all_records(&id).await;
    assert_eq!(
        rows,
        vec![vec![
            Field::StringValue("O'Brien".into()),
            Field::StringValue("2024-05-28".into())
        ]]
    );
    let unused = h.try_submit_with("SELECT 1", &[("x", "1")]).await;
    assert_eq!(error_code(unused), "ValidationException");
    let missing = h.try_submit_with("SELECT :a, :b", &[("a", "1")]).await;
    assert_eq!(error_code(missing), "ValidationException");
}

#[tokio::test]
async fn redshift_isms_are_translated() {
    let h = start().await;
    let t = h.table("ddl");
    h.ok(&format!(
        "CREATE TABLE {t} (id BIGINT IDENTITY(1,1), k INT ENCODE az64 DISTKEY, v VARCHAR(10) ENCODE zstd, at TIMESTAMP DEFAULT GETDATE()) \
         BACKUP NO DISTSTYLE KEY COMPOUND SORTKEY(k, at)"
    ))
    .await;
    h.ok(&format!("INSERT INTO {t} (k, v) VALUES (1, 'a'), (2, 'b')"))
        .await;
    assert_eq!(h.scalar(&format!("SELECT max(id) FROM {t}")).await, "2");
    // GETDATE() is whole seconds in UTC; SYSDATE is the transaction start.
    let now = h.scalar("SELECT GETDATE()").await;
    assert_eq!(now.len(), "2024-05-28 10:00:00".len(), "{now}");
    let utc = chrono::Utc::now().naive_utc();
    let parsed = chrono::NaiveDateTime::parse_from_str(&now, "%Y-%m-%d %H:%M:%S").unwrap();
    assert!((utc - parsed).num_seconds().abs() < 5, "{now} vs {utc}");
    assert_eq!(
        h.scalar("SELECT (SYSDATE <= GETDATE() + INTERVAL '1 second')::text")
            .await,
        "true"
    );
    assert_eq!(h.scalar("SELECT 'SYSDATE'").await, "SYSDATE");
    let future = h
        .scalar("SELECT (GETDATE() + INTERVAL '900 seconds' > GETDATE())::text")
        .await;
    assert_eq!(future, "true");
    // information_schema's domain types come back as plain strings.
    let rows = h
        .rows(&format!(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = '{}' ORDER BY ordinal_position",
            h.schema
        ))
        .await;
    let cols: Vec<_> = rows.iter().map(|r| text(&r[0])).collect();
    assert_eq!(cols, ["id", "k", "v", "at"]);
}

#[tokio::test]
async fn procedures_raise_exception_text_and_sysdate_in_body() {
    let h = start().await;
    let t = h.table("proc_t");
    let p = h.table("fence");
    h.ok(&format!("CREATE TABLE {t} (at timestamp)")).await;
    h.ok(&format!(
        "CREATE OR REPLACE PROCEDURE {p}(ok boolean) LANGUAGE plpgsql AS $$
         DECLARE
           target VARCHAR(64) := 'sales.orders';
         BEGIN
           IF NOT ok THEN RAISE EXCEPTION 'lease lost for %', target; END IF;
           INSERT INTO {t} VALUES (SYSDATE);
         END $$"
    ))
    .await;
    h.ok(&format!("CALL {p}(true)")).await;
    assert_eq!(h.scalar(&format!("SELECT count(*) FROM {t}")).await, "1");
    let d = h
        .batch(&[
            &format!("INSERT INTO {t} VALUES (GETDATE())"),
            &format!("CALL {p}(false)"),
        ])
        .await;
    assert_eq!(status(&d), "FAILED");
    assert_eq!(d.error(), Some("ERROR: lease lost for sales.orders"));
    assert_eq!(h.scalar(&format!("SELECT count(*) FROM {t}")).await, "1");
}

/// Redshift's PL/pgSQL page, RAISE: "Currently, optional arguments must be simple
/// variables, not expressions." Refused when the procedure is created.
#[tokio::test]
async fn raise_arguments_must_be_simple_variables() {
    let h = start().await;
    let p = h.table("raising");
    let create = |argument: &str| {
        format!(
            "CREATE OR REPLACE PROCEDURE {p}(p_holder VARCHAR(256)) AS $$\nDECLARE\n  \
             target VARCHAR(64) := 'sales.orders';\nBEGIN\n  \
             RAISE EXCEPTION 'lease of % is not held by %', {argument}, p_holder;\nEND;\n$$ \
             LANGUAGE plpgsql"
        )
    };
    for expression in ["'sales.orders'", "target || ''", "UPPER(target)"] {
        let d = h.run(&create(expression)).await;
        assert_eq!(status(&d), "FAILED", "{expression}");
        assert!(
            d.error().is_some_and(|e| e
                .starts_with("ERROR: RAISE argument must be a simple variable, not an expression")),
            "{expression}: {:?}",
            d.error()
        );
    }
    h.ok(&create("target")).await;
    let d = h.run(&format!("CALL {p}('me')")).await;
    assert_eq!(status(&d), "FAILED");
    assert_eq!(
        d.error(),
        Some("ERROR: lease of sales.orders is not held by me")
    );
}

#[tokio::test]
async fn transaction_control_and_multiple_statements_are_refused() {
    let h = start().await;
    assert!(h.fails("BEGIN").await.contains("transaction control"));
    let d = h.batch(&["SELECT 1", "COMMIT"]).await;
    assert_eq!(status(&d), "FAILED");
    let err = h.fails("SELECT 1; SELECT 2").await;
    assert!(err.contains("cannot insert multiple commands"), "{err}");
    let err = h.batch(&["SELECT 1", "VACUUM"]).await;
    assert!(
        err.error()
            .unwrap()
            .contains("cannot run inside a transaction block"),
        "{:?}",
        err.error()
    );
    // Outside a batch it runs. On a table of the test's own: a bare VACUUM is every
    // table of the database (as on Redshift), which the tests running beside this one
    // keep creating.
    let t = h.table("vacuumed");
    h.ok(&format!("CREATE TABLE {t} (v int)")).await;
    h.ok(&format!("VACUUM {t}")).await;
}

#[tokio::test]
async fn concurrent_write_skew_fails_one_batch_with_1023() {
    let h =
        common::start_with(|c| c.isolation = redshift_data_local::Isolation::Serializable).await;
    let a = h.table("skew_a");
    let b = h.table("skew_b");
    h.ok(&format!("CREATE TABLE {a} (v int)")).await;
    h.ok(&format!("CREATE TABLE {b} (v int)")).await;
    // Each reads both tables, waits so the two overlap, then writes one table:
    // a cycle no serial order explains.
    let first = [
        format!("SELECT count(*) FROM {a} UNION ALL SELECT count(*) FROM {b}"),
        "SELECT pg_sleep(1)".to_string(),
        format!("INSERT INTO {a} VALUES (1)"),
    ];
    let second = [
        format!("SELECT count(*) FROM {a} UNION ALL SELECT count(*) FROM {b}"),
        "SELECT pg_sleep(1)".to_string(),
        format!("INSERT INTO {b} VALUES (1)"),
    ];
    let one = h
        .submit_batch(&first.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let two = h
        .submit_batch(&second.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let (d1, d2) = tokio::join!(h.wait(&one), h.wait(&two));
    let statuses = [status(&d1), status(&d2)];
    assert!(statuses.contains(&"FINISHED".to_string()), "{statuses:?}");
    assert!(statuses.contains(&"FAILED".to_string()), "{statuses:?}");
    let failed = if status(&d1) == "FAILED" { &d1 } else { &d2 };
    let error = failed.error().unwrap();
    assert!(
        error.contains("1023") && error.contains("Serializable isolation violation"),
        "{error}"
    );
    let total = h
        .scalar(&format!(
            "SELECT (SELECT count(*) FROM {a}) + (SELECT count(*) FROM {b})"
        ))
        .await;
    assert_eq!(total, "1");
}

#[tokio::test]
async fn lock_serialises_two_batches() {
    let h = start().await;
    let t = h.table("locked");
    h.ok(&format!("CREATE TABLE {t} (n int)")).await;
    h.ok(&format!("INSERT INTO {t} VALUES (0)")).await;
    // Read-modify-write under LOCK: the second waits for the first, then sees its
    // write (LOCK comes first, so its snapshot is taken after the wait).
    let batch = [
        format!("LOCK {t}"),
        format!("UPDATE {t} SET n = (SELECT max(n) FROM {t}) + 1"),
        "SELECT pg_sleep(0.5)".to_string(),
    ];
    let sqls: Vec<&str> = batch.iter().map(String::as_str).collect();
    let started = Instant::now();
    let one = h.submit_batch(&sqls).await;
    let two = h.submit_batch(&sqls).await;
    let (d1, d2) = tokio::join!(h.wait(&one), h.wait(&two));
    assert_eq!(status(&d1), "FINISHED", "{:?}", d1.error());
    assert_eq!(status(&d2), "FINISHED", "{:?}", d2.error());
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(h.scalar(&format!("SELECT n FROM {t}")).await, "2");
}

#[tokio::test]
async fn fault_latency_and_scope() {
    let h = start().await;
    let (code, _) = h
        .admin(
            "POST",
            &format!(r#"{{"workgroup": "{}", "latency_ms": 300}}"#, h.workgroup),
        )
        .await;
    assert_eq!(code, 200);
    let (_, listed) = h.admin("GET", "").await;
    assert!(listed.contains(&h.workgroup), "{listed}");
    let started = Instant::now();
    h.submit("SELECT 1").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Another workgroup is not slowed down.
    let started = Instant::now();
    h.client
        .execute_statement()
        .workgroup_name("other")
        .database("dev")
        .sql("SELECT 1")
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
    let (code, _) = h.admin("DELETE", "").await;
    assert_eq!(code, 204);
    let started = Instant::now();
    h.submit("SELECT 1").await;
    assert!(started.elapsed() < Duration::from_millis(300));
    let (code, _) = h.admin("POST", r#"{"latency": 1}"#).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn fault_throttling_reaches_the_sdk() {
    let h = start().await;
    h.admin(
        "POST",
        &format!(
            r#"{{"workgroup": "{}", "throttle_fraction": 1.0}}"#,
            h.workgroup
        ),
    )
    .await;
    let no_retry = common::data_api_client(
        &h.server.endpoint_url(),
        aws_sdk_redshiftdata::config::retry::RetryConfig::disabled(),
    );
    let err = no_retry
        .execute_statement()
        .workgroup_name(&h.workgroup)
        .database("dev")
        .sql("SELECT 1")
        .send()
        .await
        .unwrap_err();
    let err = err.into_service_error();
    assert_eq!(err.code(), Some("ThrottlingException"));
    assert_eq!(err.message(), Some("Rate exceeded"));
}

#[tokio::test]
async fn rate_limits_throttle_calls_beyond_the_per_second_quota_of_one_operation() {
    let h = start().await;
    let (code, _) = h
        .admin(
            "POST",
            &format!(
                r#"{{"workgroup": "{}", "rate_limits": {{"ExecuteStatement": 3}}}}"#,
                h.workgroup
            ),
        )
        .await;
    assert_eq!(code, 200);
    let no_retry = common::data_api_client(
        &h.server.endpoint_url(),
        aws_sdk_redshiftdata::config::retry::RetryConfig::disabled(),
    );
    // Wait for the start of a second, so that the calls below fall into one window.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()),
    ))
    .await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = no_retry
            .execute_statement()
            .workgroup_name(&h.workgroup)
            .database("dev")
            .sql("SELECT 1")
            .send()
            .await;
        codes.push(match r {
            Ok(_) => "ok".to_string(),
            Err(e) => {
                let e = e.into_service_error();
                assert_eq!(e.message(), Some("Rate exceeded"));
                e.code().unwrap_or_default().to_string()
            }
        });
    }
    assert_eq!(
        codes,
        [
            "ok",
            "ok",
            "ok",
            "ThrottlingException",
            "ThrottlingException"
        ],
        "3 per second"
    );
    // Another operation has its own quota (none here).
    let describe = no_retry.list_statements().send().await;
    assert!(describe.is_ok(), "{describe:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next_second = no_retry
        .execute_statement()
        .workgroup_name(&h.workgroup)
        .database("dev")
        .sql("SELECT 1")
        .send()
        .await;
    assert!(next_second.is_ok(), "a new second, a new window");
    let (code, _) = h
        .admin("POST", r#"{"rate_limits": {"ExecuteStatement": 0}}"#)
        .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn faults_from_environment_at_start() {
    let wg = unique("wg");
    let faults = format!(r#"[{{"workgroup": "{wg}", "throttle_fraction": 1.0}}]"#);
    let h = common::start_with(|c| c.faults = Some(faults)).await;
    let no_retry = common::data_api_client(
        &h.server.endpoint_url(),
        aws_sdk_redshiftdata::config::retry::RetryConfig::disabled(),
    );
    let err = no_retry
        .execute_statement()
        .workgroup_name(&wg)
        .database("dev")
        .sql("SELECT 1")
        .send()
        .await;
    assert_eq!(error_code(err), "ThrottlingException");
}

#[tokio::test]
async fn active_statement_quota() {
    let h = common::start_with(|c| c.max_active_statements = 1).await;
    let id = h.submit("SELECT pg_sleep(2)").await;
    let second = h.execute().sql("SELECT 1").send().await;
    assert_eq!(error_code(second), "ActiveStatementsExceededException");
    h.wait(&id).await;
}

#[tokio::test]
async fn isolation_flag_is_the_default_of_databases_without_a_level() {
    let h =
        common::start_with(|c| c.isolation = redshift_data_local::Isolation::Serializable).await;
    assert_eq!(
        h.scalar("SELECT current_setting('transaction_isolation')")
            .await,
        "serializable"
    );
    let h = start().await;
    assert_eq!(
        h.scalar("SELECT current_setting('transaction_isolation')")
            .await,
        "repeatable read",
        "SNAPSHOT is the default"
    );
}

/// Beyond `--concurrency`, statements wait SUBMITTED (Redshift's WLM queue) instead
/// of each taking a PostgreSQL connection; at N = 1000 the loader's burst failed with
/// PostgreSQL's "too many clients" before. Batches that LOCK one table, more of them
/// than there are slots, all finish: a statement waiting for a slot holds no lock.
#[tokio::test]
async fn statements_beyond_the_concurrency_queue_and_all_finish() {
    let h = common::start_with(|c| c.concurrency = 2).await;
    let t = h.table("queued");
    h.ok(&format!("CREATE TABLE {t} (n int)")).await;
    h.ok(&format!("INSERT INTO {t} VALUES (0)")).await;
    let batch = [
        format!("LOCK {t}"),
        format!("UPDATE {t} SET n = n + 1"),
        "SELECT pg_sleep(0.2)".to_string(),
    ];
    let sqls: Vec<&str> = batch.iter().map(String::as_str).collect();
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(h.submit_batch(&sqls).await);
    }
    // While they run: never more than 2 past SUBMITTED and unfinished, and some seen waiting.
    // One ListStatements reads every status at one instant (describing them one by one
    // could see a statement still running and, later in the same round, the one that
    // took its slot after it finished).
    let (mut most_running, mut seen_waiting) = (0, 0);
    loop {
        let listed = h
            .client
            .list_statements()
            .send()
            .await
            .expect("ListStatements");
        let statuses: Vec<String> = listed
            .statements()
            .iter()
            .filter(|s| ids.iter().any(|id| id == s.id()))
            .map(|s| {
                s.status()
                    .map(|st| st.as_str().to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(statuses.len(), ids.len(), "every batch listed");
        let running = statuses
            .iter()
            .filter(|s| *s == "PICKED" || *s == "STARTED")
            .count();
        most_running = most_running.max(running);
        seen_waiting = seen_waiting.max(statuses.iter().filter(|s| *s == "SUBMITTED").count());
        if statuses.iter().all(|s| s == "FINISHED" || s == "FAILED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most_running <= 2, "{most_running} statements ran at once");
    assert!(seen_waiting >= 1, "no statement was seen waiting SUBMITTED");
    for id in &ids {
        let d = h.wait(id).await;
        assert_eq!(status(&d), "FINISHED", "{:?}", d.error());
    }
    assert_eq!(h.scalar(&format!("SELECT n FROM {t}")).await, "8");
}

fn param(name: &str, value: &str) -> aws_sdk_redshiftdata::types::SqlParameter {
    aws_sdk_redshiftdata::types::SqlParameter::builder()
        .name(name)
        .value(value)
        .build()
        .unwrap()
}

/// BatchExecuteStatement's `Parameters` (aws-sdk-redshiftdata 1.126): "available to all
/// SQL statements in the batch. Each statement can reference any subset of the provided
/// parameters. Each provided parameter must be referenced by at least one SQL statement".
#[tokio::test]
async fn batch_parameters_apply_to_every_statement() {
    let h = start().await;
    let t = h.table("bp");
    h.ok(&format!("CREATE TABLE {t} (id int, name varchar(20))"))
        .await;
    let id = h
        .batch_execute()
        .sqls(format!("INSERT INTO {t} VALUES (:id, :name)"))
        .sqls(format!("INSERT INTO {t} VALUES (:id + 1, 'fixed')"))
        .sqls(format!("SELECT name FROM {t} WHERE id = :id"))
        .parameters(param("id", "7"))
        .parameters(param("name", "O'Brien"))
        .send()
        .await
        .expect("a batch takes Parameters")
        .id
        .unwrap();
    let d = h.wait(&id).await;
    assert_eq!(status(&d), "FINISHED", "{:?}", d.error());
    assert_eq!(
        h.all_records(&format!("{id}:3")).await,
        vec![vec![Field::StringValue("O'Brien".into())]]
    );
    assert_eq!(
        h.scalar(&format!("SELECT count(*) FROM {t} WHERE id = 8"))
            .await,
        "1"
    );
    // The same validation as ExecuteStatement's, over the whole batch.
    let refused = [
        (
            vec!["SELECT :a", "SELECT 1"],
            vec![("a", "1"), ("unused", "2")],
        ),
        (vec!["SELECT :a", "SELECT :b"], vec![("a", "1")]),
        (vec!["SELECT :a"], vec![("a", "")]),
    ];
    for (sqls, params) in refused {
        let mut request = h
            .batch_execute()
            .set_sqls(Some(sqls.iter().map(|s| s.to_string()).collect()));
        for (name, value) in &params {
            request = request.parameters(param(name, value));
        }
        assert_eq!(
            error_code(request.send().await),
            "ValidationException",
            "{sqls:?} {params:?}"
        );
    }
}

/// WaitTimeSeconds (0-30) on ExecuteStatement, BatchExecuteStatement, DescribeStatement
/// and GetStatementResult: the call returns when the statement has ended or the wait
/// has passed, whichever comes first.
#[tokio::test]
async fn wait_time_seconds_returns_at_the_end_or_after_the_wait() {
    let h = start().await;
    // Ends within the wait: ExecuteStatement returns after it, DescribeStatement (no
    // wait) already sees FINISHED.
    let started = Instant::now();
    let id = h
        .execute()
        .sql("SELECT pg_sleep(1)")
        .wait_time_seconds(10)
        .send()
        .await
        .unwrap()
        .id
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let d = h.client.describe_statement().id(&id).send().await.unwrap();
    assert_eq!(status(&d), "FINISHED");

    // Outlasts the wait: the call returns after it, the statement still running.
    let started = Instant::now();
    let id = h
        .execute()
        .sql("SELECT pg_sleep(3)")
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .id
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
    let d = h.client.describe_statement().id(&id).send().await.unwrap();
    assert_ne!(status(&d), "FINISHED");
    // DescribeStatement waits for it to end.
    let d = h
        .client
        .describe_statement()
        .id(&id)
        .wait_time_seconds(10)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&d), "FINISHED");

    // GetStatementResult waits, then answers with the rows.
    let id = h.submit("SELECT 42 FROM (SELECT pg_sleep(1)) s").await;
    let page = h
        .client
        .get_statement_result()
        .id(&id)
        .wait_time_seconds(10)
        .send()
        .await
        .expect("the result after the wait");
    assert_eq!(page.records(), [vec![Field::LongValue(42)]]);

    // A batch waits for its end; a sub-statement id for that sub-statement only.
    let started = Instant::now();
    let id = h
        .batch_execute()
        .execution_mode(ExecutionMode::AutoCommit)
        .sqls("SELECT 1")
        .sqls("SELECT pg_sleep(2)")
        .wait_time_seconds(0)
        .send()
        .await
        .unwrap()
        .id
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let first = h
        .client
        .describe_statement()
        .id(format!("{id}:1"))
        .wait_time_seconds(10)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&first), "FINISHED");
    assert!(started.elapsed() < Duration::from_millis(1800));
    let whole = h
        .client
        .describe_statement()
        .id(&id)
        .wait_time_seconds(10)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&whole), "FINISHED");

    // Beyond 30 seconds: refused, on every operation that takes it.
    let too_long = h
        .execute()
        .sql("SELECT 1")
        .wait_time_seconds(31)
        .send()
        .await;
    assert_eq!(error_code(too_long), "ValidationException");
    let too_long = h
        .batch_execute()
        .sqls("SELECT 1")
        .wait_time_seconds(31)
        .send()
        .await;
    assert_eq!(error_code(too_long), "ValidationException");
    let too_long = h
        .client
        .describe_statement()
        .id(&id)
        .wait_time_seconds(31)
        .send()
        .await;
    assert_eq!(error_code(too_long), "ValidationException");
    let too_long = h
        .client
        .get_statement_result()
        .id(format!("{id}:1"))
        .wait_time_seconds(-1)
        .send()
        .await;
    assert_eq!(error_code(too_long), "ValidationException");
}

/// GETDATE and SYSDATE answer in the session's time zone, which is UTC unless the user
/// has a default (`ALTER USER … SET timezone`, for later sessions) or the session sets
/// one (https://docs.aws.amazon.com/redshift/latest/dg/r_timezone_config.html).
#[tokio::test]
async fn getdate_follows_the_users_default_time_zone() {
    let h = start().await;
    let user = common::unique("tz_user");
    h.ok(&format!("CREATE USER {user} PASSWORD DISABLE")).await;
    h.ok(&format!("ALTER USER {user} SET timezone TO 'Asia/Kolkata'"))
        .await;
    let as_user = |sql: &str| {
        h.client
            .execute_statement()
            .cluster_identifier("local-cluster")
            .db_user(&user)
            .database("dev")
            .sql(sql)
            .send()
    };
    let id = as_user("SELECT GETDATE()::VARCHAR, SYSDATE::VARCHAR")
        .await
        .unwrap()
        .id
        .unwrap();
    h.wait(&id).await;
    let row = &h.all_records(&id).await[0];
    let utc = chrono::Utc::now().naive_utc();
    // Kolkata is UTC+05:30 all year (no daylight saving time).
    let offset = chrono::Duration::minutes(330);
    for field in row {
        let text = text(field);
        let parsed = chrono::NaiveDateTime::parse_from_str(&text[..19], "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(
            (parsed - utc - offset).num_seconds().abs() < 10,
            "{text} is not Kolkata time (UTC now {utc})"
        );
    }
    // The admin (no default) stays in UTC.
    let now = h.scalar("SELECT GETDATE()::VARCHAR").await;
    let parsed = chrono::NaiveDateTime::parse_from_str(&now, "%Y-%m-%d %H:%M:%S").unwrap();
    assert!((parsed - utc).num_seconds().abs() < 10, "{now} vs {utc}");
    // SET timezone in the statement's own session wins (a procedure's SET clause too).
    let p = h.table("utc_now");
    h.ok(&format!(
        "CREATE PROCEDURE {p}(INOUT now_text VARCHAR(32)) AS $$\nBEGIN\n  \
         SELECT GETDATE()::VARCHAR INTO now_text;\nEND;\n$$ LANGUAGE plpgsql \
         SET timezone TO 'UTC'"
    ))
    .await;
    h.ok(&format!("GRANT USAGE ON SCHEMA {} TO {user}", h.schema))
        .await;
    h.ok(&format!(
        "GRANT EXECUTE ON PROCEDURE {p}(VARCHAR) TO {user}"
    ))
    .await;
    let id = as_user(&format!("CALL {p}('')")).await.unwrap().id.unwrap();
    let d = h.wait(&id).await;
    assert_eq!(status(&d), "FINISHED", "{:?}", d.error());
    let inside = text(&h.all_records(&id).await[0][0]);
    let parsed = chrono::NaiveDateTime::parse_from_str(&inside[..19], "%Y-%m-%d %H:%M:%S").unwrap();
    assert!(
        (parsed - utc).num_seconds().abs() < 10,
        "{inside}: the procedure's SET clause makes it UTC"
    );
}

/// Redshift's ALTER TABLE page, ADD COLUMN: one column per statement; a NOT NULL column
/// needs a DEFAULT (refused even on an empty table: the stricter reading, the page does
/// not say); inside a transaction block it is allowed (only an external table's ALTER
/// TABLE is refused there), and an existing column fails with PostgreSQL's and
/// Redshift's `already exists` (there is no `ADD COLUMN IF NOT EXISTS`).
#[tokio::test]
async fn add_column_rules() {
    let h = start().await;
    let t = h.table("widening");
    h.ok(&format!("CREATE TABLE {t} (id BIGINT)")).await;
    for refused in [
        format!("ALTER TABLE {t} ADD COLUMN a INT, ADD COLUMN b INT"),
        format!("ALTER TABLE {t} ADD COLUMN a INT NOT NULL"),
    ] {
        let d = h.run(&refused).await;
        assert_eq!(status(&d), "FAILED", "{refused}");
        assert!(
            d.error()
                .is_some_and(|e| e.starts_with("ERROR: ALTER TABLE ADD COLUMN")),
            "{refused}: {:?}",
            d.error()
        );
    }
    h.ok(&format!(
        "ALTER TABLE {t} ADD COLUMN a INT NOT NULL DEFAULT 0"
    ))
    .await;
    let d = h
        .batch(&[
            &format!("ALTER TABLE {t} ADD COLUMN b DECIMAL(10,2)"),
            &format!("INSERT INTO {t} (id, b) VALUES (1, 2.5)"),
        ])
        .await;
    assert_eq!(status(&d), "FINISHED", "{:?}", d.error());
    let d = h
        .run(&format!("ALTER TABLE {t} ADD COLUMN b DECIMAL(10,2)"))
        .await;
    assert_eq!(status(&d), "FAILED");
    assert!(
        d.error()
            .is_some_and(|e| e.contains("column \"b\"") && e.contains("already exists")),
        "{:?}",
        d.error()
    );
}
