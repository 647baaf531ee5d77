//! Route option `add_new_columns` (issue 20 item 3): a Parquet file's column the table
//! lacks is added to the table before the load, instead of refused.
//!
//! Where the `ALTER TABLE … ADD COLUMN` runs: Redshift refuses ALTER TABLE inside a
//! transaction block only for external tables
//! (<https://docs.aws.amazon.com/redshift/latest/dg/r_ALTER_TABLE.html>), so the load
//! batch could hold it. It runs as a statement of its own instead, under the lease,
//! before the load batch: ALTER TABLE locks the table "for read and write operations
//! until the transaction enclosing the ALTER TABLE operation completes", and inside the
//! load batch that would be the whole COPY, with every reader of the table waiting; on
//! its own it is a short lock. The price: a column added whose load then fails stays
//! (nullable, NULL in every row), and the retry finds it there.
//!
//! Two loaders adding the same column (two deployments on one table, a lease taken over,
//! an operator): Redshift's ADD COLUMN has no `IF NOT EXISTS`, so the loser's ALTER fails
//! with `column "x" of relation "t" already exists`; the loader then reads the table's
//! columns again and goes on, and the footer match checks the winner's type.

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::Warehouse;
use crate::lake::config::Route;
use crate::lake::partition::Partition;
use crate::protocol::lease::{self, Ctx, Held};
use crate::protocol::plan::{self, ListedObject};
use crate::run::handler::Loader;
use crate::sql::{self, Ident};

