//! Runs submitted statements on PostgreSQL: one connection per statement (a Data
//! API call is its own session), transactions as the Data API defines them, COPY
//! through `redshift-copy`, and PostgreSQL errors worded as Redshift words them.

use crate::faults::Faults;
use crate::identity::Identity;
use crate::results::{self, ResultSet};
use crate::serializable::{self, Active, Snapshot, Transaction};
use crate::statements::{Mode, Registry, Statement, Status};
use crate::translate;
use redshift_copy::{LoadHistory, LoadStatus};
use std::collections::HashSet;
use std::sync::Arc;
use tokio_postgres::{Client, NoTls};

/// Redshift's two isolation levels and the PostgreSQL level that behaves alike.
/// A database's level is stored as PostgreSQL's per-database
/// `default_transaction_isolation` (see [`translate::database_isolation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Isolation {
    /// Older clusters' level; PostgreSQL SERIALIZABLE.
    Serializable,
    /// The default of new Serverless workgroups and clusters; PostgreSQL REPEATABLE READ.
    #[default]
    Snapshot,
}

impl Isolation {
    fn begin(self) -> &'static str {
        match self {
            Isolation::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            Isolation::Snapshot => "BEGIN ISOLATION LEVEL REPEATABLE READ",
        }
    }

    /// PostgreSQL's `default_transaction_isolation` value for this level.
    pub fn postgres_setting(self) -> &'static str {
        match self {
            Isolation::Serializable => "serializable",
            Isolation::Snapshot => "repeatable read",
        }
    }

    /// A database's level from its `default_transaction_isolation`; unset
    /// (`read committed`) means the emulator's default.
    fn of_database(setting: &str, default: Isolation) -> Isolation {
        match setting {
            "serializable" => Isolation::Serializable,
            "repeatable read" => Isolation::Snapshot,
            _ => default,
        }
    }
}

/// Created once per database (under an advisory lock, since several emulators
/// may share one PostgreSQL): GETDATE(), the query id sequence, load history,
/// STV_DB_ISOLATION_LEVEL, VARCHAR comparisons that ignore trailing blanks
/// ([`crate::varchar`]), and Redshift's default privileges:
/// - PUBLIC may CREATE in schema public
///   (<https://docs.aws.amazon.com/redshift/latest/dg/r_Privileges.html>);
/// - a new procedure is callable only by its owner and superusers until EXECUTE is
///   granted (PostgreSQL grants EXECUTE to PUBLIC; an event trigger revokes it)
///   (<https://docs.aws.amazon.com/redshift/latest/dg/stored-procedure-security-and-privileges.html>).
fn database_setup_sql(default: Isolation) -> String {
    let default_level = match default {
        Isolation::Serializable => "Serializable",
        Isolation::Snapshot => "Snapshot Isolation",
    };
    format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(7291540431);
         CREATE OR REPLACE FUNCTION public.getdate() RETURNS timestamp LANGUAGE sql STABLE
             AS $getdate$ SELECT date_trunc('second', statement_timestamp() AT TIME ZONE pg_catalog.current_setting('TimeZone')) $getdate$;
         CREATE OR REPLACE FUNCTION public.dateadd(part text, n bigint, ts timestamp) RETURNS timestamp
             LANGUAGE sql IMMUTABLE
             AS $dateadd$ SELECT ts + (n::text || ' ' || part)::interval $dateadd$;
         CREATE SEQUENCE IF NOT EXISTS public.rdl_query_id_seq;
         {history}
         {errors}
         {varchar}
         {conflicts}
         {upkeep}
         {rbac}
         GRANT CREATE, USAGE ON SCHEMA public TO PUBLIC;
         GRANT SELECT ON public.stl_load_commits, public.sys_load_history,
           public.sys_load_error_detail TO PUBLIC;
         CREATE OR REPLACE VIEW public.stv_db_isolation_level AS
           SELECT d.datname::char(128) AS db_name,
                  (CASE (SELECT split_part(c, '=', 2) FROM pg_db_role_setting s, unnest(s.setconfig) c
                         WHERE s.setdatabase = d.oid AND s.setrole = 0
                           AND c LIKE 'default_transaction_isolation=%' LIMIT 1)
                     WHEN 'serializable' THEN 'Serializable'
                     WHEN 'repeatable read' THEN 'Snapshot Isolation'
                     ELSE '{default_level}' END)::char(20) AS isolation_level
           FROM pg_database d WHERE d.datallowconn;
         GRANT SELECT ON public.stv_db_isolation_level TO PUBLIC;
         CREATE OR REPLACE FUNCTION public.rdl_procedures_private() RETURNS event_trigger
           LANGUAGE plpgsql AS $rdl$
           DECLARE r record;
           BEGIN
             FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE object_type = 'procedure' LOOP
               EXECUTE format('REVOKE EXECUTE ON PROCEDURE %s FROM PUBLIC', r.object_identity);
             END LOOP;
           END $rdl$;
         DO $rdl$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'rdl_procedures_private') THEN
             CREATE EVENT TRIGGER rdl_procedures_private ON ddl_command_end
               WHEN TAG IN ('CREATE PROCEDURE') EXECUTE FUNCTION public.rdl_procedures_private();
           END IF;
         END $rdl$;
         COMMIT;",
        history = redshift_copy::HISTORY_DDL,
        errors = LOAD_ERRORS_DDL,
        varchar = crate::varchar::VARCHAR_COMPARISON_SQL,
        conflicts = TR_CONFLICT_DDL,
        upkeep = crate::upkeep::UPKEEP_DDL,
        rbac = crate::rbac::RBAC_DDL
    )
}

