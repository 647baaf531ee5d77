//! Parquet columns by name (issue 20 item 3): files written by pyarrow whose columns
//! were reordered, dropped, added or retyped, loaded through the real handler against
//! the local stack. The emulator keeps Redshift's by-position rule for Parquet COPY
//! (`crates/redshift-copy/src/decode/columnar.rs`), so a loader that trusted the table's
//! order would load these wrong or fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use partition_loader::io::storage::S3;
use partition_loader::io::warehouse::{DataApi, Row, Warehouse};
use partition_loader::run::handler::Loader;
use partition_loader::{LoaderError, Outcome};
use tokio::time::Instant;

/// Runs `tests/writers/make_schema_drift.py` into a fresh directory.
fn make_files(suffix: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".local/venv/bin/python");
    let out = std::env::temp_dir().join(format!("schema-drift-{suffix}"));
    let status = Command::new(&python)
        .arg(root.join("tests/writers/make_schema_drift.py"))
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "run {} (scripts/local-stack up installs it): {e}",
                python.display()
            )
        });
    assert!(status.success(), "make_schema_drift.py failed");
    out
}

struct Drift {
    stack: Stack,
    dir: PathBuf,
    loader: TestLoader,
    table: String,
}

impl Drift {
    async fn new(columns: &str) -> Drift {
        Drift::with_route(columns, "").await
    }

    /// `extra` adds route keys such as `mode = "replace"`.
    async fn with_route(columns: &str, extra: &str) -> Drift {
        let stack = Stack::new().await;
        let dir = make_files(&stack.suffix);
        let table = stack.create_table("drift", columns).await;
        let routes = format!(
            "[[routes]]\nbucket = \"{}\"\nprefix = \"drift/\"\ntable = \"{table}\"\n\
             format = \"parquet\"\npartition_columns = [\"city\"]\n{extra}\n",
            stack.bucket
        );
        let loader = stack.loader(&routes).await;
        Drift {
            stack,
            dir,
            loader,
            table,
        }
    }

    /// Uploads the pyarrow files `rels` and sends the event of the last one.
    async fn load(&self, rels: &[&str]) -> Result<Outcome, LoaderError> {
        let mut event = None;
        for rel in rels {
            let body = std::fs::read(self.dir.join(rel)).unwrap();
            let key = format!("drift/{rel}");
            let (size, etag) = self.stack.put_object(&key, body).await;
            event = Some(object_created(&self.stack.bucket, &key, size, Some(&etag)));
        }
        handle(&self.loader, &event.expect("one file at least")).await
    }

    /// Uploads the pyarrow file `rel` under the key `drift/<key>` and sends its event.
    async fn load_as(&self, key: &str, rel: &str) -> Result<Outcome, LoaderError> {
        let body = std::fs::read(self.dir.join(rel)).unwrap();
        let key = format!("drift/{key}");
        let (size, etag) = self.stack.put_object(&key, body).await;
        let event = object_created(&self.stack.bucket, &key, size, Some(&etag));
        handle(&self.loader, &event).await
    }

    async fn rows(&self) -> Vec<Vec<Option<String>>> {
        self.stack
            .select(&format!(
                "SELECT id, qty, name, city FROM {} ORDER BY id",
                self.table
            ))
            .await
    }
}

