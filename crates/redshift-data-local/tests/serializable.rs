//! Redshift's table-level SERIALIZABLE rule, through the Data API: transactions that
//! read and write DIFFERENT ROWS of the same tables in a cycle conflict on Redshift
//! (error 1023 naming a table and the transactions), where PostgreSQL's row-level
//! SSI lets both commit.
//! <https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation.html>

mod common;

use common::{status, Harness};
use redshift_data_local::Isolation;
use tokio_postgres::NoTls;

async fn postgres() -> tokio_postgres::Client {
    let url = common::env("LOCAL_POSTGRES_URL");
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("connect to the local PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Two tables of 10 000 rows with a primary key, so that reading one row is an index
/// scan and PostgreSQL's predicate locks stay on that row's pages.
async fn two_tables(h: &Harness, name: &str) -> (String, String) {
    let (a, b) = (h.table(&format!("{name}_a")), h.table(&format!("{name}_b")));
    let pg = postgres().await;
    for t in [&a, &b] {
        pg.batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL);
             INSERT INTO {t} SELECT g, 0 FROM generate_series(1, 10000) g;
             ANALYZE {t};"
        ))
        .await
        .expect("set-up");
    }
    (a, b)
}

type Described = aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;

/// Submits `first` as one batch, then `gap_ms` later `second`, and waits for both.
async fn overlapping(
    h: &Harness,
    first: &[String],
    gap_ms: u64,
    second: &[String],
) -> (Described, Described) {
    let one = h
        .submit_batch(&first.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(gap_ms)).await;
    let two = h
        .submit_batch(&second.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    tokio::join!(h.wait(&one), h.wait(&two))
}

/// T1 reads row 1 of `a` and writes row 9000 of `b`; T2 reads row 1 of `b` and writes
/// row 9000 of `a`; they overlap. Returns their DescribeStatement outputs.
async fn write_skew(h: &Harness, a: &str, b: &str) -> (Described, Described) {
    let t1 = [
        format!("SELECT v FROM {a} WHERE id = 1"),
        "SELECT pg_sleep(1)".to_string(),
        format!("UPDATE {b} SET v = v + 1 WHERE id = 9000"),
    ];
    let t2 = [
        format!("SELECT v FROM {b} WHERE id = 1"),
        "SELECT pg_sleep(1)".to_string(),
        format!("UPDATE {a} SET v = v + 1 WHERE id = 9000"),
    ];
    overlapping(h, &t1, 0, &t2).await
}

async fn oid(table: &str) -> i64 {
    postgres()
        .await
        .query_one("SELECT to_regclass($1)::oid::bigint", &[&table])
        .await
        .expect("oid")
        .get(0)
}

#[tokio::test]
async fn different_rows_of_two_tables_in_a_cycle_fail_one_with_1023() {
    let h = common::start_with(|c| c.isolation = Isolation::Serializable).await;
    let (a, b) = two_tables(&h, "skew").await;
    let (d1, d2) = write_skew(&h, &a, &b).await;
    let statuses = [status(&d1), status(&d2)];
    assert!(statuses.contains(&"FINISHED".into()), "{statuses:?}");
    assert!(statuses.contains(&"FAILED".into()), "{d1:?} {d2:?}");
    let failed = if status(&d1) == "FAILED" { &d1 } else { &d2 };
    let error = failed.error().unwrap_or_default();
    // Redshift's shape: "... on table - <table id>, transactions forming the cycle
    // are: <xid>, <xid> (pid:<pid>)".
    let prefix = "ERROR: 1023 DETAIL: Serializable isolation violation on table - ";
    let rest = error
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{error}"));
    let (table, rest) = rest.split_once(", ").expect("table id, then the cycle");
    let table: i64 = table.parse().unwrap_or_else(|_| panic!("{error}"));
    assert!(
        table == oid(&a).await || table == oid(&b).await,
        "names one of the two tables: {error}"
    );
    let rest = rest
        .strip_prefix("transactions forming the cycle are: ")
        .unwrap_or_else(|| panic!("{error}"));
    let (xids, pid) = rest.split_once(" (pid:").expect("(pid:…)");
    let xids: Vec<u64> = xids
        .split(", ")
        .map(|x| x.parse().unwrap_or_else(|_| panic!("{error}")))
        .collect();
    assert_eq!(xids.len(), 2, "{error}");
    assert_ne!(xids[0], xids[1]);
    let pid: i64 = pid
        .trim_end_matches(')')
        .parse()
        .unwrap_or_else(|_| panic!("{error}"));
    // Logged as Redshift logs it, outside the rolled-back transaction.
    let logged = h
        .scalar(&format!(
            "SELECT count(*) FROM stl_tr_conflict WHERE xact_id = {} AND table_id = {table} \
             AND process_id = {pid} AND abort_time >= xact_start_ts",
            xids[0]
        ))
        .await;
    assert_eq!(logged, "1", "one stl_tr_conflict row for {error}");
    // Rolled back: exactly one of the two updates is there.
    let total = h
        .scalar(&format!(
            "SELECT (SELECT v FROM {a} WHERE id = 9000) + (SELECT v FROM {b} WHERE id = 9000)"
        ))
        .await;
    assert_eq!(total, "1");
}

/// The premise of the rule above: PostgreSQL's own SERIALIZABLE lets the same two
/// transactions both commit, so the 1023 comes from the emulator's table-level check.
#[tokio::test]
async fn postgres_alone_lets_the_same_cycle_commit() {
    let h = common::start().await;
    let (a, b) = two_tables(&h, "pgssi").await;
    let (c1, c2) = (postgres().await, postgres().await);
    for c in [&c1, &c2] {
        c.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .await
            .unwrap();
    }
    c1.query(&format!("SELECT v FROM {a} WHERE id = 1"), &[])
        .await
        .unwrap();
    c2.query(&format!("SELECT v FROM {b} WHERE id = 1"), &[])
        .await
        .unwrap();
    c1.execute(&format!("UPDATE {b} SET v = v + 1 WHERE id = 9000"), &[])
        .await
        .unwrap();
    c2.execute(&format!("UPDATE {a} SET v = v + 1 WHERE id = 9000"), &[])
        .await
        .unwrap();
    c1.batch_execute("COMMIT").await.expect("first commits");
    c2.batch_execute("COMMIT")
        .await
        .expect("second commits too");
}

#[tokio::test]
async fn the_same_cycle_commits_under_snapshot_isolation() {
    let h = common::start_with(|c| c.isolation = Isolation::Snapshot).await;
    let (a, b) = two_tables(&h, "snap").await;
    let (d1, d2) = write_skew(&h, &a, &b).await;
    assert_eq!(status(&d1), "FINISHED", "{:?}", d1.error());
    assert_eq!(status(&d2), "FINISHED", "{:?}", d2.error());
}

#[tokio::test]
async fn transactions_on_disjoint_tables_never_conflict() {
    let h = common::start_with(|c| c.isolation = Isolation::Serializable).await;
    let (a, b) = two_tables(&h, "left").await;
    let (c, d) = two_tables(&h, "right").await;
    let t1 = [
        format!("SELECT count(*) FROM {a}"),
        "SELECT pg_sleep(1)".to_string(),
        format!("UPDATE {b} SET v = v + 1"),
    ];
    let t2 = [
        format!("SELECT count(*) FROM {c}"),
        "SELECT pg_sleep(1)".to_string(),
        format!("UPDATE {d} SET v = v + 1"),
    ];
    let (d1, d2) = overlapping(&h, &t1, 0, &t2).await;
    assert_eq!(status(&d1), "FINISHED", "{:?}", d1.error());
    assert_eq!(status(&d2), "FINISHED", "{:?}", d2.error());
}

/// AWS's documented cure for 1023 (lock every table at the start of the
/// transaction) works: the second transaction's snapshot follows the first's commit.
#[tokio::test]
async fn locking_the_tables_first_serialises_the_cycle() {
    let h = common::start_with(|c| c.isolation = Isolation::Serializable).await;
    let (a, b) = two_tables(&h, "cure").await;
    let batch = |read: &str, write: &str| {
        vec![
            format!("LOCK {a}, {b}"),
            format!("SELECT v FROM {read} WHERE id = 1"),
            "SELECT pg_sleep(0.5)".to_string(),
            format!("UPDATE {write} SET v = v + 1 WHERE id = 9000"),
        ]
    };
    let (d1, d2) = overlapping(&h, &batch(&a, &b), 0, &batch(&b, &a)).await;
    assert_eq!(status(&d1), "FINISHED", "{:?}", d1.error());
    assert_eq!(status(&d2), "FINISHED", "{:?}", d2.error());
}

/// Which table a busy acquirer locks.
#[derive(Clone, Copy)]
enum Locks {
    /// The first version of the loader's protocol.
    Lease,
    /// Today's: a table no load batch touches.
    Wakeup,
}

/// The loader's busy acquirer (LOCK a table, read the lease, queue a wake-up) while a
/// load runs whose fence then reads and updates the lease row (and, when the acquirer
/// locked the lease table, waits for its lock, so it commits last). Returns (load,
/// acquirer).
async fn busy_acquirer_during_a_load(h: &Harness, locks: Locks) -> (Described, Described) {
    let (lease, wakeup) = two_tables(h, "lease").await;
    let target = h.table("target");
    h.ok(&format!("CREATE TABLE {target} (v int)")).await;
    let load = [
        format!("INSERT INTO {target} VALUES (1)"),
        "SELECT pg_sleep(0.5)".to_string(),
        format!("UPDATE {lease} SET v = v + 1 WHERE id = 1"),
    ];
    let locked = match locks {
        Locks::Lease => &lease,
        Locks::Wakeup => &wakeup,
    };
    let busy = [
        format!("LOCK {locked}"),
        format!("SELECT v FROM {lease} WHERE id = 1"),
        "SELECT pg_sleep(0.8)".to_string(),
        format!("INSERT INTO {wakeup} VALUES (20000, 1)"),
    ];
    overlapping(h, &load, 200, &busy).await
}

/// Under the reading that `LOCK` alone is not a write (`--lock-is-write false`), a
/// busy acquirer locking the lease table and the load are one dependency, not a cycle.
#[tokio::test]
async fn lock_alone_is_not_a_write_under_the_other_reading() {
    let h = common::start_with(|c| {
        c.isolation = Isolation::Serializable;
        c.lock_is_write = false;
    })
    .await;
    let (load, busy) = busy_acquirer_during_a_load(&h, Locks::Lease).await;
    assert_eq!(status(&load), "FINISHED", "{:?}", load.error());
    assert_eq!(status(&busy), "FINISHED", "{:?}", busy.error());
}

/// Under the emulator's default reading (`LOCK` is a write) the same two close a cycle
/// on the lease table and the load, committing last, fails with 1023: why the loader's
/// acquirers lock the wake-up table, which no load touches, instead.
#[tokio::test]
async fn lock_is_write_makes_the_busy_acquirer_fail_the_load() {
    let h = common::start_with(|c| {
        c.isolation = Isolation::Serializable;
        c.lock_is_write = true;
    })
    .await;
    let (load, busy) = busy_acquirer_during_a_load(&h, Locks::Lease).await;
    assert_eq!(status(&busy), "FINISHED", "{:?}", busy.error());
    assert_eq!(status(&load), "FAILED");
    assert!(
        load.error().unwrap_or_default().contains("ERROR: 1023"),
        "{:?}",
        load.error()
    );
}

/// The loader's protocol: the busy acquirer locks the wake-up table, which the load
/// never touches, so even with `LOCK` counted as a write the two are one dependency.
#[tokio::test]
async fn a_busy_acquirer_locking_the_wakeup_table_never_fails_the_load() {
    let h = common::start_with(|c| {
        c.isolation = Isolation::Serializable;
        c.lock_is_write = true;
    })
    .await;
    let (load, busy) = busy_acquirer_during_a_load(&h, Locks::Wakeup).await;
    assert_eq!(status(&load), "FINISHED", "{:?}", load.error());
    assert_eq!(status(&busy), "FINISHED", "{:?}", busy.error());
}

/// A read and a write of the same table against a concurrent writer of that table is
/// a cycle at table granularity (T2 read the table before T1's write, T1's version is
/// under T2's write), even on different rows.
#[tokio::test]
async fn read_then_write_of_a_table_a_concurrent_writer_changed_fails() {
    let h = common::start_with(|c| c.isolation = Isolation::Serializable).await;
    let (a, _) = two_tables(&h, "same").await;
    let reader = [
        format!("SELECT v FROM {a} WHERE id = 1"),
        "SELECT pg_sleep(0.8)".to_string(),
        format!("UPDATE {a} SET v = v + 1 WHERE id = 2"),
    ];
    let reader = h
        .submit_batch(&reader.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let writer = h
        .submit(&format!("INSERT INTO {a} VALUES (20000, 1)"))
        .await;
    let (d1, d2) = tokio::join!(h.wait(&reader), h.wait(&writer));
    assert_eq!(status(&d2), "FINISHED", "{:?}", d2.error());
    assert_eq!(status(&d1), "FAILED");
    assert!(
        d1.error().unwrap_or_default().contains("1023"),
        "{:?}",
        d1.error()
    );
}
