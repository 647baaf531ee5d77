//! Replace mode for every column type a partition value can go to (issue 18, "Also
//! found"): the predicate that deletes a partition's rows, and the values a staged load
//! fills in, follow the table's column type, with and without a type in the route.

mod common;

use common::*;
use partition_loader::LoaderError;

/// One replace-mode route `rt/` → `<schema>.rt (id BIGINT, name VARCHAR(64), p <column>)`
/// whose partition column `p` is declared as `route_column` (TOML). Loads partition
/// `p=<raw>` (3 rows) next to a row of another partition (`other`, a SQL literal of the
/// column's type), then rewrites the partition's file (2 rows): the partition's rows are
/// replaced, the other row survives, and `p` holds `expected` (as `p::VARCHAR`, or NULL).
async fn replace_round_trip(
    column: &str,
    route_column: &str,
    raw: &str,
    other: &str,
    expected: Option<&str>,
) {
    let stack = Stack::new().await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"rt/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
         mode = \"replace\"\npartition_columns = [{route_column}]\n",
        stack.bucket,
        stack.table("rt")
    );
    let loader = stack.loader(&routes).await;
    let t = stack
        .create_table("rt", &format!("id BIGINT, name VARCHAR(64), p {column}"))
        .await;
    stack
        .sql(&format!("INSERT INTO {t} VALUES (99, 'other', {other})"))
        .await;
    let key = format!("rt/p={raw}/part-0.parquet");
    let event = stack.parquet_event(&key, 0..3).await;
    let o = handle(&loader, &event).await;
    assert_eq!(loaded_files(&o), 1, "{column} from {route_column}: {o:?}");
    assert_eq!(stack.rows(&t).await, 4);

    let event = stack.parquet_event(&key, 10..12).await;
    let o = handle(&loader, &event).await;
    assert_eq!(loaded_files(&o), 1, "rewrite of {column}: {o:?}");
    assert_eq!(stack.rows(&t).await, 3, "the partition's 3 rows became 2");
    let ids = stack
        .select(&format!("SELECT id, p::VARCHAR FROM {t} ORDER BY id"))
        .await;
    let expected = expected.map(str::to_string);
    assert_eq!(
        ids,
        vec![
            vec![Some("10".to_string()), expected.clone()],
            vec![Some("11".to_string()), expected],
            vec![Some("99".to_string()), stack_text_of(&stack, &t).await],
        ]
    );
}

async fn stack_text_of(stack: &Stack, t: &str) -> Option<String> {
    stack
        .text(&format!("SELECT p::VARCHAR FROM {t} WHERE id = 99"))
        .await
}

const UNTYPED: &str = "\"p\"";

#[tokio::test]
async fn date_column_untyped_route() {
    replace_round_trip(
        "DATE",
        UNTYPED,
        "2024-05-28",
        "'2024-05-01'",
        Some("2024-05-28"),
    )
    .await;
}

#[tokio::test]
async fn date_column_date_route() {
    let typed = "{ name = \"p\", type = \"date\" }";
    replace_round_trip(
        "DATE",
        typed,
        "2024-05-28",
        "'2024-05-01'",
        Some("2024-05-28"),
    )
    .await;
}

#[tokio::test]
async fn timestamp_column_untyped_route() {
    // Hive escapes ':' in a partition value as %3A.
    replace_round_trip(
        "TIMESTAMP",
        UNTYPED,
        "2024-05-28 10%3A30%3A00",
        "'2024-05-28 10:30:01'",
        Some("2024-05-28 10:30:00"),
    )
    .await;
}

#[tokio::test]
async fn smallint_column_untyped_route() {
    replace_round_trip("SMALLINT", UNTYPED, "05", "6", Some("5")).await;
}

#[tokio::test]
async fn integer_column_untyped_route() {
    replace_round_trip("INTEGER", UNTYPED, "2024", "2023", Some("2024")).await;
}

#[tokio::test]
async fn integer_column_integer_route() {
    let typed = "{ name = \"p\", type = \"integer\" }";
    replace_round_trip("INTEGER", typed, "2024", "2023", Some("2024")).await;
}

#[tokio::test]
async fn bigint_column_untyped_route() {
    replace_round_trip("BIGINT", UNTYPED, "-9000000000", "1", Some("-9000000000")).await;
}

#[tokio::test]
async fn decimal_column_untyped_route() {
    // 12.50 must not be rounded (Redshift's bare NUMERIC is NUMERIC(18,0)).
    replace_round_trip("DECIMAL(10,2)", UNTYPED, "12.50", "12.51", Some("12.50")).await;
}

#[tokio::test]
async fn boolean_column_untyped_route() {
    replace_round_trip("BOOLEAN", UNTYPED, "true", "FALSE", Some("true")).await;
}

#[tokio::test]
async fn char_column_untyped_route() {
    replace_round_trip("CHAR(8)", UNTYPED, "Paris", "'Pari'", Some("Paris")).await;
}

#[tokio::test]
async fn varchar_column_untyped_route() {
    replace_round_trip("VARCHAR(16)", UNTYPED, "Paris", "'Paris '", Some("Paris")).await;
}

#[tokio::test]
async fn varchar_column_date_route() {
    let typed = "{ name = \"p\", type = \"date\" }";
    replace_round_trip(
        "VARCHAR(16)",
        typed,
        "2024-05-28",
        "'2024-05-01'",
        Some("2024-05-28"),
    )
    .await;
}

#[tokio::test]
async fn varchar_column_integer_route() {
    let typed = "{ name = \"p\", type = \"integer\" }";
    replace_round_trip("VARCHAR(16)", typed, "7", "'8'", Some("7")).await;
}

#[tokio::test]
async fn null_partition_into_a_date_column() {
    replace_round_trip(
        "DATE",
        UNTYPED,
        "__HIVE_DEFAULT_PARTITION__",
        "'2024-05-01'",
        None,
    )
    .await;
}

/// A value the column cannot hold is a permanent, named error before anything runs.
#[tokio::test]
async fn a_value_the_column_cannot_hold_is_named_and_changes_nothing() {
    let stack = Stack::new().await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"rt/\"\ntable = \"{}\"\nformat = \"parquet\"\n\
         mode = \"replace\"\npartition_columns = [\"p\"]\n",
        stack.bucket,
        stack.table("rt")
    );
    let loader = stack.loader(&routes).await;
    let t = stack
        .create_table("rt", "id BIGINT, name VARCHAR(64), p SMALLINT")
        .await;
    stack
        .sql(&format!("INSERT INTO {t} VALUES (99, 'other', 1)"))
        .await;
    for raw in ["70000", "abc", "1.5"] {
        let event = stack
            .parquet_event(&format!("rt/p={raw}/part-0.parquet"), 0..3)
            .await;
        let e = handle(&loader, &event).await.unwrap_err();
        assert_eq!(e.error_type(), "Permanent.TableMismatch", "{raw}: {e}");
        assert!(
            e.to_string().contains("partition column p") && e.to_string().contains("smallint"),
            "{raw}: {e}"
        );
        assert!(matches!(e, LoaderError::TableMismatch { .. }));
    }
    assert_eq!(stack.rows(&t).await, 1);
    assert_eq!(stack.ledger_rows(&t).await, 0);
    assert_eq!(stack.lease_rows(&t).await, 0, "the lease was released");
}
