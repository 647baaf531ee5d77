//! Redshift's users, privileges, per-database isolation and other rules, through
//! the real SDK: each caller runs as the database user Redshift would derive.

mod common;

use aws_sdk_redshiftdata::config::retry::RetryConfig;
use aws_sdk_redshiftdata::types::SqlParameter;
use common::{error_code, start_with, status, unique, Harness};

/// A harness whose `--identity` maps one access key to `IAMR:<name>`; returns the
/// harness, the user name and a client signing with that key.
async fn with_iam_user() -> (Harness, String, aws_sdk_redshiftdata::Client) {
    let key = unique("AKIA").to_uppercase();
    let user = format!("IAMR:{}", unique("loader"));
    let (k, u) = (key.clone(), user.clone());
    let h = start_with(move |c| c.identities = vec![format!("{k}={u}")]).await;
    let client =
        common::data_api_client_as(&h.server.endpoint_url(), RetryConfig::standard(), &key);
    // Redshift creates an IAM identity's user at its first call.
    let (st, err) = run_as(&h, &client, "SELECT current_user").await;
    assert_eq!(st, "FINISHED", "{err}");
    (h, user, client)
}

/// Runs `sql` as `client` in the harness' workgroup; returns (status, error).
async fn run_as(h: &Harness, client: &aws_sdk_redshiftdata::Client, sql: &str) -> (String, String) {
    let out = client
        .execute_statement()
        .workgroup_name(&h.workgroup)
        .database("dev")
        .sql(sql)
        .send()
        .await
        .expect("accepted");
    let id = out.id().expect("Id").to_string();
    let d = h.wait(&id).await;
    (status(&d), d.error().unwrap_or_default().to_string())
}

#[tokio::test]
async fn an_iam_caller_runs_as_its_own_user_and_needs_grants() {
    let (h, user, client) = with_iam_user().await;
    let t = h.table("t");
    h.ok(&format!("CREATE TABLE {t} (id int)")).await;

    let (st, _) = run_as(&h, &client, "SELECT current_user, session_user").await;
    assert_eq!(st, "FINISHED");
    let (st, err) = run_as(&h, &client, &format!("INSERT INTO {t} VALUES (1)")).await;
    assert_eq!(st, "FAILED");
    assert_eq!(
        err,
        format!("ERROR: permission denied for schema {}", h.schema)
    );

    h.ok(&format!("GRANT USAGE ON SCHEMA {} TO \"{user}\"", h.schema))
        .await;
    let (_, err) = run_as(&h, &client, &format!("INSERT INTO {t} VALUES (1)")).await;
    assert_eq!(err, "ERROR: permission denied for relation t");
    h.ok(&format!(
        "GRANT INSERT, SELECT ON ALL TABLES IN SCHEMA {} TO \"{user}\"",
        h.schema
    ))
    .await;
    let (st, err) = run_as(&h, &client, &format!("INSERT INTO {t} VALUES (1)")).await;
    assert_eq!(st, "FINISHED", "{err}");

    // The session cannot switch back to the emulator's superuser.
    let (_, err) = run_as(&h, &client, "SET SESSION AUTHORIZATION postgres").await;
    assert_eq!(err, "ERROR: permission denied to set session authorization");
    let (_, err) = run_as(&h, &client, &format!("DROP TABLE {t}")).await;
    assert!(err.contains("must be owner of table t"), "{err}");
}

#[tokio::test]
async fn procedures_need_execute_and_only_the_owner_replaces_them() {
    let (h, user, client) = with_iam_user().await;
    let s = &h.schema;
    let proc = format!(
        "CREATE OR REPLACE PROCEDURE {s}.p(a VARCHAR(10)) AS $$ BEGIN RAISE INFO 'x'; END; $$ LANGUAGE plpgsql"
    );
    h.ok(&proc).await;
    h.ok(&format!("GRANT USAGE ON SCHEMA {s} TO \"{user}\""))
        .await;
    let call = format!("CALL {s}.p('a')");
    let (st, err) = run_as(&h, &client, &call).await;
    assert_eq!(st, "FAILED");
    assert_eq!(err, "ERROR: permission denied for procedure p");
    h.ok(&format!(
        "GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA {s} TO \"{user}\""
    ))
    .await;
    let (st, err) = run_as(&h, &client, &call).await;
    assert_eq!(st, "FINISHED", "{err}");
    // Replacing keeps the grant; only the owner may replace.
    h.ok(&proc).await;
    assert_eq!(run_as(&h, &client, &call).await.0, "FINISHED");
    h.ok(&format!("GRANT CREATE ON SCHEMA {s} TO \"{user}\""))
        .await;
    let (_, err) = run_as(&h, &client, &proc).await;
    // PostgreSQL's words; Redshift documents only that the owner may replace it.
    assert!(err.starts_with("ERROR: must be owner of "), "{err}");
    // Redshift's spelling for future procedures.
    h.ok(&format!(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT EXECUTE ON PROCEDURES TO \"{user}\""
    ))
    .await;
}

