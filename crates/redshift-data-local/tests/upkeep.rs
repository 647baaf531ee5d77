//! ANALYZE, VACUUM and the views of table upkeep (SVV_TABLE_INFO, SYS_VACUUM_HISTORY,
//! SYS_ANALYZE_HISTORY, SYS_QUERY_HISTORY) as Redshift has them, through the real SDK.

mod common;

use aws_sdk_redshiftdata::config::retry::RetryConfig;
use common::{start_with, status, text, unique, Harness};

/// A harness with one access key mapped to an IAM user; returns it, the user, a client.
async fn with_iam_user() -> (Harness, String, aws_sdk_redshiftdata::Client) {
    let key = unique("AKIA").to_uppercase();
    let user = format!("IAMR:{}", unique("upkeep"));
    let (k, u) = (key.clone(), user.clone());
    let h = start_with(move |c| c.identities = vec![format!("{k}={u}")]).await;
    let client =
        common::data_api_client_as(&h.server.endpoint_url(), RetryConfig::standard(), &key);
    let (st, err) = run_as(&h, &client, "SELECT current_user").await;
    assert_eq!(st, "FINISHED", "{err}");
    (h, user, client)
}

async fn run_as(h: &Harness, client: &aws_sdk_redshiftdata::Client, sql: &str) -> (String, String) {
    let id = client
        .execute_statement()
        .workgroup_name(&h.workgroup)
        .database("dev")
        .sql(sql)
        .send()
        .await
        .expect("accepted")
        .id()
        .expect("Id")
        .to_string();
    let d = h.wait(&id).await;
    (status(&d), d.error().unwrap_or_default().to_string())
}

/// `stats_off`, `unsorted`, `tbl_rows`, `estimated_visible_rows` of one table, or
/// `None` when SVV_TABLE_INFO has no row for it.
async fn info(h: &Harness, table: &str) -> Option<(f64, f64, i64, i64)> {
    let rows = h
        .rows(&format!(
            "SELECT stats_off::float8, unsorted::float8, tbl_rows::bigint, estimated_visible_rows::bigint \
             FROM svv_table_info WHERE schema = '{}' AND \"table\" = '{table}'",
            h.schema
        ))
        .await;
    rows.first().map(|r| {
        let f = |i: usize| text(&r[i]).parse::<f64>().expect("number");
        (f(0), f(1), f(2) as i64, f(3) as i64)
    })
}

#[tokio::test]
async fn svv_table_info_moves_as_rows_are_loaded_deleted_analyzed_and_vacuumed() {
    let h = common::start().await;
    let t = h.table("t");
    h.ok(&format!("CREATE TABLE {t} (id int)")).await;
    assert_eq!(info(&h, "t").await, None, "no row for an empty table");

    h.ok(&format!("INSERT INTO {t} SELECT generate_series(1, 100)"))
        .await;
    assert_eq!(info(&h, "t").await, Some((100.0, 100.0, 100, 100)));

    h.ok(&format!("ANALYZE {t} PREDICATE COLUMNS")).await;
    h.ok(&format!("VACUUM {t} TO 100 PERCENT")).await;
    assert_eq!(info(&h, "t").await, Some((0.0, 0.0, 100, 100)));

    // 50 more rows: unsorted and stale statistics, in proportion.
    h.ok(&format!("INSERT INTO {t} SELECT generate_series(101, 150)"))
        .await;
    let (stats_off, unsorted, rows, _) = info(&h, "t").await.expect("row");
    assert_eq!((stats_off, rows), (50.0, 150));
    assert!((unsorted - 33.33).abs() < 0.01, "{unsorted}");

    // Deleted rows stay in tbl_rows until a VACUUM's delete phase.
    h.ok(&format!("DELETE FROM {t} WHERE id <= 10")).await;
    assert_eq!(info(&h, "t").await.map(|i| (i.2, i.3)), Some((150, 140)));
    h.ok(&format!("VACUUM DELETE ONLY {t}")).await;
    let (_, unsorted, rows, visible) = info(&h, "t").await.expect("row");
    assert_eq!((rows, visible), (140, 140));
    assert!(unsorted > 30.0, "DELETE ONLY does not sort: {unsorted}");
    h.ok(&format!("VACUUM SORT ONLY {t}")).await;
    assert_eq!(info(&h, "t").await.map(|i| i.1), Some(0.0));

    // Both histories name the table; the analyze history only for superusers.
    let vacuums = h
        .scalar(&format!(
            "SELECT count(*) FROM sys_vacuum_history WHERE schema_name = '{}' AND status = 'Finished'",
            h.schema
        ))
        .await;
    assert_eq!(vacuums, "3");
    let analyzes = h
        .scalar(&format!(
            "SELECT count(*) FROM sys_analyze_history WHERE schema_name = '{}' AND table_name = 't'",
            h.schema
        ))
        .await;
    assert_eq!(analyzes, "1");
}