/// Redshift's `SYS_LOAD_ERROR_DETAIL` (its columns, in schema `public`): one row per
/// failed COPY here. Redshift's system logs are not transactional: the row stays when
/// the COPY's transaction rolls back, so it is written on a connection of its own.
/// <https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_ERROR_DETAIL.html>
const LOAD_ERRORS_DDL: &str = "
         CREATE TABLE IF NOT EXISTS public.sys_load_error_detail (
           user_id integer, query_id bigint, transaction_id bigint, session_id integer,
           database_name character(64), table_id integer, start_time timestamp,
           file_name character(256), line_number bigint, column_name character(127),
           column_type character(10), column_length character(10), position integer,
           error_code integer, error_message character(512));";

/// Redshift's `STL_TR_CONFLICT` (its columns, in schema `public`, visible to
/// superusers only as on Redshift): one row per transaction rolled back with error
/// 1023, written outside the transaction like the load logs.
/// <https://docs.aws.amazon.com/redshift/latest/dg/r_STL_TR_CONFLICT.html>
const TR_CONFLICT_DDL: &str = "
         CREATE TABLE IF NOT EXISTS public.stl_tr_conflict (
           xact_id bigint, process_id bigint, xact_start_ts timestamp,
           abort_time timestamp, table_id bigint);";

/// Default for `--concurrency`: Redshift's manual WLM maximum of 50 query slots,
/// and a quarter of PostgreSQL's default `max_connections` (100 here, 200 on the
/// local stack) so that tests and admin sessions always find a connection.
pub const DEFAULT_CONCURRENCY: u32 = 50;

/// Opens a PostgreSQL connection and drives it on its own task.
async fn open(config: &tokio_postgres::Config) -> Result<Client, String> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| postgres_error_text(&e, 0))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

pub struct Executor {
    /// One permit per statement executing on PostgreSQL (see [`Executor::run`]).
    slots: Arc<tokio::sync::Semaphore>,
    postgres: tokio_postgres::Config,
    isolation: Isolation,
    s3: aws_sdk_s3::Client,
    faults: Arc<Faults>,
    registry: Arc<Registry>,
    prepared_databases: tokio::sync::Mutex<HashSet<String>>,
    /// Committed transactions of SERIALIZABLE databases, for Redshift's table-level
    /// check (see [`serializable`]).
    serializable: serializable::Tracker,
    /// `LOCK` counts as a write in that check (`--lock-is-write`).
    lock_is_write: bool,
}

/// One statement's session: its connection, database and isolation level.
struct Run<'a> {
    client: &'a Client,
    database: &'a str,
    isolation: Isolation,
}

/// A statement that ran to completion.
struct Done {
    rows: i64,
    result: Option<ResultSet>,
}

impl Executor {
    pub fn new(
        postgres: tokio_postgres::Config,
        isolation: Isolation,
        s3: aws_sdk_s3::Client,
        faults: Arc<Faults>,
        registry: Arc<Registry>,
        concurrency: usize,
    ) -> Executor {
        Executor {
            slots: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            postgres,
            isolation,
            s3,
            faults,
            registry,
            prepared_databases: tokio::sync::Mutex::new(HashSet::new()),
            serializable: serializable::Tracker::default(),
            lock_is_write: true,
        }
    }

    /// Counts `LOCK` (an `AccessExclusiveLock`) as a write in the table-level
    /// SERIALIZABLE check: the stricter reading, for measuring its cost.
    pub fn lock_is_write(mut self, yes: bool) -> Executor {
        self.lock_is_write = yes;
        self
    }

