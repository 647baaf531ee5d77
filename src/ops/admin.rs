//! The operator's statements, for `loaderctl`: bootstrap (schema, per-table lease,
//! ledger and wake-up tables, procedures), grants, and statements run as they are
//! (status, history, unlock, ledger; and the metrics' read of the load history after
//! an invocation's work). None of this is on the path of an event's load.

use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::{Row, Warehouse};
use crate::run::handler::Loader;
use crate::sql::{self, LeaseTables, TableName};

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// Creates the loader schema and, for every configured route's table, its lease
    /// (one free row), ledger and wake-up tables and lease procedures (idempotent; copies
    /// the table's rows of the shared ledger of earlier versions the first time).
    pub async fn bootstrap(&self, deadline: Instant) -> Result<String, LoaderError> {
        let schema = &self.config().loader_schema;
        let mut id = self
            .warehouse()
            .run_batch(sql::bootstrap(schema), deadline)
            .await?;
        // Upkeep's per-table watermark (see `upkeep.rs`).
        self.warehouse()
            .run(
                crate::ops::upkeep::watermark_table_sql(schema),
                Vec::new(),
                deadline,
            )
            .await?;
        let tables: Vec<&TableName> = self
            .config()
            .table_routes()
            .into_iter()
            .map(|r| &r.table)
            .collect();
        for table in &tables {
            let t = LeaseTables::for_target(table);
            self.migrate_wakeup_table(&t, deadline).await?;
            self.drop_old_procedures(&t, deadline).await?;
        }
        // A batch holds at most 40 statements: as many whole tables as fit (11
        // statements each, with the quarantine table).
        let mut sqls: Vec<String> = Vec::new();
        for table in &tables {
            let more = sql::bootstrap_table(schema, &LeaseTables::for_target(table))?;
            if !sqls.is_empty() && sqls.len() + more.len() > 40 {
                id = self
                    .warehouse()
                    .run_batch(std::mem::take(&mut sqls), deadline)
                    .await?;
            }
            sqls.extend(more);
        }
        if !sqls.is_empty() {
            id = self.warehouse().run_batch(sqls, deadline).await?;
        }
        Ok(id)
    }

    /// Adds `route_prefix` to a wake-up table created by an earlier version (a table
    /// may have several routes, and each wake-up now says which). Redshift has no `ADD
    /// COLUMN IF NOT EXISTS`, so the catalog is asked first; a wake-up table that does
    /// not exist yet is created with the column by [`sql::bootstrap_table`].
    async fn migrate_wakeup_table(
        &self,
        t: &LeaseTables,
        deadline: Instant,
    ) -> Result<(), LoaderError> {
        let schema = &self.config().loader_schema;
        let count = |rows: Vec<Row>| {
            rows.first()
                .and_then(|r| r.first().cloned().flatten())
                .is_some_and(|n| n != "0")
        };
        let exists = count(
            self.query(sql::wakeup_exists(schema, t)?, vec![], deadline)
                .await?,
        );
        if !exists {
            return Ok(());
        }
        let has_column = count(
            self.query(sql::wakeup_has_route_column(schema, t)?, vec![], deadline)
                .await?,
        );
        if !has_column {
            tracing::info!(table = %t.target, "adding route_prefix to the wake-up table");
            self.execute(sql::add_wakeup_route_column(schema, t), vec![], deadline)
                .await?;
        }
        Ok(())
    }

    /// Drops the procedures of earlier versions that the catalog shows (Redshift's
    /// DROP PROCEDURE has no `IF EXISTS`: see [`sql::drop_old_procedures`]).
    async fn drop_old_procedures(
        &self,
        t: &LeaseTables,
        deadline: Instant,
    ) -> Result<(), LoaderError> {
        let schema = &self.config().loader_schema;
        let arities: Vec<(String, String)> = self
            .query(sql::procedure_arities(schema, t)?, vec![], deadline)
            .await?
            .into_iter()
            .filter_map(|r| match (r.first(), r.get(1)) {
                (Some(Some(name)), Some(Some(n))) => Some((name.clone(), n.clone())),
                _ => None,
            })
            .collect();
        for drop in sql::drop_old_procedures(schema, t, &arities) {
            tracing::info!(table = %t.target, statement = %drop, "dropping an earlier version's procedure");
            self.execute(drop, vec![], deadline).await?;
        }
        Ok(())
    }

    /// Grants `user` (the function's database user) what it needs on the loader schema
    /// ([`sql::grant_loader`]); run by the schema's owner after [`Loader::bootstrap`].
    pub async fn grant_loader(
        &self,
        user: &sql::DbUser,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        self.warehouse()
            .run_batch(
                sql::grant_loader(&self.config().loader_schema, user),
                deadline,
            )
            .await
    }

    /// Creates `user` when it is an IAM identity's database user that does not exist
    /// yet (see [`sql::create_user`]); true when it created it. Other users must exist:
    /// a missing one fails the grants with Redshift's words.
    pub async fn create_iam_user_if_missing(
        &self,
        user: &sql::DbUser,
        deadline: Instant,
    ) -> Result<bool, LoaderError> {
        if !user.is_iam() {
            return Ok(false);
        }
        let rows = self
            .query(
                sql::user_exists().into(),
                vec![("user", user.as_str().to_string())],
                deadline,
            )
            .await?;
        if !rows.is_empty() {
            return Ok(false);
        }
        self.warehouse()
            .run(sql::create_user(user), vec![], deadline)
            .await?;
        Ok(true)
    }

    /// Runs one statement (with `:name` parameters) that returns no rows.
    pub async fn execute(
        &self,
        sql: String,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        self.warehouse().run(sql, params, deadline).await
    }

    /// Runs statements as one transaction (a batch) that returns no rows.
    pub async fn execute_batch(
        &self,
        sqls: Vec<String>,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        self.warehouse().run_batch(sqls, deadline).await
    }

    /// Runs one query in a UTC session and returns its rows: for reads that compare
    /// lease times with GETDATE() (see [`sql::UTC_SESSION`]), whatever the operator's
    /// default time zone.
    pub async fn query_utc(&self, sql: String, deadline: Instant) -> Result<Vec<Row>, LoaderError> {
        let id = self
            .warehouse()
            .run_batch(vec![sql::UTC_SESSION.to_string(), sql], deadline)
            .await?;
        self.warehouse().rows(format!("{id}:2"), deadline).await
    }

    /// Runs one statement (with `:name` parameters) and returns its rows.
    pub async fn query(
        &self,
        sql: String,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<Vec<Row>, LoaderError> {
        let id = self.warehouse().run(sql, params, deadline).await?;
        self.warehouse().rows(id, deadline).await
    }
}