#[tokio::test]
async fn vacuum_is_refused_inside_a_batch_with_redshifts_words() {
    let h = common::start().await;
    let t = h.table("t");
    h.ok(&format!("CREATE TABLE {t} (id int)")).await;
    let vacuum = format!("VACUUM {t}");
    let d = h.batch(&["SELECT 1", &vacuum]).await;
    assert_eq!(status(&d), "FAILED");
    assert_eq!(
        d.error().unwrap_or_default(),
        "ERROR: VACUUM cannot run inside a transaction block"
    );
}

#[tokio::test]
async fn one_vacuum_at_a_time_a_second_fails_at_once() {
    let h = common::start().await;
    let body = format!(r#"{{"workgroup": "{}", "vacuum_ms": 1500}}"#, h.workgroup);
    assert_eq!(h.admin("POST", &body).await.0, 200);
    let t = h.table("t");
    h.ok(&format!("CREATE TABLE {t} (id int)")).await;
    h.ok(&format!("INSERT INTO {t} VALUES (1)")).await;
    let first = h.submit(&format!("VACUUM {t}")).await;
    // Wait until the first one runs (its history row says so).
    for _ in 0..50 {
        let running = h
            .scalar(&format!(
                "SELECT count(*) FROM sys_vacuum_history WHERE schema_name = '{}' AND end_time IS NULL",
                h.schema
            ))
            .await;
        if running == "1" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let err = h.fails(&format!("VACUUM {t}")).await;
    assert!(err.contains("VACUUM is already running"), "{err}");
    assert_eq!(status(&h.wait(&first).await), "FINISHED");
    h.ok(&format!("VACUUM {t}")).await;
}

#[tokio::test]
async fn analyze_and_vacuum_without_the_right_complete_but_change_nothing() {
    let (h, user, client) = with_iam_user().await;
    let t = h.table("t");
    h.ok(&format!("CREATE TABLE {t} (id int)")).await;
    h.ok(&format!("INSERT INTO {t} SELECT generate_series(1, 10)"))
        .await;
    h.ok(&format!("GRANT USAGE ON SCHEMA {} TO \"{user}\"", h.schema))
        .await;
    h.ok(&format!("GRANT SELECT, INSERT ON {t} TO \"{user}\""))
        .await;
    for sql in [format!("ANALYZE {t}"), format!("VACUUM {t}")] {
        let (st, err) = run_as(&h, &client, &sql).await;
        assert_eq!(st, "FINISHED", "{sql}: {err}");
    }
    assert_eq!(info(&h, "t").await, Some((100.0, 100.0, 10, 10)));
    // Its own vacuum history is empty; SVV_TABLE_INFO needs a grant.
    let (st, err) = run_as(&h, &client, "SELECT count(*) FROM sys_vacuum_history").await;
    assert_eq!(st, "FINISHED", "{err}");
    let (st, err) = run_as(&h, &client, "SELECT * FROM svv_table_info").await;
    assert_eq!(st, "FAILED");
    assert!(
        err.contains("permission denied for relation svv_table_info"),
        "{err}"
    );
    h.ok(&format!("GRANT SELECT ON svv_table_info TO \"{user}\""))
        .await;
    let (st, err) = run_as(&h, &client, "SELECT * FROM svv_table_info").await;
    assert_eq!(st, "FINISHED", "{err}");
    let (_, err) = run_as(&h, &client, "SELECT * FROM sys_analyze_history").await;
    assert!(err.contains("permission denied"), "{err}");
}

#[tokio::test]
async fn a_member_of_a_role_with_the_analyze_and_vacuum_system_permissions_may_upkeep_any_table() {
    // https://docs.aws.amazon.com/redshift/latest/dg/r_roles-system-privileges.html
    let (h, user, client) = with_iam_user().await;
    let t = h.table("t");
    h.ok(&format!("CREATE TABLE {t} (id int)")).await;
    h.ok(&format!("INSERT INTO {t} SELECT generate_series(1, 10)"))
        .await;
    h.ok(&format!("GRANT USAGE ON SCHEMA {} TO \"{user}\"", h.schema))
        .await;
    let role = unique("upkeep_role");
    h.ok(&format!("CREATE ROLE {role}")).await;
    // System permissions go to roles; only a superuser grants them here.
    let (st, err) = run_as(&h, &client, &format!("GRANT VACUUM TO ROLE {role}")).await;
    assert_eq!(st, "FAILED");
    assert!(err.contains("permission denied"), "{err}");
    let (st, err) = run_as(&h, &client, &format!("GRANT VACUUM TO \"{user}\"")).await;
    assert_eq!(st, "FAILED");
    assert!(err.contains("roles only"), "{err}");
    h.ok(&format!("GRANT ANALYZE, VACUUM TO ROLE {role}")).await;

    // Not a member yet: no effect, as without any right.
    let (st, err) = run_as(&h, &client, &format!("ANALYZE {t}")).await;
    assert_eq!(st, "FINISHED", "{err}");
    assert_eq!(info(&h, "t").await, Some((100.0, 100.0, 10, 10)));
    let (st, err) = run_as(
        &h,
        &client,
        "SELECT COUNT(*) FROM svv_system_privileges WHERE system_privilege = 'VACUUM'",
    )
    .await;
    assert_eq!(st, "FINISHED", "{err}");

    h.ok(&format!("GRANT ROLE {role} TO \"{user}\"")).await;
    let (st, err) = run_as(
        &h,
        &client,
        "SELECT 1 FROM svv_system_privileges s WHERE s.system_privilege = 'ANALYZE' \
         AND s.identity_type = 'role' AND user_is_member_of(CURRENT_USER, s.identity_name)",
    )
    .await;
    assert_eq!(st, "FINISHED", "{err}");
    for sql in [format!("ANALYZE {t}"), format!("VACUUM {t} TO 100 PERCENT")] {
        let (st, err) = run_as(&h, &client, &sql).await;
        assert_eq!(st, "FINISHED", "{sql}: {err}");
    }
    assert_eq!(info(&h, "t").await, Some((0.0, 0.0, 10, 10)));

    // Revoked: no effect again.
    h.ok(&format!("REVOKE VACUUM FROM ROLE {role}")).await;
    h.ok(&format!("INSERT INTO {t} SELECT generate_series(11, 20)"))
        .await;
    let (st, err) = run_as(&h, &client, &format!("VACUUM {t} TO 100 PERCENT")).await;
    assert_eq!(st, "FINISHED", "{err}");
    assert_eq!(info(&h, "t").await.map(|i| i.1), Some(50.0));
}

#[tokio::test]
async fn sys_query_history_has_queue_and_execution_time_each_user_their_own() {
    let (h, _user, client) = with_iam_user().await;
    let marker = unique("admin_marker");
    h.ok(&format!("SELECT 42 AS {marker}")).await;
    let (st, _) = run_as(&h, &client, "SELECT 43 AS user_marker").await;
    assert_eq!(st, "FINISHED");
    let rows = h
        .rows(&format!(
            "SELECT query_type, status, queue_time, execution_time, elapsed_time \
             FROM sys_query_history WHERE query_text LIKE 'SELECT 42 AS {marker}%'"
        ))
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(text(&rows[0][0]).trim(), "SELECT");
    assert_eq!(text(&rows[0][1]).trim(), "success");
    let n = |i: usize| text(&rows[0][i]).parse::<i64>().expect("micros");
    assert!(n(2) >= 0 && n(3) > 0 && n(4) == n(2) + n(3));
    let (st, err) = run_as(
        &h,
        &client,
        &format!("SELECT 1/(user_id - user_id) FROM sys_query_history WHERE query_text LIKE 'SELECT 42 AS {marker}%'"),
    )
    .await;
    assert_eq!(
        st, "FINISHED",
        "a user does not see the admin's rows: {err}"
    );
}