    /// Runs statement `id` to its final status. Never returns an error: every
    /// failure ends up in the statement's Error.
    ///
    /// A statement first waits, SUBMITTED, for one of the `--concurrency` slots (WLM's
    /// queue); only with a slot does it become PICKED and open its PostgreSQL
    /// connection. A waiting statement therefore holds no connection, no transaction
    /// and no lock, so every lock is held by a statement that has a slot and can run
    /// to its end: queueing cannot deadlock. The slot is held until the statement's
    /// connection is dropped at the end of this function.
    pub async fn run(self: Arc<Self>, id: String) {
        let hold = self.registry.get(&id).and_then(|s| {
            self.faults
                .take_hold(s.scope(), s.subs.iter().map(|sub| sub.bound_sql.as_str()))
        });
        if let Some(hold) = hold {
            // Held SUBMITTED, holding nothing (see `FaultSet::hold_statements`).
            tokio::time::sleep(hold).await;
            if self.cancel_requested(&id) {
                return self.finish_failed(&id, 0, String::new());
            }
        }
        let Ok(_slot) = Arc::clone(&self.slots).acquire_owned().await else {
            // The semaphore is never closed; if it were, fail rather than hang.
            return self.finish_failed(&id, 0, "ERROR: query queue closed".into());
        };
        let Some(statement) = self.registry.update(&id, |s| {
            s.set_status(Status::Picked);
            s.clone()
        }) else {
            return;
        };
        let database = statement.target.database.clone().unwrap_or_default();
        let client = match self.connect(&database).await {
            Ok(client) => client,
            Err(message) => return self.finish_failed(&id, 0, message),
        };
        let isolation = match self.start(&client, &statement).await {
            Ok(isolation) => isolation,
            Err(message) => return self.finish_failed(&id, 0, message),
        };
        if let Err(message) = self.become_user(&client, &statement.identity).await {
            return self.finish_failed(&id, 0, message);
        }
        let run = Run {
            client: &client,
            database: &database,
            isolation,
        };
        match statement.mode {
            Mode::Single | Mode::Transaction => self.run_transaction(&run, &id).await,
            Mode::AutoCommit => self.run_auto_commit(&run, &id).await,
        }
        tracing::debug!(statement = %id, "statement done");
    }