#[tokio::test]
async fn users_come_from_db_user_and_secrets_and_must_exist() {
    let h = common::start().await;
    let user = unique("etl");
    let by_user = |u: &str| {
        h.client
            .execute_statement()
            .cluster_identifier(&h.workgroup)
            .db_user(u)
            .database("dev")
            .sql("SELECT current_user")
            .send()
    };
    let id = by_user(&user).await.expect("accepted").id.unwrap();
    let d = h.wait(&id).await;
    assert_eq!(
        d.error(),
        Some(format!("FATAL: user \"{user}\" does not exist").as_str())
    );
    h.ok(&format!("CREATE USER {user} PASSWORD DISABLE")).await;
    let id = by_user(&user).await.expect("accepted").id.unwrap();
    assert_eq!(status(&h.wait(&id).await), "FINISHED");
    let rows = h.all_records(&id).await;
    assert_eq!(common::text(&rows[0][0]), user);

    let secret = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:rdl/{user}-AbC123");
    let id = h
        .client
        .execute_statement()
        .workgroup_name(&h.workgroup)
        .secret_arn(&secret)
        .database("dev")
        .sql("SELECT current_user")
        .send()
        .await
        .expect("accepted")
        .id
        .unwrap();
    assert_eq!(status(&h.wait(&id).await), "FINISHED");
    assert_eq!(common::text(&h.all_records(&id).await[0][0]), user);
}

#[tokio::test]
async fn statupdate_needs_the_table_owner() {
    let (h, user, client) = with_iam_user().await;
    let t = h.table("st");
    h.ok(&format!("CREATE TABLE {t} (id int)")).await;
    h.ok(&format!("GRANT USAGE ON SCHEMA {} TO \"{user}\"", h.schema))
        .await;
    h.ok(&format!("GRANT INSERT ON {t} TO \"{user}\"")).await;
    let copy = format!(
        "COPY {t} FROM 's3://nowhere-{}/x' IAM_ROLE 'arn:aws:iam::1:role/r' FORMAT AS CSV STATUPDATE ON",
        h.workgroup.replace('_', "-")
    );
    let (st, err) = run_as(&h, &client, &copy).await;
    assert_eq!(st, "FAILED");
    assert_eq!(
        err,
        "ERROR: skipping table --- only table or database owner can analyze it"
    );
}

