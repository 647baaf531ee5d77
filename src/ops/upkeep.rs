//! Table upkeep after loads: `ANALYZE` when a table's statistics went stale, `VACUUM`
//! when its rows went unsorted or deleted rows piled up (replace mode deletes).
//!
//! Redshift runs automatic analyze and vacuum delete/sort when the system is lightly
//! loaded; AWS still advises a manual VACUUM after large loads and an ANALYZE when a
//! non-empty table's size changed a lot, and COPY analyzes on its own only into an
//! empty table (<https://docs.aws.amazon.com/redshift/latest/dg/t_Reclaiming_storage_space202.html>,
//! <https://docs.aws.amazon.com/redshift/latest/dg/r_ANALYZE.html>). The decisions are
//! pure ([`decide`]) and read `SVV_TABLE_INFO`
//! (<https://docs.aws.amazon.com/redshift/latest/dg/r_SVV_TABLE_INFO.html>).
//!
//! Where it runs: at the end of the scheduled sweep, after its loads and within its
//! deadline, and from `loaderctl upkeep`. Never on an event's path, never in a load's
//! transaction ("You can't run VACUUM within a transaction block",
//! <https://docs.aws.amazon.com/redshift/latest/dg/r_VACUUM_command.html>), and it holds
//! no lease, so loads never wait for it. Its failures are logged, never a load's.
//!
//! State: a per-table watermark in the loader schema, `upkeep (table_name, done_through)`
//! = the ledger's newest `loaded_at` that upkeep has dealt with. A sweep reads every
//! upkept table's newest `loaded_at` and watermark in ONE statement; a table with
//! nothing newer gets no further call. SYS_ANALYZE_HISTORY (superusers only) and
//! SYS_VACUUM_HISTORY (a user's own rows) could not tell that alone.
//!
//! Rules kept: one VACUUM at a time on a cluster, so at most one is submitted per run
//! and none while one of ours runs (our rows of SYS_VACUUM_HISTORY without an end); a
//! VACUUM is submitted and left to run; one refused (another VACUUM runs) leaves the
//! watermark where it was, so the next sweep tries again. Without the right (owner,
//! superuser, or a role with the VACUUM/ANALYZE system permission,
//! <https://docs.aws.amazon.com/redshift/latest/dg/r_roles-system-privileges.html>)
//! Redshift's current page says the command "completes successfully but has no effect";
//! older pages said it fails. Upkeep checks the right first, each of ANALYZE and VACUUM
//! on its own (ownership, superuser, or SVV_SYSTEM_PRIVILEGES rows of a role the user
//! is a member of, by USER_IS_MEMBER_OF), and skips what it may not run, saying why, so
//! it is right under both readings.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::Storage;
use crate::io::warehouse::{Row, Warehouse};
use crate::lake::config::Route;
use crate::run::handler::Loader;
use crate::sql::{self, Ident, LeaseTables, TableName};

/// A route's `analyze` / `vacuum`: whether upkeep may run it for the route's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Setting {
    /// When the table's state passes the threshold (the default).
    #[default]
    Auto,
    /// Never (Redshift's automatic analyze/vacuum still runs).
    Off,
}

/// A route's upkeep options and thresholds (percent, 0 to 100).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub analyze: Setting,
    pub vacuum: Setting,
    /// ANALYZE when `stats_off` is above this; default 10, Redshift's
    /// `analyze_threshold_percent`.
    pub analyze_threshold: f64,
    /// VACUUM (sort) when `unsorted` is above this; default 10.
    pub unsorted_threshold: f64,
    /// VACUUM (delete) when deleted rows are above this percent of `tbl_rows`; default 10.
    pub deleted_threshold: f64,
    /// `VACUUM ... TO n PERCENT`; default 95, Redshift's own.
    pub vacuum_to_percent: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            analyze: Setting::Auto,
            vacuum: Setting::Auto,
            analyze_threshold: 10.0,
            unsorted_threshold: 10.0,
            deleted_threshold: 10.0,
            vacuum_to_percent: 95,
        }
    }
}