impl Drop for Drift {
    fn drop(&mut self) {
        // CSV drifts load from the `csv/` folder of the generated directory.
        let dir = match self.dir.parent() {
            Some(parent) if self.dir.ends_with("csv") => parent,
            _ => &self.dir,
        };
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn row(id: i64, qty: Option<i64>, name: &str, city: &str) -> Vec<Option<String>> {
    vec![
        Some(id.to_string()),
        qty.map(|q| q.to_string()),
        Some(name.to_string()),
        Some(city.to_string()),
    ]
}

const TABLE: &str = "id BIGINT, qty BIGINT, name VARCHAR(64), city VARCHAR(64)";

fn refusal(r: Result<Outcome, LoaderError>) -> String {
    match r {
        Err(LoaderError::TableMismatch { reason, .. }) => reason,
        other => panic!("expected a refusal before COPY, got {other:?}"),
    }
}

#[tokio::test]
async fn reordered_columns_load_by_name_in_one_transaction() {
    let d = Drift::new(TABLE).await;
    let outcome = d
        .load(&["city=A/base.parquet", "city=A/reordered.parquet"])
        .await
        .unwrap();
    // Two layouts, one load batch: both files in one outcome and one commit.
    assert!(
        matches!(outcome, Outcome::Loaded { files: 2, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        d.rows().await,
        vec![
            row(1, Some(10), "one", "A"),
            row(2, Some(20), "two", "A"),
            row(3, Some(30), "three", "A"),
            row(4, Some(40), "four", "A"),
        ]
    );
    assert_eq!(d.loader.cached_footers(), 2, "one footer read per file");
    // Names that differ only in case match (Redshift folds identifiers to lower case).
    d.load(&["city=E/upper.parquet"]).await.unwrap();
    assert_eq!(d.rows().await[4], row(8, Some(80), "eight", "E"));
}

#[tokio::test]
async fn a_table_column_missing_from_the_file_loads_null() {
    let d = Drift::new(TABLE).await;
    let outcome = d.load(&["city=B/dropped.parquet"]).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Loaded { files: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(d.rows().await, vec![row(5, None, "five", "B")]);
}

#[tokio::test]
async fn a_not_null_column_missing_from_the_file_is_refused_naming_it() {
    let d = Drift::new("id BIGINT, qty BIGINT NOT NULL, name VARCHAR(64), city VARCHAR(64)").await;
    let reason = refusal(d.load(&["city=B/dropped.parquet"]).await);
    assert!(
        reason.contains("qty") && reason.contains("NOT NULL"),
        "{reason}"
    );
    assert_eq!(d.stack.ledger_rows(&d.table).await, 0);
    // With a DEFAULT the column is filled by it.
    let d =
        Drift::new("id BIGINT, qty BIGINT NOT NULL DEFAULT 0, name VARCHAR(64), city VARCHAR(64)")
            .await;
    d.load(&["city=B/dropped.parquet"]).await.unwrap();
    assert_eq!(d.rows().await, vec![row(5, Some(0), "five", "B")]);
}

#[tokio::test]
async fn a_file_column_the_table_lacks_is_refused_before_copy_naming_it_and_the_fix() {
    let d = Drift::new(TABLE).await;
    let reason = refusal(d.load(&["city=C/added.parquet"]).await);
    assert!(
        reason.contains("\"extra\"") && reason.contains("ADD COLUMN"),
        "{reason}"
    );
    assert_eq!(d.stack.rows(&d.table).await, 0);
    assert_eq!(d.stack.ledger_rows(&d.table).await, 0);
}

#[tokio::test]
async fn a_type_change_is_refused_before_copy_naming_both_types() {
    let d = Drift::new(TABLE).await;
    let reason = refusal(d.load(&["city=D/retyped.parquet"]).await);
    assert!(
        reason.contains("\"qty\"")
            && reason.contains("Parquet string")
            && reason.contains("bigint"),
        "{reason}"
    );
    assert_eq!(d.stack.rows(&d.table).await, 0);
}

#[tokio::test]
async fn a_rewritten_file_is_read_again_by_its_new_etag() {
    let d = Drift::with_route(TABLE, "mode = \"replace\"").await;
    d.load_as("city=A/part-0.parquet", "city=A/base.parquet")
        .await
        .unwrap();
    // The writer rewrites the same key with its columns in another order: a schema
    // cached by key alone would load it by the old order, qty into id.
    d.load_as("city=A/part-0.parquet", "city=A/reordered.parquet")
        .await
        .unwrap();
    assert_eq!(
        d.rows().await,
        vec![
            row(3, Some(30), "three", "A"),
            row(4, Some(40), "four", "A")
        ]
    );
    assert_eq!(d.loader.cached_footers(), 2, "one footer per (key, ETag)");
}

/// The route option `add_new_columns`: what `loaderctl bootstrap --grant-to` prints for
/// the table's owner to run (`sql::add_columns_right`), run as the owner. Redshift lets
/// the owner, a superuser or a holder of the ALTER TABLE system permission add a column;
/// the `GRANT ALTER ON TABLE` printed before is refused (no such table privilege).
async fn adding(d: &Drift) {
    let table = partition_loader::sql::TableName::parse(&d.table).expect("table name");
    let user = partition_loader::sql::DbUser::parse(&d.stack.db_user).expect("user name");
    d.stack
        .sql(&partition_loader::sql::add_columns_right(&table, &user))
        .await;
}

async fn column_types(d: &Drift) -> Vec<Vec<Option<String>>> {
    let (schema, name) = d.table.split_once('.').unwrap();
    d.stack
        .select(&format!(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_schema = '{schema}' AND table_name = '{name}' ORDER BY ordinal_position"
        ))
        .await
}

fn pair(a: &str, b: &str) -> Vec<Option<String>> {
    vec![Some(a.to_string()), Some(b.to_string())]
}

#[tokio::test]
async fn with_add_new_columns_a_new_file_column_is_added_typed_from_parquet_and_loaded() {
    let d = Drift::with_route(TABLE, "add_new_columns = true").await;
    // The loader's user may not alter a table it does not own: refused, naming the grant.
    let reason = refusal(d.load(&["city=C/added.parquet"]).await);
    assert!(
        reason.contains("extra") && reason.contains("OWNER TO"),
        "{reason}"
    );
    assert_eq!(d.stack.rows(&d.table).await, 0);

    adding(&d).await;
    let outcome = d.load(&["city=C/added.parquet"]).await.unwrap();
    assert!(
        matches!(outcome, Outcome::Loaded { files: 1, .. }),
        "{outcome:?}"
    );
    let got = d
        .stack
        .select(&format!(
            "SELECT id, CAST(extra AS VARCHAR) FROM {}",
            d.table
        ))
        .await;
    assert_eq!(got, vec![pair("6", "1.5")]);
    // Files without the new column load NULL into it.
    d.load(&["city=A/base.parquet"]).await.unwrap();
    let nulls = d
        .stack
        .count(&format!(
            "SELECT COUNT(*) FROM {} WHERE extra IS NULL",
            d.table
        ))
        .await;
    assert_eq!(nulls, 2);

    // Five new columns, each typed from its Parquet type.
    d.load(&["city=F/wide.parquet"]).await.unwrap();
    let types = column_types(&d).await;
    for expected in [
        pair("extra", "double precision"),
        pair("price", "numeric"),
        pair("seen", "timestamp with time zone"),
        pair("small", "smallint"),
        pair("label", "character varying"),
        pair("day", "date"),
    ] {
        assert!(types.contains(&expected), "{expected:?} in {types:?}");
    }
    let got = d
        .stack
        .select(&format!(
            "SELECT CAST(price AS VARCHAR), CAST(small AS VARCHAR), label, CAST(day AS VARCHAR) \
             FROM {} WHERE id = 9",
            d.table
        ))
        .await;
    assert_eq!(
        got,
        vec![vec![
            Some("12.34".to_string()),
            Some("7".to_string()),
            Some("new".to_string()),
            Some("2024-06-01".to_string())
        ]]
    );
}

#[tokio::test]
async fn with_add_new_columns_types_and_names_redshift_cannot_hold_are_refused_before_any_alter() {
    let d = Drift::with_route(TABLE, "add_new_columns = true").await;
    adding(&d).await;
    for (file, words) in [
        ("city=G/unsigned.parquet", "unsigned 64-bit"),
        ("city=H/nested.parquet", "nested"),
        ("city=I/spaced.parquet", "Order Date"),
    ] {
        let reason = refusal(d.load(&[file]).await);
        assert!(reason.contains(words), "{file}: {reason}");
    }
    assert_eq!(column_types(&d).await.len(), 4, "no column added");
    assert_eq!(d.stack.rows(&d.table).await, 0);
}

/// The Data API of the loader's user, except that another loader (here the admin) wins
/// every race to add a column: its `ALTER TABLE … ADD COLUMN` commits just before ours.
struct Racing {
    loader: DataApi,
    other: DataApi,
    raced: Arc<AtomicUsize>,
}

impl Warehouse for Racing {
    async fn run_batch(&self, sqls: Vec<String>, deadline: Instant) -> Result<String, LoaderError> {
        self.loader.run_batch(sqls, deadline).await
    }

    async fn run(
        &self,
        sql: String,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        if sql.starts_with("ALTER TABLE") && sql.contains(" ADD COLUMN ") {
            self.other.run(sql.clone(), Vec::new(), deadline).await?;
            self.raced.fetch_add(1, Ordering::SeqCst);
        }
        self.loader.run(sql, params, deadline).await
    }

    async fn rows(&self, statement_id: String, deadline: Instant) -> Result<Vec<Row>, LoaderError> {
        self.loader.rows(statement_id, deadline).await
    }
}

#[tokio::test]
async fn with_add_new_columns_a_column_another_loader_added_first_is_not_a_failure() {
    let stack = Stack::new().await;
    let dir = make_files(&stack.suffix);
    let table = stack.create_table("drift", TABLE).await;
    stack
        .sql(&format!("ALTER TABLE {table} OWNER TO {}", stack.db_user))
        .await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"drift/\"\ntable = \"{table}\"\n\
         format = \"parquet\"\npartition_columns = [\"city\"]\nadd_new_columns = true\n",
        stack.bucket
    );
    stack.bootstrap_as_admin(&routes).await;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let data_api = |c: &partition_loader::Config| {
        DataApi::new(
            aws_sdk_redshiftdata::Client::new(&sdk),
            c.redshift.clone(),
            c.database.clone(),
        )
    };
    let config = stack.config(&routes);
    let raced = Arc::new(AtomicUsize::new(0));
    let racing = Racing {
        loader: data_api(&config),
        other: data_api(&stack.admin_config(&routes)),
        raced: raced.clone(),
    };
    let loader = Loader::new(config, racing, S3::new(stack.s3.clone()));

    let key = "drift/city=C/added.parquet";
    let body = std::fs::read(dir.join("city=C/added.parquet")).unwrap();
    let (size, etag) = stack.put_object(key, body).await;
    let event = object_created(&stack.bucket, key, size, Some(&etag));
    let outcome = loader.handle(&event, &holder(), deadline()).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(outcome, Ok(Outcome::Loaded { files: 1, .. })),
        "{outcome:?}"
    );
    assert_eq!(
        stack
            .select(&format!("SELECT id, CAST(extra AS VARCHAR) FROM {table}"))
            .await,
        vec![pair("6", "1.5")]
    );
    assert_eq!(raced.load(Ordering::SeqCst), 1, "the loader lost one race");
}

/// A CSV route with a header row over the files under `csv/` of make_schema_drift.py.
async fn csv_drift(columns: &str) -> Drift {
    let stack = Stack::new().await;
    let dir = make_files(&stack.suffix).join("csv");
    let table = stack.create_table("drift", columns).await;
    let routes = format!(
        "[[routes]]\nbucket = \"{}\"\nprefix = \"drift/\"\ntable = \"{table}\"\n\
         format = \"csv\"\nheader = true\npartition_columns = [\"city\"]\n",
        stack.bucket
    );
    let loader = stack.loader(&routes).await;
    Drift {
        stack,
        dir,
        loader,
        table,
    }
}

#[tokio::test]
async fn csv_with_a_header_loads_by_the_header_names_in_one_transaction() {
    let d = csv_drift(TABLE).await;
    // pyarrow and polars wrote the columns in two other orders: by position, name would
    // go into id and fail, and qty and id would swap.
    let outcome = d
        .load(&["city=A/pyarrow.csv", "city=A/polars.csv"])
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Loaded { files: 2, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        d.rows().await,
        vec![
            row(11, Some(110), "eleven", "A"),
            row(12, Some(120), "twelve", "A")
        ]
    );
    // A table column the header lacks loads NULL.
    d.load(&["city=B/dropped.csv"]).await.unwrap();
    assert_eq!(d.rows().await[2], row(13, None, "thirteen", "B"));
    // A header column the table lacks is refused before any COPY, named with the fix.
    let reason = refusal(d.load(&["city=C/added.csv"]).await);
    assert!(
        reason.contains("\"extra\"") && reason.contains("ADD COLUMN"),
        "{reason}"
    );
    assert_eq!(d.stack.rows(&d.table).await, 3);
}

#[tokio::test]
async fn csv_without_a_not_null_column_is_refused_naming_it_and_a_default_fills_it() {
    let d = csv_drift("id BIGINT, qty BIGINT NOT NULL, name VARCHAR(64), city VARCHAR(64)").await;
    let reason = refusal(d.load(&["city=B/dropped.csv"]).await);
    assert!(
        reason.contains("qty") && reason.contains("NOT NULL"),
        "{reason}"
    );
    assert_eq!(d.stack.ledger_rows(&d.table).await, 0);
    let d =
        csv_drift("id BIGINT, qty BIGINT NOT NULL DEFAULT 0, name VARCHAR(64), city VARCHAR(64)")
            .await;
    d.load(&["city=B/dropped.csv"]).await.unwrap();
    assert_eq!(d.rows().await, vec![row(13, Some(0), "thirteen", "B")]);
}

#[tokio::test]
async fn compressed_csv_is_refused_naming_the_file_before_any_copy() {
    let d = csv_drift(TABLE).await;
    let gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
    let key = "drift/city=A/part-0.csv.gz";
    let (size, etag) = d.stack.put_object(key, gz).await;
    let event = object_created(&d.stack.bucket, key, size, Some(&etag));
    let reason = refusal(handle(&d.loader, &event).await);
    assert!(
        reason.contains("part-0.csv.gz") && reason.contains("gzip"),
        "{reason}"
    );
}
