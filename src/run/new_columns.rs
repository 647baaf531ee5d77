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

use crate::config::Route;
use crate::error::LoaderError;
use crate::handler::Loader;
use crate::lease::{self, Ctx, Held};
use crate::partition::Partition;
use crate::plan::{self, ListedObject};
use crate::sql::{self, Ident};
use crate::storage::Storage;
use crate::warehouse::Warehouse;

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
    /// the loader does not add ([`crate::schema_match::added_type`]), one name with two
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
                        "adding column {} {} (file {}) failed: {e}; the function's user needs \
                         ALTER on the table (GRANT ALTER ON TABLE {} TO …) or must own it",
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