#[tokio::test]
async fn empty_parameter_values_and_batch_parameters_are_refused() {
    let h = common::start().await;
    let empty = h.try_submit_with("SELECT :a", &[("a", "")]).await;
    assert_eq!(error_code(empty), "ValidationException");
    let ok = h.try_submit_with("SELECT :a", &[("a", " ")]).await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn databases_carry_their_isolation_level() {
    let h = common::start().await;
    let db = unique("iso");
    h.ok(&format!(
        "CREATE DATABASE {db} ISOLATION LEVEL SERIALIZABLE"
    ))
    .await;
    let level = |db: String| {
        let h = &h;
        async move {
            h.scalar(&format!(
                "SELECT trim(isolation_level) FROM stv_db_isolation_level WHERE db_name = '{db}'"
            ))
            .await
        }
    };
    assert_eq!(level(db.clone()).await, "Serializable");
    assert_eq!(level("dev".into()).await, "Snapshot Isolation");
    let in_db = |sql: &str| {
        h.client
            .execute_statement()
            .workgroup_name(&h.workgroup)
            .database(&db)
            .sql(sql)
            .send()
    };
    let id = in_db("SELECT current_setting('transaction_isolation')")
        .await
        .expect("accepted")
        .id
        .unwrap();
    h.wait(&id).await;
    assert_eq!(
        common::text(&h.all_records(&id).await[0][0]),
        "serializable"
    );
    h.ok(&format!("ALTER DATABASE {db} ISOLATION LEVEL SNAPSHOT"))
        .await;
    let id = in_db("SELECT current_setting('transaction_isolation')")
        .await
        .expect("accepted")
        .id
        .unwrap();
    h.wait(&id).await;
    assert_eq!(
        common::text(&h.all_records(&id).await[0][0]),
        "repeatable read"
    );
    assert_eq!(level(db.clone()).await, "Snapshot Isolation");
    h.ok(&format!("DROP DATABASE {db}")).await;
}

#[tokio::test]
async fn leader_node_only_functions_fail_on_user_tables() {
    let h = common::start().await;
    let t = h.table("ln");
    h.ok(&format!("CREATE TABLE {t} (at timestamp)")).await;
    let err = h.fails(&format!("INSERT INTO {t} VALUES (NOW())")).await;
    assert!(
        err.starts_with("ERROR: Specified types or functions (one per INFO message) not supported on Redshift tables."),
        "{err}"
    );
    h.ok(&format!("INSERT INTO {t} VALUES (GETDATE())")).await;
    h.ok("SELECT now()").await;
}

#[tokio::test]
async fn unused_sql_parameter_builder_compiles() {
    // SqlParameter with an empty value is buildable by the SDK: the service refuses it.
    assert!(SqlParameter::builder().name("a").value("").build().is_ok());
}

#[tokio::test]
async fn a_deadlock_is_reported_as_a_deadlock_not_as_1023() {
    let h = common::start().await;
    let (a, b) = (h.table("dl_a"), h.table("dl_b"));
    h.ok(&format!("CREATE TABLE {a} (v int)")).await;
    h.ok(&format!("CREATE TABLE {b} (v int)")).await;
    let one = h
        .submit_batch(&[
            &format!("LOCK {a}"),
            "SELECT pg_sleep(0.5)",
            &format!("LOCK {b}"),
        ])
        .await;
    let two = h
        .submit_batch(&[
            &format!("LOCK {b}"),
            "SELECT pg_sleep(0.5)",
            &format!("LOCK {a}"),
        ])
        .await;
    let (d1, d2) = tokio::join!(h.wait(&one), h.wait(&two));
    let failed: Vec<_> = [&d1, &d2]
        .into_iter()
        .filter(|d| status(d) == "FAILED")
        .collect();
    assert_eq!(failed.len(), 1, "{d1:?} {d2:?}");
    let error = failed[0].error().unwrap_or_default();
    assert!(error.starts_with("ERROR: deadlock detected"), "{error}");
    assert!(!error.contains("1023"), "{error}");
}

/// HAS_TABLE_PRIVILEGE is documented with a table name
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_HAS_TABLE_PRIVILEGE.html>); the
/// emulator refuses PostgreSQL's OID form (the stricter reading) and answers the name
/// form for the caller.
#[tokio::test]
async fn has_table_privilege_takes_the_table_by_name() {
    let (h, user, client) = with_iam_user().await;
    let t = h.table("t");
    h.ok(&format!("CREATE TABLE {t} (id int)")).await;
    h.ok(&format!("GRANT USAGE ON SCHEMA {} TO \"{user}\"", h.schema))
        .await;
    h.ok(&format!("GRANT SELECT ON {t} TO \"{user}\"")).await;

    let err = h
        .fails(&format!(
            "SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{}'",
            h.schema
        ))
        .await;
    assert!(
        err.starts_with("ERROR: function has_table_privilege(oid, unknown) does not exist"),
        "{err}"
    );
    let sql = format!(
        "SELECT has_table_privilege('\"{}\".\"t\"', 'SELECT'), \
         has_table_privilege('\"{}\".\"t\"', 'INSERT')",
        h.schema, h.schema
    );
    let out = client
        .execute_statement()
        .workgroup_name(&h.workgroup)
        .database("dev")
        .sql(&sql)
        .send()
        .await
        .expect("accepted");
    let id = out.id().expect("Id").to_string();
    let d = h.wait(&id).await;
    assert_eq!(status(&d), "FINISHED", "{:?}", d.error());
    let row = &h.all_records(&id).await[0];
    assert_eq!(
        (common::text(&row[0]), common::text(&row[1])),
        ("true".to_string(), "false".to_string())
    );
}