impl Options {
    pub fn is_off(&self) -> bool {
        self.analyze == Setting::Off && self.vacuum == Setting::Off
    }
}

/// A table as SVV_TABLE_INFO and the catalog show it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableState {
    /// The loader's user may ANALYZE the table: its owner, a superuser, or a member of
    /// a role with the ANALYZE system permission.
    pub may_analyze: bool,
    /// Likewise for VACUUM (the VACUUM system permission).
    pub may_vacuum: bool,
    /// `false`: no SVV_TABLE_INFO row (an empty table).
    pub has_rows: bool,
    pub stats_off: Option<f64>,
    pub unsorted: Option<f64>,
    pub tbl_rows: i64,
    pub visible_rows: i64,
    pub vacuum_sort_benefit: Option<f64>,
}

impl TableState {
    /// Rows marked deleted and not yet vacuumed, in percent of `tbl_rows`.
    pub fn deleted_percent(&self) -> f64 {
        if self.tbl_rows <= 0 {
            return 0.0;
        }
        (self.tbl_rows - self.visible_rows).max(0) as f64 * 100.0 / self.tbl_rows as f64
    }
}

/// Which VACUUM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VacuumMode {
    Full,
    SortOnly,
    DeleteOnly,
}

/// What upkeep does for one table.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Nothing,
    Run {
        analyze: bool,
        vacuum: Option<VacuumMode>,
    },
    /// Not allowed to: the reason, said once.
    Skip(String),
}

/// The decision for one table (pure).
pub fn decide(table: &TableName, options: &Options, state: &TableState, user: &str) -> Plan {
    if options.is_off() || !state.has_rows {
        return Plan::Nothing;
    }
    let analyze = options.analyze == Setting::Auto
        && state
            .stats_off
            .is_some_and(|s| s > options.analyze_threshold);
    let vacuum = if options.vacuum == Setting::Auto {
        // A sort with no benefit to scans is skipped (AWS: check vacuum_sort_benefit
        // before a VACUUM SORT); a table without a sort key has no `unsorted`.
        let sort = state
            .unsorted
            .is_some_and(|u| u > options.unsorted_threshold)
            && state.vacuum_sort_benefit.is_none_or(|b| b > 0.0);
        let delete = state.deleted_percent() > options.deleted_threshold;
        match (sort, delete) {
            (true, true) => Some(VacuumMode::Full),
            (true, false) => Some(VacuumMode::SortOnly),
            (false, true) => Some(VacuumMode::DeleteOnly),
            (false, false) => None,
        }
    } else {
        None
    };
    if !analyze && vacuum.is_none() {
        return Plan::Nothing;
    }
    let mut missing = Vec::new();
    if analyze && !state.may_analyze {
        missing.push("ANALYZE");
    }
    if vacuum.is_some() && !state.may_vacuum {
        missing.push("VACUUM");
    }
    let analyze = analyze && state.may_analyze;
    let vacuum = vacuum.filter(|_| state.may_vacuum);
    if !analyze && vacuum.is_none() {
        return Plan::Skip(missing_right(table, user, &missing));
    }
    if !missing.is_empty() {
        // Run what it may; the rest is named once.
        say_once(&missing_right(table, user, &missing));
    }
    Plan::Run { analyze, vacuum }
}

/// Why upkeep may not run `missing` (ANALYZE, VACUUM) on `table`, and the grant.
pub fn missing_right(table: &TableName, user: &str, missing: &[&str]) -> String {
    let what = missing.join(" or ").to_ascii_lowercase();
    let perms = missing.join(", ");
    format!(
        "{user} may not {what} {table}: only its owner, a superuser or a member of a role \
         with the {perms} system permission may (Redshift would run it to no effect); \
         as a superuser: CREATE ROLE loader_upkeep; GRANT {perms} TO ROLE loader_upkeep; \
         GRANT ROLE loader_upkeep TO {user} (or make {user} the owner)"
    )
}

