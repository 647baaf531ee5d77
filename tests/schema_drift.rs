//! Parquet columns by name (issue 20 item 3): files written by pyarrow whose columns
//! were reordered, dropped, added or retyped, loaded through the real handler against
//! the local stack. The emulator keeps Redshift's by-position rule for Parquet COPY
//! (`crates/redshift-copy/src/decode/columnar.rs`), so a loader that trusted the table's
//! order would load these wrong or fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use partition_loader::{LoaderError, Outcome};

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
        let _ = std::fs::remove_dir_all(&self.dir);
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