    /// Switches the session to the caller's database user (before BEGIN). An IAM
    /// identity is created on first use, as Redshift Serverless does; DbUser and
    /// secret users must exist.
    async fn become_user(&self, client: &Client, identity: &Identity) -> Result<(), String> {
        let Some(user) = identity.user() else {
            return Ok(());
        };
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .map_err(|e| postgres_error_text(&e, 0))?
            .is_some();
        let quoted = quote_ident(user);
        if !exists {
            if !matches!(identity, Identity::Iam(_)) {
                return Err(format!("FATAL: user \"{user}\" does not exist"));
            }
            if let Err(e) = client
                .batch_execute(&format!("CREATE ROLE {quoted} LOGIN"))
                .await
            {
                // Another call may have created it meanwhile.
                if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT)
                    && e.code() != Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
                {
                    return Err(postgres_error_text(&e, 0));
                }
            }
        }
        client
            .batch_execute(&format!("SET SESSION AUTHORIZATION {quoted}"))
            .await
            .map_err(|e| postgres_error_text(&e, 0))?;
        // The user's default time zone (`ALTER USER u SET timezone TO '…'`): "To set the
        // time zone for all sessions run by a specific database user, use the ALTER USER
        // command" (https://docs.aws.amazon.com/redshift/latest/dg/r_timezone_config.html),
        // and GETDATE/SYSDATE answer in the session's time zone
        // (https://docs.aws.amazon.com/redshift/latest/dg/r_GETDATE.html). PostgreSQL
        // applies role settings only at login, and the emulator logs in as itself.
        let zone = client
            .query_opt(
                "SELECT split_part(c, '=', 2) FROM pg_catalog.pg_db_role_setting s \
                 JOIN pg_catalog.pg_roles r ON r.oid = s.setrole \
                 CROSS JOIN LATERAL unnest(s.setconfig) AS c \
                 WHERE r.rolname = $1 AND lower(split_part(c, '=', 1)) = 'timezone' \
                 AND s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database \
                 WHERE datname = pg_catalog.current_database())) \
                 ORDER BY s.setdatabase DESC LIMIT 1",
                &[&user],
            )
            .await
            .map_err(|e| postgres_error_text(&e, 0))?
            .and_then(|row| row.get::<_, Option<String>>(0));
        if let Some(zone) = zone {
            client
                .query(
                    "SELECT pg_catalog.set_config('TimeZone', $1, false)",
                    &[&zone],
                )
                .await
                .map_err(|e| postgres_error_text(&e, 0))?;
        }
        Ok(())
    }

    /// A connection of the emulator's own (admin) user, for bookkeeping outside the
    /// caller's transaction.
    async fn connect_admin(&self, database: &str) -> Result<Client, String> {
        let mut config = self.postgres.clone();
        config.dbname(database);
        config.application_name("redshift-data-local-history");
        open(&config).await
    }

    /// Records the COPYs of a transaction that has ended, on another connection:
    /// Redshift keeps load history outside the loading transaction, aborted loads
    /// included. A failure to record is logged, never the statement's error.
    async fn record_loads(&self, database: &str, loads: Vec<LoadHistory>, status: LoadStatus) {
        if loads.is_empty() {
            return;
        }
        let client = match self.connect_admin(database).await {
            Ok(client) => client,
            Err(e) => return tracing::warn!(error = %e, "load history not recorded"),
        };
        for load in &loads {
            if let Err(e) = redshift_copy::write_history(&client, load, status).await {
                tracing::warn!(error = %e, "load history not recorded");
            }
        }
    }

    async fn connect(&self, database: &str) -> Result<Client, String> {
        let mut config = self.postgres.clone();
        config.dbname(database);
        config.application_name("redshift-data-local");
        if config.get_options().is_none() {
            // Redshift sessions run in UTC.
            config.options("-c TimeZone=UTC");
        }
        let client = open(&config).await?;
        self.prepare_database(&client, database).await?;
        Ok(client)
    }

    async fn prepare_database(&self, client: &Client, database: &str) -> Result<(), String> {
        let mut prepared = self.prepared_databases.lock().await;
        if prepared.contains(database) {
            return Ok(());
        }
        client
            .batch_execute(&database_setup_sql(self.isolation))
            .await
            .map_err(|e| {
                format!(
                    "redshift-data-local could not prepare database \"{database}\": {}",
                    postgres_error_text(&e, 0)
                )
            })?;
        prepared.insert(database.to_string());
        Ok(())
    }

    /// Reserves query ids and records the backend pid. Runs before BEGIN, so
    /// nothing touches the transaction before the caller's first statement.
    async fn start(&self, client: &Client, statement: &Statement) -> Result<Isolation, String> {
        let count = i32::try_from(statement.subs.len()).unwrap_or(i32::MAX);
        let row = client
            .query_one(
                "SELECT pg_backend_pid(), ARRAY(SELECT nextval('public.rdl_query_id_seq') FROM generate_series(1, $1::int4)), \
                 current_setting('default_transaction_isolation')",
                &[&count],
            )
            .await
            .map_err(|e| postgres_error_text(&e, 0))?;
        let pid: i32 = row.try_get(0).map_err(|e| format!("ERROR: {e}"))?;
        let query_ids: Vec<i64> = row.try_get(1).map_err(|e| format!("ERROR: {e}"))?;
        let setting: String = row.try_get(2).map_err(|e| format!("ERROR: {e}"))?;
        let token = client.cancel_token();
        self.registry.update(&statement.id, |s| {
            s.redshift_pid = pid.into();
            s.cancel_token = Some(token);
            for (sub, query_id) in s.subs.iter_mut().zip(query_ids) {
                sub.query_id = query_id;
            }
            s.set_status(Status::Started);
        });
        Ok(Isolation::of_database(&setting, self.isolation))
    }

    /// One transaction around all sub-statements; the first failure rolls back
    /// everything and the rest are ABORTED.
    async fn run_transaction(&self, run: &Run<'_>, id: &str) {
        let client = run.client;
        let Some(statement) = self.registry.get(id) else {
            return;
        };
        let mut loads = Vec::new();
        let pid = statement.redshift_pid;
        let autocommit = statement.mode == Mode::Single
            && statement
                .subs
                .first()
                .is_some_and(|s| translate::needs_autocommit(&s.bound_sql));
        let started = chrono::Utc::now().naive_utc();
        let tracked = self.track(run, !autocommit);
        if !autocommit {
            if let Err(e) = client.batch_execute(run.isolation.begin()).await {
                return self.finish_failed(id, 0, postgres_error_text(&e, pid));
            }
        }
        for index in 0..statement.subs.len() {
            if let Err(message) = self.run_sub(run, &statement, index, &mut loads).await {
                // Dropping the connection would roll back too; this keeps it explicit.
                let _ = client.batch_execute("ROLLBACK").await;
                self.record_loads(run.database, loads, LoadStatus::Aborted)
                    .await;
                self.record_conflict(run.database, pid, started, &message)
                    .await;
                return self.finish_failed(id, index, message);
            }
        }
        if !autocommit && self.faults.conflict(statement.scope()) {
            // As a real conflict: detected at COMMIT, the whole transaction rolled back.
            let _ = client.batch_execute("ROLLBACK").await;
            let message = redshift_error_text(
                "ERROR",
                "40001",
                "could not serialize access due to concurrent update (injected)",
                pid,
            );
            self.record_conflict(run.database, pid, started, &message)
                .await;
            return self.finish_failed(id, statement.subs.len(), message);
        }
        if !autocommit {
            if let Err(message) = self.commit(client, pid, tracked.as_ref()).await {
                self.record_loads(run.database, loads, LoadStatus::Aborted)
                    .await;
                self.record_conflict(run.database, pid, started, &message)
                    .await;
                return self.finish_failed(id, statement.subs.len(), message);
            }
        }
        self.record_loads(run.database, loads, LoadStatus::Completed)
            .await;
        self.registry.update(id, |s| s.set_status(Status::Finished));
    }

    /// ExecutionMode AUTO_COMMIT: each sub-statement commits on its own; a failure
    /// does not stop the others, and fails the batch.
    async fn run_auto_commit(&self, run: &Run<'_>, id: &str) {
        let client = run.client;
        let Some(statement) = self.registry.get(id) else {
            return;
        };
        let mut first_error = None;
        for index in 0..statement.subs.len() {
            if self.cancel_requested(id) {
                return self.finish_failed(id, index, String::new());
            }
            let mut loads = Vec::new();
            let started = chrono::Utc::now().naive_utc();
            let tracked = self.track(run, true);
            let result = match client.batch_execute(run.isolation.begin()).await {
                Ok(()) => self.run_sub(run, &statement, index, &mut loads).await,
                Err(e) => Err(postgres_error_text(&e, statement.redshift_pid)),
            };
            let result = match result {
                Ok(()) => {
                    self.commit(client, statement.redshift_pid, tracked.as_ref())
                        .await
                }
                Err(message) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    Err(message)
                }
            };
            let status = if result.is_ok() {
                LoadStatus::Completed
            } else {
                LoadStatus::Aborted
            };
            self.record_loads(run.database, loads, status).await;
            if let Err(message) = result {
                self.record_conflict(run.database, statement.redshift_pid, started, &message)
                    .await;
                self.registry.update(id, |s| {
                    s.subs[index].error = Some(message.clone());
                    s.set_sub_status(index, Status::Failed);
                });
                first_error.get_or_insert(message);
            }
        }
        self.registry.update(id, |s| match first_error {
            Some(message) => {
                s.error = Some(message);
                s.set_status(Status::Failed);
            }
            None => s.set_status(Status::Finished),
        });
    }

    /// Runs sub-statement `index`, recording its outcome; `Err` carries the
    /// Redshift-worded error.
    async fn run_sub(
        &self,
        run: &Run<'_>,
        statement: &Statement,
        index: usize,
        loads: &mut Vec<LoadHistory>,
    ) -> Result<(), String> {
        let client = run.client;
        if self.cancel_requested(&statement.id) {
            return Err(String::new());
        }
        let sub = &statement.subs[index];
        self.registry
            .update(&statement.id, |s| s.set_sub_status(index, Status::Started));
        let outcome = self
            .execute_sql(client, statement, &sub.bound_sql, sub.query_id, loads)
            .await;
        match outcome {
            Ok(done) => {
                self.registry.update(&statement.id, |s| {
                    s.subs[index].result_rows = done.rows;
                    s.subs[index].result = done.result.map(Arc::new);
                    s.set_sub_status(index, Status::Finished);
                });
                Ok(())
            }
            Err(message) => Err(message),
        }
    }

    async fn execute_sql(
        &self,
        client: &Client,
        statement: &Statement,
        sql: &str,
        query_id: i64,
        loads: &mut Vec<LoadHistory>,
    ) -> Result<Done, String> {
        let scope = statement.scope();
        let pid = statement.redshift_pid;
        let database = statement.target.database.as_deref().unwrap_or_default();
        if translate::is_transaction_control(sql) {
            return Err("ERROR: transaction control statements (BEGIN, COMMIT, ROLLBACK, ...) cannot be run through the Data API here: each call is its own transaction, and a batch is one transaction".into());
        }
        if statement.identity != Identity::Admin && translate::sets_session_user(sql) {
            return Err("ERROR: permission denied to set session authorization".into());
        }
        if let Some(function) = translate::leader_node_only_function(sql) {
            return Err(leader_node_error(&function));
        }
        if let Some(refusal) = translate::table_privilege_by_oid(sql) {
            return Err(refusal);
        }
        if let Some(refusal) = translate::undocumented_plpgsql(sql) {
            return Err(refusal);
        }
        if let Some(refusal) = translate::raise_with_expression(sql) {
            return Err(refusal);
        }
        if let Some(refusal) = translate::drop_procedure_if_exists(sql) {
            return Err(refusal);
        }
        // System permissions (ANALYZE, VACUUM) and role grants: see `crate::rbac`.
        if let Some(command) = crate::rbac::parse(sql) {
            let command = command?;
            let admin = self.connect_admin(database).await?;
            crate::rbac::run(client, &admin, command, pid).await?;
            return Ok(Done {
                rows: 0,
                result: None,
            });
        }
        if let Some(refusal) = translate::alter_table_add_column(sql) {
            return Err(refusal);
        }
        // ANALYZE, VACUUM and the views of their state: see `crate::upkeep`.
        if let Some(command) = crate::upkeep::parse(sql) {
            let command = command?;
            let hold = self.faults.vacuum_hold(scope);
            let admin = self.connect_admin(database).await?;
            let rows =
                crate::upkeep::run(client, &admin, statement, command, query_id, hold).await?;
            return Ok(Done { rows, result: None });
        }
        if crate::upkeep::reads_query_history(sql) {
            match self.connect_admin(database).await {
                Ok(admin) => {
                    crate::upkeep::record_query_history(&admin, database, &self.registry.snapshot())
                        .await
                }
                Err(e) => tracing::warn!(error = %e, "sys_query_history not recorded"),
            }
        }
        match redshift_copy::parse(sql) {
            Some(Err(e)) => Err(copy_error_text(&e, pid)),
            Some(Ok(command)) => {
                if let Some(message) = self.faults.take_copy_failure(scope, &command.table) {
                    self.record_load_error(database, query_id, &command, &message, pid)
                        .await;
                    return Err(message);
                }
                if command.stat_update == Some(true) {
                    check_table_owner(client, &command.table, pid).await?;
                }
                let (result, history) = redshift_copy::execute_unrecorded(
                    &command,
                    &self.s3,
                    client,
                    query_id,
                    statement.identity.user().map(str::to_string),
                    i32::try_from(pid).unwrap_or(0),
                )
                .await;
                loads.push(history);
                let report = match result {
                    Ok(report) => report,
                    Err(e) => {
                        // The row names the file the error is about when the error does
                        // (a corrupt Parquet file of a manifest), else the COPY's source.
                        let message = copy_error_text(&e, pid);
                        self.record_load_error(database, query_id, &command, &message, pid)
                            .await;
                        return Err(self.faults.file_names(scope).rewrite(&message));
                    }
                };
                Ok(Done {
                    rows: i64::try_from(report.rows).unwrap_or(i64::MAX),
                    result: None,
                })
            }
            None if translate::database_isolation(sql).is_some() => {
                let Some(change) = translate::database_isolation(sql) else {
                    return Err("ERROR: unreachable".into());
                };
                if let Some(create) = &change.create {
                    client
                        .batch_execute(create)
                        .await
                        .map_err(|e| postgres_error_text(&e, pid))?;
                }
                client
                    .batch_execute(&format!(
                        "ALTER DATABASE {} SET default_transaction_isolation TO '{}'",
                        quote_ident(&change.database),
                        change.level.postgres_setting()
                    ))
                    .await
                    .map_err(|e| postgres_error_text(&e, pid))?;
                Ok(Done {
                    rows: 0,
                    result: None,
                })
            }
            None => {
                let sql = translate::translate(sql);
                let prepared = client
                    .prepare(&sql)
                    .await
                    .map_err(|e| postgres_error_text(&e, pid))?;
                if prepared.columns().is_empty() {
                    let rows = client
                        .execute(&prepared, &[])
                        .await
                        .map_err(|e| postgres_error_text(&e, pid))?;
                    Ok(Done {
                        rows: i64::try_from(rows).unwrap_or(i64::MAX),
                        result: None,
                    })
                } else {
                    let rows = client
                        .query(&prepared, &[])
                        .await
                        .map_err(|e| postgres_error_text(&e, pid))?;
                    let result = results::collect(prepared.columns(), &rows)?;
                    Ok(Done {
                        rows: rows.len() as i64,
                        result: Some(result),
                    })
                }
            }
        }
    }

    /// Writes the `sys_load_error_detail` row of a failed COPY on a connection of its
    /// own, so that it outlives the rollback. The file is the one the error names (a
    /// Spectrum scan error of one file of a manifest), else the COPY's source (the
    /// manifest or prefix). For columnar COPY AWS says only that "some errors are
    /// logged in STL_LOAD_ERRORS and STL_ERROR"
    /// (<https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-columnar.html>);
    /// the loader never relies on this row, it keeps the statement's error text.
    /// Best effort: a failure here is logged, never the statement's error.
    async fn record_load_error(
        &self,
        database: &str,
        query_id: i64,
        command: &redshift_copy::CopyCommand,
        message: &str,
        pid: i64,
    ) {
        let result = async {
            let log = self.connect(database).await?;
            let session = i32::try_from(pid).unwrap_or_default();
            log.execute(
                "INSERT INTO public.sys_load_error_detail (user_id, query_id, session_id, \
                 database_name, table_id, start_time, file_name, error_message) \
                 VALUES ((SELECT usesysid::int FROM pg_user WHERE usename = current_user), \
                 $1, $2, current_database(), (SELECT to_regclass($3)::oid::int), \
                 clock_timestamp() AT TIME ZONE 'UTC', left($4, 256), left($5, 512))",
                &[
                    &query_id,
                    &session,
                    &command.table,
                    &named_file(message).unwrap_or(command.source.as_str()),
                    &message,
                ],
            )
            .await
            .map_err(|e| postgres_error_text(&e, pid))
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record sys_load_error_detail");
        }
    }

    /// Writes the `stl_tr_conflict` row of a transaction that failed with error 1023,
    /// on a connection of its own (the transaction has rolled back). Other errors
    /// write nothing. Best effort: a failure here is logged.
    async fn record_conflict(
        &self,
        database: &str,
        pid: i64,
        started: chrono::NaiveDateTime,
        message: &str,
    ) {
        let Some((table, xid)) = conflict_ids(message) else {
            return;
        };
        let result = async {
            let log = self.connect_admin(database).await?;
            log.execute(
                "INSERT INTO public.stl_tr_conflict (xact_id, process_id, xact_start_ts, \
                 abort_time, table_id) VALUES ($1, $2, $3, clock_timestamp() AT TIME ZONE 'UTC', $4)",
                &[&xid, &pid, &started, &table],
            )
            .await
            .map_err(|e| postgres_error_text(&e, pid))
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record stl_tr_conflict");
        }
    }

    /// Registers a transaction about to begin, when Redshift's table-level check
    /// applies to it (a SERIALIZABLE database, inside a transaction block).
    fn track(&self, run: &Run<'_>, transaction: bool) -> Option<Active> {
        (transaction && run.isolation == Isolation::Serializable)
            .then(|| self.serializable.begin(run.database))
    }

    /// COMMITs the open transaction. Under SERIALIZABLE, first Redshift's table-level
    /// rule: if committing would close a cycle of dependencies with the transactions
    /// committed before, roll back with error 1023 instead (see [`serializable`]).
    /// `Err` is the Redshift-worded error; the transaction has ended either way.
    async fn commit(
        &self,
        client: &Client,
        pid: i64,
        tracked: Option<&Active>,
    ) -> Result<(), String> {
        let Some(active) = tracked else {
            return client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| postgres_error_text(&e, pid));
        };
        // Held through COMMIT, which never waits for another transaction's lock here
        // (no deferred constraints or triggers), so the turn cannot deadlock.
        let _turn = active.turn().await;
        let candidate = match footprint(client, pid, active.begun(), self.lock_is_write).await {
            Ok(candidate) => candidate,
            Err(message) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(message);
            }
        };
        if let Some(cycle) = active.check(&candidate) {
            let _ = client.batch_execute("ROLLBACK").await;
            tracing::debug!(?cycle, "table-level serialization conflict");
            return Err(cycle.message(pid));
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| postgres_error_text(&e, pid))?;
        active.committed(candidate);
        Ok(())
    }

    fn cancel_requested(&self, id: &str) -> bool {
        self.registry
            .update(id, |s| s.cancel_requested)
            .unwrap_or(false)
    }

    /// Ends the statement: the sub at `failed` FAILED (or ABORTED when the caller
    /// cancelled), those after it ABORTED. `failed == subs.len()` means COMMIT failed.
    fn finish_failed(&self, id: &str, failed: usize, message: String) {
        self.registry.update(id, |s| {
            let cancelled = s.cancel_requested;
            let (status, message) = if cancelled {
                let query_id = s.subs.get(failed).map_or(0, |sub| sub.query_id);
                (
                    Status::Aborted,
                    format!("Query ({query_id}) cancelled on user's request"),
                )
            } else {
                (Status::Failed, message)
            };
            for index in failed..s.subs.len() {
                let sub_status = if index == failed {
                    status
                } else {
                    Status::Aborted
                };
                if index == failed {
                    s.subs[index].error = Some(message.clone());
                }
                s.set_sub_status(index, sub_status);
            }
            s.error = Some(message);
            s.set_status(status);
        });
    }
}