/// `ANALYZE <table> PREDICATE COLUMNS`: the columns queries filter, join and group by.
pub fn analyze_sql(table: &TableName) -> String {
    format!("ANALYZE {} PREDICATE COLUMNS", table.quoted())
}

/// `VACUUM <mode> <table> TO n PERCENT`.
pub fn vacuum_sql(table: &TableName, mode: VacuumMode, to_percent: u32) -> String {
    let mode = match mode {
        VacuumMode::Full => "FULL",
        VacuumMode::SortOnly => "SORT ONLY",
        VacuumMode::DeleteOnly => "DELETE ONLY",
    };
    format!(
        "VACUUM {mode} {} TO {} PERCENT",
        table.quoted(),
        to_percent.min(100)
    )
}

/// The watermark table (created by `loaderctl bootstrap`).
pub fn watermark_table_sql(schema: &Ident) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.\"upkeep\" (table_name VARCHAR(300) NOT NULL, \
         done_through TIMESTAMP NOT NULL)",
        schema.quoted()
    )
}

/// Per table: newest `loaded_at`, and whether it is newer than the watermark.
fn pending_sql(schema: &Ident, tables: &[&TableName]) -> Result<String, LoaderError> {
    let mut parts = Vec::new();
    for table in tables {
        let name = sql::literal(&table.to_string())?;
        let ledger = format!(
            "{}.{}",
            schema.quoted(),
            LeaseTables::for_target(table).ledger.quoted()
        );
        parts.push(format!(
            "SELECT {name}, TO_CHAR(l.newest, 'YYYY-MM-DD HH24:MI:SS.US'), \
             CASE WHEN l.newest > COALESCE(w.done, '1900-01-01'::timestamp) THEN 1 ELSE 0 END \
             FROM (SELECT MAX(loaded_at) AS newest FROM {ledger}) l, \
             (SELECT MAX(done_through) AS done FROM {}.\"upkeep\" WHERE table_name = {name}) w",
            schema.quoted()
        ));
    }
    Ok(parts.join(" UNION ALL "))
}

/// 1 when the current user has system permission `p` (ANALYZE or VACUUM) through a
/// role it is a member of (system permissions are granted to roles; SVV_SYSTEM_PRIVILEGES
/// shows a user only the identities it has access to,
/// <https://docs.aws.amazon.com/redshift/latest/dg/r_SVV_SYSTEM_PRIVILEGES.html>;
/// USER_IS_MEMBER_OF follows nested roles,
/// <https://docs.aws.amazon.com/redshift/latest/dg/r_USER_IS_MEMBER_OF.html>).
fn system_permission_sql(p: &str) -> String {
    format!(
        "(SELECT COUNT(*) FROM svv_system_privileges s WHERE s.system_privilege = '{p}' \
         AND ((s.identity_type = 'user' AND s.identity_name = CURRENT_USER) \
         OR (s.identity_type = 'role' AND user_is_member_of(CURRENT_USER, s.identity_name))))"
    )
}

/// The `pg_tables p` rows of `tables`, as a WHERE condition.
pub fn tables_filter(tables: &[&TableName]) -> Result<String, LoaderError> {
    let mut filter = Vec::new();
    for t in tables {
        filter.push(format!(
            "(p.schemaname = {} AND p.tablename = {})",
            sql::literal(t.schema.as_str())?,
            sql::literal(t.name.as_str())?
        ));
    }
    Ok(filter.join(" OR "))
}

/// Per table: may the user ANALYZE it, may it VACUUM it (owner, superuser or the system
/// permission), without SVV_TABLE_INFO (`loaderctl doctor` asks this).
pub fn rights_sql(tables: &[&TableName]) -> Result<String, LoaderError> {
    let filter = tables_filter(tables)?;
    Ok(format!(
        "SELECT p.schemaname, p.tablename, {}, {}, CURRENT_USER FROM pg_tables p WHERE {}",
        may_sql("ANALYZE"),
        may_sql("VACUUM"),
        filter
    ))
}