/// A column to add: its name as the table will hold it, its type, the file that has it.
struct NewColumn {
    name: Ident,
    data_type: String,
    file_url: String,
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// Adds to the table every column of `files`' footers it lacks (`ctx`: the holder's,
    /// of `route`'s table), then returns the
    /// table's columns read again (`lease` itself when nothing was added). Refuses, before
    /// any ALTER, a name Redshift would not keep as written (see [`Ident::parse`]), a type
    /// the loader does not add ([`crate::lake::schema_match::added_type`]), one name with two
    /// types in two files, and more columns than a table holds.
    pub(crate) async fn add_new_columns(
        &self,
        ctx: &Ctx<'_, W>,
        route: &Route,
        bucket: &str,
        partition: &Partition,
        lease: Held,
        files: &[ListedObject],
    ) -> Result<Held, LoaderError> {
        let mismatch = |reason: String| LoaderError::TableMismatch {
            table: route.table.to_string(),
            reason,
        };
        let mut new: Vec<NewColumn> = Vec::new();
        for f in files {
            let url = plan::s3_url(bucket, &f.key);
            let schema = self.file_schema(route, bucket, f).await?;
            for c in &schema.columns {
                if lease
                    .columns
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(&c.name))
                {
                    continue;
                }
                let name = Ident::parse(&c.name).map_err(|e| {
                    mismatch(format!(
                        "file {url} has column {:?}, which the table lacks and the loader \
                         cannot add: column {e}; rename it in the writer",
                        c.name
                    ))
                })?;
                let data_type = c.added_type.clone().map_err(|why| {
                    mismatch(format!(
                        "file {url} has column {:?} (Parquet {}), which the table lacks and the \
                         loader does not add: {why}; add it yourself (ALTER TABLE {} ADD COLUMN \
                         …) with a type Redshift loads it into",
                        c.name, c.kind, route.table
                    ))
                })?;
                match new.iter().find(|n| n.name == name) {
                    Some(n) if n.data_type != data_type => {
                        return Err(mismatch(format!(
                            "new column {name} is {} in file {} but {data_type} in file {url}: \
                             make the writers agree, or add the column yourself",
                            n.data_type, n.file_url
                        )))
                    }
                    Some(_) => {}
                    None => new.push(NewColumn {
                        name,
                        data_type,
                        file_url: url.clone(),
                    }),
                }
            }
        }
        if new.is_empty() {
            return Ok(lease);
        }
        if lease.columns.len() + new.len() > sql::MAX_TABLE_COLUMNS {
            return Err(mismatch(format!(
                "adding {} columns would pass Redshift's {} columns per table",
                new.len(),
                sql::MAX_TABLE_COLUMNS
            )));
        }
        for n in &new {
            let statement = sql::add_column(&route.table, &n.name, &n.data_type)?;
            match ctx.warehouse.run(statement, Vec::new(), ctx.deadline).await {
                Ok(_) => tracing::info!(table = %route.table, column = %n.name,
                    data_type = %n.data_type, file = %n.file_url, "column added to the table"),
                Err(LoaderError::StatementFailed { message, .. })
                    if sql::column_already_exists(&message, &n.name) =>
                {
                    tracing::info!(table = %route.table, column = %n.name,
                        "column added by someone else meanwhile; reading the table again")
                }
                Err(e) if e.kind() == crate::error::ErrorKind::Retryable => return Err(e),
                Err(e) => {
                    return Err(mismatch(format!(
                        "adding column {} {} (file {}) failed: {e}; the function's user must \
                         own the table (as its owner: ALTER TABLE {} OWNER TO …) or hold the \
                         ALTER TABLE system permission through a role (`loaderctl doctor` \
                         names both)",
                        n.name, n.data_type, n.file_url, route.table
                    )))
                }
            }
        }
        let held = lease::read_partition(ctx, &partition.path).await?;
        if let Some(n) = new
            .iter()
            .find(|n| !held.columns.iter().any(|c| c == n.name.as_str()))
        {
            return Err(mismatch(format!(
                "column {} was added but the table does not list it",
                n.name
            )));
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    use tokio::time::Instant;

    use super::*;
    use crate::io::warehouse::Row;
    use crate::lake::config::Config;

    /// Scripted answers for `run` (the ALTERs) and the re-read of the table's columns.
    struct Scripted {
        alters: Mutex<VecDeque<Result<String, LoaderError>>>,
        columns: Vec<Row>,
        sent: Mutex<Vec<String>>,
    }

    impl Warehouse for Scripted {
        async fn run_batch(&self, _: Vec<String>, _: Instant) -> Result<String, LoaderError> {
            Ok("reads".into())
        }
        async fn run(
            &self,
            sql: String,
            _: Vec<(&'static str, String)>,
            _: Instant,
        ) -> Result<String, LoaderError> {
            self.sent.lock().unwrap().push(sql);
            self.alters
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Err(LoaderError::Config("script ran out".into())))
        }
        async fn rows(&self, id: String, _: Instant) -> Result<Vec<Row>, LoaderError> {
            Ok(if id.ends_with(":2") {
                self.columns.clone()
            } else {
                Vec::new()
            })
        }
    }

    /// One Parquet file (`id` int64, `extra` double) whose end `tail` serves.
    struct OneFile(Vec<u8>);

    impl Storage for OneFile {
        async fn list(&self, _: &str, _: &str) -> Result<Vec<ListedObject>, LoaderError> {
            Ok(Vec::new())
        }
        async fn put(&self, _: &str, _: &str, _: String) -> Result<(), LoaderError> {
            Ok(())
        }
        async fn tail(&self, _: &str, _: &str, _: &str, len: u64) -> Result<Vec<u8>, LoaderError> {
            let from = self.0.len().saturating_sub(len as usize);
            Ok(self.0[from..].to_vec())
        }
    }

    fn parquet_file() -> Vec<u8> {
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("extra", Arc::new(Float64Array::from(vec![1.5])) as ArrayRef),
        ])
        .unwrap();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        buf
    }

    fn column(name: &str, data_type: &str) -> Row {
        vec![
            Some(name.into()),
            Some(data_type.into()),
            Some("YES".into()),
            None,
        ]
    }

    /// Runs `add_new_columns` for one file against a table of `id` only, the ALTER
    /// answered by `alter`; returns the outcome and the statements run.
    async fn add_with(
        alter: Result<String, LoaderError>,
    ) -> (Result<Held, LoaderError>, Vec<String>) {
        let routes = "[[routes]]\nprefix = \"t/\"\ntable = \"s.t\"\nformat = \"parquet\"\n\
                      partition_columns = [\"c\"]\nadd_new_columns = true\n";
        let env = [
            ("REDSHIFT_WORKGROUP", "wg"),
            ("REDSHIFT_DATABASE", "dev"),
            ("COPY_IAM_ROLE", "arn:aws:iam::1:role/r"),
            ("MANIFEST_PREFIX", "s3://m/p/"),
            ("LOADER_CONFIG", routes),
        ];
        let config = Config::from_lookup(|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        let route = config.routes[0].clone();
        let file = parquet_file();
        let listed = vec![ListedObject {
            key: "t/c=x/f.parquet".into(),
            size: file.len() as i64,
            etag: "e".into(),
            last_modified: None,
        }];
        let warehouse = Scripted {
            alters: Mutex::new(VecDeque::from([alter])),
            columns: vec![column("id", "bigint"), column("extra", "double precision")],
            sent: Mutex::new(Vec::new()),
        };
        let loader = Loader::new(config, warehouse, OneFile(file));
        let partition = crate::lake::partition::parse(&route, "t/c=x/f.parquet").unwrap();
        let lease = Held {
            columns: vec!["id".into()],
            column_types: vec!["bigint".into()],
            ..Held::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let ctx = Ctx::new(
            loader.warehouse(),
            loader.config(),
            &route.table,
            "me",
            deadline,
        );
        let out = loader
            .add_new_columns(&ctx, &route, "b", &partition, lease, &listed)
            .await;
        let sent = loader.warehouse().sent.lock().unwrap().clone();
        (out, sent)
    }

    #[tokio::test]
    async fn a_column_another_loader_added_first_is_read_again_and_other_failures_are_named() {
        let (held, sent) = add_with(Ok("added".into())).await;
        assert_eq!(
            sent,
            ["ALTER TABLE \"s\".\"t\" ADD COLUMN \"extra\" DOUBLE PRECISION"]
        );
        assert_eq!(held.unwrap().columns, ["id", "extra"]);

        let lost_race = LoaderError::StatementFailed {
            statement_id: "x".into(),
            message: "ERROR: column \"extra\" of relation \"t\" already exists".into(),
        };
        let (held, _) = add_with(Err(lost_race)).await;
        assert_eq!(held.unwrap().columns, ["id", "extra"]);

        let denied = LoaderError::StatementFailed {
            statement_id: "x".into(),
            message: "ERROR: permission denied for relation t".into(),
        };
        let e = add_with(Err(denied)).await.0.unwrap_err();
        assert_eq!(e.error_type(), "Permanent.TableMismatch");
        assert!(e.to_string().contains("OWNER TO"), "{e}");

        // A transient failure stays transient (the retry adds the column).
        let (out, _) = add_with(Err(LoaderError::Timeout {
            statement_id: "x".into(),
            status: "STARTED".into(),
        }))
        .await;
        assert_eq!(out.unwrap_err().kind(), crate::error::ErrorKind::Retryable);
    }
}