/// What the open transaction read and wrote, its xid and snapshot, on its own
/// connection just before COMMIT (see [`serializable::FOOTPRINT_SQL`]).
async fn footprint(
    client: &Client,
    pid: i64,
    begun: u64,
    lock_is_write: bool,
) -> Result<Transaction, String> {
    let failed = |e: tokio_postgres::Error| postgres_error_text(&e, pid);
    let malformed = |what: &str| format!("ERROR: redshift-data-local: unreadable {what}");
    let rows = client
        .query(serializable::FOOTPRINT_SQL, &[&lock_is_write])
        .await
        .map_err(failed)?;
    let identity = client
        .query_one(serializable::IDENTITY_SQL, &[])
        .await
        .map_err(failed)?;
    let xid: String = identity.try_get(0).map_err(failed)?;
    let snapshot: String = identity.try_get(1).map_err(failed)?;
    let mut transaction = Transaction {
        xid: xid.parse().map_err(|_| malformed("xid"))?,
        pid,
        snapshot: Snapshot::parse(&snapshot).ok_or_else(|| malformed("snapshot"))?,
        reads: Default::default(),
        writes: Default::default(),
        begun,
        committed: u64::MAX,
    };
    for row in rows {
        let oid: i64 = row.try_get(0).map_err(failed)?;
        let wrote: Option<bool> = row.try_get(1).map_err(failed)?;
        let read: Option<bool> = row.try_get(2).map_err(failed)?;
        let table = u32::try_from(oid).map_err(|_| malformed("table oid"))?;
        if wrote == Some(true) {
            transaction.writes.insert(table);
        }
        if read == Some(true) {
            transaction.reads.insert(table);
        }
    }
    Ok(transaction)
}