/// 1 when the current user may run `p` (ANALYZE, VACUUM, ALTER TABLE) on `pg_tables`
/// row `p`: its owner, a superuser, or through the system permission.
pub fn may_sql(p: &str) -> String {
    format!(
        "CASE WHEN p.tableowner = CURRENT_USER \
         OR (SELECT usesuper FROM pg_user WHERE usename = CURRENT_USER) \
         OR {} > 0 THEN 1 ELSE 0 END",
        system_permission_sql(p)
    )
}

/// The catalog's rights check and SVV_TABLE_INFO, per table.
fn state_sql(tables: &[&TableName]) -> Result<String, LoaderError> {
    let filter = tables_filter(tables)?;
    Ok(format!(
        "SELECT p.schemaname, p.tablename, {}, i.stats_off, i.unsorted, i.tbl_rows, \
         i.estimated_visible_rows, i.vacuum_sort_benefit, CURRENT_USER, {} \
         FROM pg_tables p LEFT JOIN svv_table_info i ON i.schema = p.schemaname AND i.\"table\" = p.tablename \
         WHERE {}",
        may_sql("ANALYZE"),
        may_sql("VACUUM"),
        filter
    ))
}

/// `loaderctl doctor`'s probe: may the user read SVV_TABLE_INFO?
pub const SVV_PROBE_SQL: &str = "SELECT COUNT(*) FROM svv_table_info WHERE 1 = 0";

/// Our VACUUMs of these tables still running: our user's rows (SYS_VACUUM_HISTORY shows
/// a superuser everyone's) of our tables without an end.
fn running_vacuums_sql(tables: &[&TableName]) -> Result<String, LoaderError> {
    let mut filter = Vec::new();
    for t in tables {
        filter.push(format!(
            "(schema_name = {} AND table_name = {})",
            sql::literal(t.schema.as_str())?,
            sql::literal(t.name.as_str())?
        ));
    }
    Ok(format!(
        "SELECT COUNT(*) FROM sys_vacuum_history WHERE end_time IS NULL \
         AND start_time > DATEADD(hour, -24, GETDATE()) \
         AND user_id = (SELECT usesysid FROM pg_user WHERE usename = CURRENT_USER) AND ({})",
        filter.join(" OR ")
    ))
}

/// The last ANALYZE and VACUUM of each table the user can see (for `loaderctl upkeep`).
pub fn last_runs_sql(table: &TableName, analyze: bool) -> Result<String, LoaderError> {
    let (schema, name) = (
        sql::literal(table.schema.as_str())?,
        sql::literal(table.name.as_str())?,
    );
    Ok(if analyze {
        format!(
            "SELECT TO_CHAR(MAX(end_time), 'YYYY-MM-DD HH24:MI:SS') FROM sys_analyze_history \
             WHERE TRIM(schema_name) = {schema} AND TRIM(table_name) = {name}"
        )
    } else {
        format!(
            "SELECT TO_CHAR(MAX(COALESCE(end_time, start_time)), 'YYYY-MM-DD HH24:MI:SS') \
             FROM sys_vacuum_history WHERE schema_name = {schema} AND table_name = {name}"
        )
    })
}

/// A timestamp as the Data API returned it, checked before it goes back into SQL.
fn timestamp_literal(text: &str) -> Option<String> {
    let ok = !text.is_empty()
        && text.len() <= 32
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | ' ' | '.'));
    ok.then(|| format!("'{text}'"))
}

/// Moves tables' watermarks (one batch).
fn advance_sql(schema: &Ident, done: &[(TableName, String)]) -> Result<Vec<String>, LoaderError> {
    let mut out = Vec::new();
    for (table, through) in done {
        let name = sql::literal(&table.to_string())?;
        let Some(ts) = timestamp_literal(through) else {
            continue;
        };
        out.push(format!(
            "DELETE FROM {}.\"upkeep\" WHERE table_name = {name}",
            schema.quoted()
        ));
        out.push(format!(
            "INSERT INTO {}.\"upkeep\" (table_name, done_through) VALUES ({name}, {ts})",
            schema.quoted()
        ));
    }
    Ok(out)
}