/// The table id and the first transaction of a 1023 error's text.
fn conflict_ids(message: &str) -> Option<(i64, i64)> {
    let rest =
        message.strip_prefix("ERROR: 1023 DETAIL: Serializable isolation violation on table - ")?;
    let (table, rest) = rest.split_once(", transactions forming the cycle are: ")?;
    let xid = rest.split([',', ' ']).next()?;
    Some((table.parse().ok()?, xid.parse().ok()?))
}

/// PostgreSQL's error in Redshift's words.
pub fn postgres_error_text(error: &tokio_postgres::Error, pid: i64) -> String {
    match error.as_db_error() {
        Some(db) if db.code().code() == "40P01" => match db.detail() {
            Some(detail) => format!("ERROR: {} DETAIL: {detail}", db.message()),
            None => format!("ERROR: {}", db.message()),
        },
        Some(db) => redshift_error_text(db.severity(), db.code().code(), db.message(), pid),
        None => format!("ERROR: {error}"),
    }
}

/// A double-quoted identifier (`IAMR:loader` needs the quotes).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Redshift refuses leader-node-only functions in a statement that touches user
/// tables (<https://docs.aws.amazon.com/redshift/latest/dg/c_SQL_functions_leader_node_only.html>).
/// The documented words are the first sentence; the function is named as Redshift's
/// INFO line names it.
pub fn leader_node_error(function: &str) -> String {
    format!(
        "ERROR: Specified types or functions (one per INFO message) not supported on Redshift \
         tables. INFO: Function \"{function}\" not supported."
    )
}