/// What upkeep did (or would do) for one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableUpkeep {
    pub table: String,
    pub state: Option<TableState>,
    pub plan: Plan,
    /// The statements the plan runs.
    pub statements: Vec<String>,
    /// `ANALYZE` ran.
    pub analyzed: bool,
    /// `VACUUM` submitted (`Some(true)`: it ended within the settle time).
    pub vacuum_submitted: Option<bool>,
    /// Why a planned VACUUM waits for the next run.
    pub deferred: Option<String>,
    /// A failure (logged; never a load's).
    pub error: Option<String>,
}

/// How long a submitted VACUUM is watched for an early refusal before it is left to run.
const VACUUM_SETTLE: Duration = Duration::from_secs(2);

/// Upkeep starts a table's work only with this much time left before the deadline.
const UPKEEP_MARGIN: Duration = Duration::from_secs(20);

/// Reasons already said by this process, so that a skipped table is named once.
static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn say_once(reason: &str) {
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said
        .get_or_insert_with(HashSet::new)
        .insert(reason.to_string())
    {
        tracing::warn!(reason, "upkeep skipped");
    }
}

fn number(row: &Row, i: usize) -> Option<f64> {
    row.get(i)?.as_deref()?.trim().parse().ok()
}

fn is_vacuum_busy(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("vacuum") && (m.contains("running") || m.contains("in progress"))
}

impl<W: Warehouse, S: Storage> Loader<W, S> {
    /// The routes' tables with upkeep on, each with its options (the first route of a table).
    fn upkept_routes(&self, only: Option<&TableName>) -> Vec<&Route> {
        self.config()
            .table_routes()
            .into_iter()
            .filter(|r| !r.upkeep.is_off())
            .filter(|r| only.is_none_or(|t| *t == r.table))
            .collect()
    }

    /// Upkeep at the end of the sweep: tables loaded since their last upkeep only. Makes
    /// one Data API call when nothing loaded since (none when every route has upkeep
    /// off); never fails: problems are in the report and the log.
    pub async fn upkeep_after_loads(&self, deadline: Instant) -> Vec<TableUpkeep> {
        let routes = self.upkept_routes(None);
        if routes.is_empty() {
            return Vec::new();
        }
        let schema = &self.config().loader_schema;
        let tables: Vec<&TableName> = routes.iter().map(|r| &r.table).collect();
        let pending = match pending_sql(schema, &tables) {
            Ok(sql) => self.query(sql, Vec::new(), deadline).await,
            Err(e) => Err(e),
        };
        let pending = match pending {
            Ok(rows) => rows,
            Err(e) => {
                // Before `loaderctl bootstrap` made the watermark table, for instance.
                say_once(&format!("upkeep cannot read its watermarks: {e}"));
                return Vec::new();
            }
        };
        let mut loaded = Vec::new();
        for row in pending {
            let name = row.first().cloned().flatten().unwrap_or_default();
            let through = row.get(1).cloned().flatten().unwrap_or_default();
            if number(&row, 2) == Some(1.0) {
                if let Some(route) = routes.iter().find(|r| r.table.to_string() == name) {
                    loaded.push((*route, through));
                }
            }
        }
        if loaded.is_empty() {
            return Vec::new();
        }
        self.upkeep_routes(&loaded, false, deadline).await
    }

    /// `loaderctl upkeep`: every upkept table (or `only`), whatever its watermark; with
    /// `dry_run` it only reports what it would run.
    pub async fn upkeep_now(
        &self,
        only: Option<&TableName>,
        dry_run: bool,
        deadline: Instant,
    ) -> Vec<TableUpkeep> {
        let routes = self.upkept_routes(only);
        let schema = &self.config().loader_schema;
        let tables: Vec<&TableName> = routes.iter().map(|r| &r.table).collect();
        // The watermark moves to the newest load when upkeep ran for everything loaded.
        let mut newest = Vec::new();
        if let Ok(sql) = pending_sql(schema, &tables) {
            if let Ok(rows) = self.query(sql, Vec::new(), deadline).await {
                newest = rows;
            }
        }
        let with_through: Vec<(&Route, String)> = routes
            .iter()
            .map(|r| {
                let through = newest
                    .iter()
                    .find(|row| row.first().cloned().flatten() == Some(r.table.to_string()))
                    .and_then(|row| row.get(1).cloned().flatten())
                    .unwrap_or_default();
                (*r, through)
            })
            .collect();
        self.upkeep_routes(&with_through, dry_run, deadline).await
    }

    async fn upkeep_routes(
        &self,
        routes: &[(&Route, String)],
        dry_run: bool,
        deadline: Instant,
    ) -> Vec<TableUpkeep> {
        let tables: Vec<&TableName> = routes.iter().map(|(r, _)| &r.table).collect();
        let states = match state_sql(&tables) {
            Ok(sql) => self.query(sql, Vec::new(), deadline).await,
            Err(e) => Err(e),
        };
        let states = match states {
            Ok(rows) => rows,
            Err(e) => {
                let reason = format!(
                    "upkeep cannot read SVV_TABLE_INFO (GRANT SELECT ON svv_table_info TO the \
                     loader's user): {e}"
                );
                say_once(&reason);
                return routes
                    .iter()
                    .map(|(r, _)| TableUpkeep {
                        table: r.table.to_string(),
                        state: None,
                        plan: Plan::Nothing,
                        statements: Vec::new(),
                        analyzed: false,
                        vacuum_submitted: None,
                        deferred: None,
                        error: Some(reason.clone()),
                    })
                    .collect();
            }
        };
        let mut vacuum_busy: Option<String> = None;
        let mut checked_running = false;
        let mut done = Vec::new();
        let mut report = Vec::new();
        for (route, through) in routes {
            let table = &route.table;
            let row = states.iter().find(|row| {
                row.first().cloned().flatten().as_deref() == Some(table.schema.as_str())
                    && row.get(1).cloned().flatten().as_deref() == Some(table.name.as_str())
            });
            let user = row
                .and_then(|r| r.get(8).cloned().flatten())
                .unwrap_or_default();
            let state = row.map(|r| TableState {
                may_analyze: number(r, 2) == Some(1.0),
                may_vacuum: number(r, 9) == Some(1.0),
                has_rows: number(r, 5).is_some(),
                stats_off: number(r, 3),
                unsorted: number(r, 4),
                tbl_rows: number(r, 5).unwrap_or(0.0) as i64,
                visible_rows: number(r, 6).unwrap_or(0.0) as i64,
                vacuum_sort_benefit: number(r, 7),
            });
            let plan = match &state {
                Some(s) => decide(table, &route.upkeep, s, user.trim()),
                None => Plan::Nothing,
            };
            let mut statements = Vec::new();
            if let Plan::Run { analyze, vacuum } = &plan {
                if *analyze {
                    statements.push(analyze_sql(table));
                }
                if let Some(mode) = vacuum {
                    statements.push(vacuum_sql(table, *mode, route.upkeep.vacuum_to_percent));
                }
            }
            let mut entry = TableUpkeep {
                table: table.to_string(),
                state: state.clone(),
                plan: plan.clone(),
                statements,
                analyzed: false,
                vacuum_submitted: None,
                deferred: None,
                error: None,
            };
            let (analyze, vacuum) = match &plan {
                Plan::Run { analyze, vacuum } => (*analyze, *vacuum),
                Plan::Skip(reason) => {
                    say_once(reason);
                    done.push((table.clone(), through.clone()));
                    report.push(entry);
                    continue;
                }
                Plan::Nothing => {
                    done.push((table.clone(), through.clone()));
                    report.push(entry);
                    continue;
                }
            };
            if dry_run {
                report.push(entry);
                continue;
            }
            if Instant::now() + UPKEEP_MARGIN >= deadline {
                entry.deferred = Some("too close to the deadline; next run".into());
                report.push(entry);
                continue;
            }
            let mut complete = true;
            if analyze {
                match self
                    .warehouse()
                    .run(analyze_sql(table), Vec::new(), deadline)
                    .await
                {
                    Ok(_) => entry.analyzed = true,
                    Err(e) => {
                        tracing::warn!(table = %table, error = %e, "upkeep: ANALYZE failed");
                        entry.error = Some(e.to_string());
                        complete = false;
                    }
                }
            }
            if let Some(mode) = vacuum {
                if vacuum_busy.is_none() && !checked_running {
                    checked_running = true;
                    let running = match running_vacuums_sql(&tables) {
                        Ok(sql) => self.query(sql, Vec::new(), deadline).await,
                        Err(e) => Err(e),
                    };
                    if let Ok(rows) = running {
                        if rows.first().and_then(|r| number(r, 0)).unwrap_or(0.0) > 0.0 {
                            vacuum_busy = Some("a VACUUM of ours still runs".into());
                        }
                    }
                }
                if let Some(busy) = &vacuum_busy {
                    entry.deferred = Some(format!("{busy}; next run"));
                    complete = false;
                } else {
                    let sql = vacuum_sql(table, mode, route.upkeep.vacuum_to_percent);
                    match self
                        .warehouse()
                        .submit_and_leave(sql, VACUUM_SETTLE, deadline)
                        .await
                    {
                        Ok(finished) => {
                            entry.vacuum_submitted = Some(finished);
                            if !finished {
                                // One at a time: the others wait for the next run.
                                vacuum_busy = Some("a VACUUM of ours was just submitted".into());
                            }
                        }
                        Err(LoaderError::StatementFailed { message, .. })
                            if is_vacuum_busy(&message) =>
                        {
                            tracing::info!(table = %table, message, "upkeep: another VACUUM runs; retried next run");
                            entry.deferred =
                                Some(format!("another VACUUM runs ({message}); next run"));
                            vacuum_busy = Some("another VACUUM runs".into());
                            complete = false;
                        }
                        Err(e) => {
                            tracing::warn!(table = %table, error = %e, "upkeep: VACUUM failed");
                            entry.error = Some(e.to_string());
                            complete = false;
                        }
                    }
                }
            }
            if complete {
                done.push((table.clone(), through.clone()));
            }
            report.push(entry);
        }
        if !dry_run {
            let schema = &self.config().loader_schema;
            match advance_sql(schema, &done) {
                Ok(sqls) if !sqls.is_empty() => {
                    for chunk in sqls.chunks(40) {
                        if let Err(e) = self.warehouse().run_batch(chunk.to_vec(), deadline).await {
                            tracing::warn!(error = %e, "upkeep: watermark not moved; next run repeats the check");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "upkeep: watermark not moved"),
            }
        }
        for entry in &report {
            if entry.analyzed || entry.vacuum_submitted.is_some() || entry.deferred.is_some() {
                tracing::info!(table = %entry.table, analyzed = entry.analyzed,
                    vacuum_submitted = ?entry.vacuum_submitted, deferred = ?entry.deferred, "upkeep");
            }
        }
        report
    }
}

/// Upkeep's report as JSON (the sweep's result and `loaderctl upkeep`'s lines).
pub fn report_json(report: &[TableUpkeep], data_api_calls: u64) -> serde_json::Value {
    let tables: Vec<serde_json::Value> = report.iter().map(TableUpkeep::to_json).collect();
    serde_json::json!({"tables": tables, "data_api_calls": data_api_calls})
}

impl TableUpkeep {
    /// One table's line: its state, what upkeep would run and what it did.
    pub fn to_json(&self) -> serde_json::Value {
        let skipped = match &self.plan {
            Plan::Skip(reason) => Some(reason.clone()),
            _ => None,
        };
        let would = &self.statements;
        serde_json::json!({
            "table": self.table,
            "stats_off": self.state.as_ref().and_then(|s| s.stats_off),
            "unsorted": self.state.as_ref().and_then(|s| s.unsorted),
            "tbl_rows": self.state.as_ref().map(|s| s.tbl_rows),
            "deleted_rows": self.state.as_ref().map(|s| (s.tbl_rows - s.visible_rows).max(0)),
            "would_run": would,
            "skipped": skipped,
            "analyzed": self.analyzed,
            "vacuum_submitted": self.vacuum_submitted,
            "deferred": self.deferred,
            "error": self.error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableName {
        TableName::parse("sales.orders").unwrap()
    }

    fn state(stats_off: f64, unsorted: f64, rows: i64, visible: i64) -> TableState {
        TableState {
            may_analyze: true,
            may_vacuum: true,
            has_rows: true,
            stats_off: Some(stats_off),
            unsorted: Some(unsorted),
            tbl_rows: rows,
            visible_rows: visible,
            vacuum_sort_benefit: Some(unsorted),
        }
    }

    #[test]
    fn thresholds_choose_analyze_and_the_vacuum_mode() {
        let o = Options::default();
        let t = table();
        assert_eq!(
            decide(&t, &o, &state(5.0, 5.0, 100, 100), "u"),
            Plan::Nothing
        );
        assert_eq!(
            decide(&t, &o, &state(50.0, 5.0, 100, 100), "u"),
            Plan::Run {
                analyze: true,
                vacuum: None
            }
        );
        assert_eq!(
            decide(&t, &o, &state(0.0, 40.0, 100, 100), "u"),
            Plan::Run {
                analyze: false,
                vacuum: Some(VacuumMode::SortOnly)
            }
        );
        assert_eq!(
            decide(&t, &o, &state(0.0, 0.0, 100, 80), "u"),
            Plan::Run {
                analyze: false,
                vacuum: Some(VacuumMode::DeleteOnly)
            }
        );
        assert_eq!(
            decide(&t, &o, &state(0.0, 40.0, 100, 80), "u"),
            Plan::Run {
                analyze: false,
                vacuum: Some(VacuumMode::Full)
            }
        );
        let mut no_benefit = state(0.0, 40.0, 100, 100);
        no_benefit.vacuum_sort_benefit = Some(0.0);
        assert_eq!(decide(&t, &o, &no_benefit, "u"), Plan::Nothing);
        let off = Options {
            vacuum: Setting::Off,
            ..o
        };
        assert_eq!(
            decide(&t, &off, &state(50.0, 40.0, 100, 80), "u"),
            Plan::Run {
                analyze: true,
                vacuum: None
            }
        );
        let mut empty = state(100.0, 100.0, 0, 0);
        empty.has_rows = false;
        assert_eq!(decide(&t, &o, &empty, "u"), Plan::Nothing);
    }

    #[test]
    fn a_table_the_user_may_not_touch_is_skipped_with_the_reason() {
        let mut s = state(50.0, 40.0, 100, 100);
        s.may_analyze = false;
        s.may_vacuum = false;
        match decide(&table(), &Options::default(), &s, "loader") {
            Plan::Skip(reason) => {
                assert!(reason.contains("loader may not analyze or vacuum sales.orders"));
                assert!(reason.contains("GRANT ANALYZE, VACUUM TO ROLE"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // The VACUUM permission alone (a role, not ownership): the VACUUM runs, the
        // ANALYZE is left out.
        s.may_vacuum = true;
        assert_eq!(
            decide(&table(), &Options::default(), &s, "loader"),
            Plan::Run {
                analyze: false,
                vacuum: Some(VacuumMode::SortOnly)
            }
        );
    }

    #[test]
    fn statements_are_quoted_and_never_in_a_batch_with_loads() {
        assert_eq!(
            analyze_sql(&table()),
            "ANALYZE \"sales\".\"orders\" PREDICATE COLUMNS"
        );
        assert_eq!(
            vacuum_sql(&table(), VacuumMode::SortOnly, 99),
            "VACUUM SORT ONLY \"sales\".\"orders\" TO 99 PERCENT"
        );
        assert_eq!(
            timestamp_literal("2026-12-06 23:20:01.123456").as_deref(),
            Some("'2026-12-06 23:20:01.123456'")
        );
        assert_eq!(timestamp_literal("1'); DROP TABLE x; --"), None);
        assert_eq!(timestamp_literal(""), None);
    }
}