/// `COPY ... STATUPDATE ON` analyzes the table, which only its owner (or a
/// superuser) may do. Redshift's words for a non-owner are undocumented; these are
/// the ones Redshift clusters report ("skipping table --- only table or database
/// owner can analyze it"). Stricter reading: the COPY fails.
async fn check_table_owner(client: &Client, table: &str, pid: i64) -> Result<(), String> {
    let row = client
        .query_opt(
            "SELECT pg_has_role(current_user, c.relowner, 'USAGE') \
                    OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&table],
        )
        .await
        .map_err(|e| postgres_error_text(&e, pid))?;
    match row.map(|r| r.try_get::<_, bool>(0)) {
        Some(Ok(false)) => {
            Err("ERROR: skipping table --- only table or database owner can analyze it".into())
        }
        // A missing table fails in the COPY itself, with its own words.
        _ => Ok(()),
    }
}

/// Serialization failures become Redshift's error 1023; everything else keeps
/// PostgreSQL's message after Redshift's `ERROR: ` prefix (so a PL/pgSQL
/// `RAISE EXCEPTION 'msg'` reads `ERROR: msg`, as on Redshift).
pub fn redshift_error_text(severity: &str, sqlstate: &str, message: &str, pid: i64) -> String {
    match sqlstate {
        "40001" => format!(
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - 0, transactions forming the cycle are: {pid} (pid:{pid}) [PostgreSQL {sqlstate}: {message}]"
        ),
        // Deadlocks are not serialization conflicts: PostgreSQL's (and Redshift's) words.
        "40P01" => format!("ERROR: {message}"),
        // Redshift (PostgreSQL 8) says "relation" where PostgreSQL 15 names the kind.
        "42501" => format!(
            "ERROR: {}",
            message
                .replacen("permission denied for table ", "permission denied for relation ", 1)
                .replacen("permission denied for view ", "permission denied for relation ", 1)
                .replacen("permission denied for sequence ", "permission denied for relation ", 1)
        ),
        _ if severity == "FATAL" || severity == "PANIC" => format!("FATAL: {message}"),
        _ => format!("ERROR: {message}"),
    }
}

/// The `s3://` URL of the file a COPY error is about: the one after `File '` (a
/// Spectrum scan error) or `File name: ` (a column count mismatch).
fn named_file(message: &str) -> Option<&str> {
    let (start, end): (&str, &[char]) = if message.contains("File 's3://") {
        ("File '", &['\''])
    } else {
        ("File name: ", &[' ', ','])
    };
    let from = &message[message.find(start)? + start.len()..];
    let url = &from[..from.find(end).unwrap_or(from.len())];
    url.starts_with("s3://").then_some(url)
}

fn copy_error_text(error: &redshift_copy::CopyError, pid: i64) -> String {
    match error {
        redshift_copy::CopyError::Postgres(e) => postgres_error_text(e, pid),
        other => {
            let message = other.to_string();
            if message.starts_with("ERROR") {
                message
            } else {
                format!("ERROR: {message}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_failures_read_like_redshift_1023() {
        let text = redshift_error_text(
            "ERROR",
            "40001",
            "could not serialize access due to read/write dependencies among transactions",
            42,
        );
        assert!(text.starts_with("ERROR: 1023 DETAIL: Serializable isolation violation on table"));
        assert!(text.contains("(pid:42)"));
        assert_eq!(
            redshift_error_text("ERROR", "40P01", "deadlock detected", 1),
            "ERROR: deadlock detected"
        );
    }

    #[test]
    fn conflict_rows_take_the_table_and_first_transaction_of_the_1023_text() {
        let cycle = serializable::Cycle {
            table: 17403,
            xids: vec![1631, 1630],
        };
        assert_eq!(conflict_ids(&cycle.message(9)), Some((17403, 1631)));
        let postgres = redshift_error_text("ERROR", "40001", "could not serialize", 42);
        assert_eq!(conflict_ids(&postgres), Some((0, 42)));
        assert_eq!(conflict_ids("ERROR: deadlock detected"), None);
    }

    #[test]
    fn other_errors_keep_postgres_words() {
        assert_eq!(
            redshift_error_text("ERROR", "P0001", "lease lost", 1),
            "ERROR: lease lost"
        );
        assert_eq!(
            redshift_error_text("FATAL", "3D000", "database \"x\" does not exist", 1),
            "FATAL: database \"x\" does not exist"
        );
    }

    #[test]
    fn the_file_an_error_names_is_found() {
        assert_eq!(
            named_file("ERROR: Spectrum Scan Error. File 's3://b/p/f.parquet' is not valid"),
            Some("s3://b/p/f.parquet")
        );
        assert_eq!(
            named_file("Unmatched number of columns. Data columns: 3, File name: s3://b/k"),
            Some("s3://b/k")
        );
        assert_eq!(named_file("ERROR: Load into table 't' failed."), None);
    }

    #[test]
    fn copy_errors_get_the_error_prefix_once() {
        let e = redshift_copy::CopyError::Rejected("Unmatched number of columns".into());
        assert_eq!(copy_error_text(&e, 1), "ERROR: Unmatched number of columns");
        let e = redshift_copy::CopyError::Rejected("ERROR: already prefixed".into());
        assert_eq!(copy_error_text(&e, 1), "ERROR: already prefixed");
    }
}
