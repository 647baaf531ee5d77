//! Table upkeep as Redshift does it: `ANALYZE`, `VACUUM`, and the system views that
//! show its state and cost (`SVV_TABLE_INFO`, `SYS_ANALYZE_HISTORY`,
//! `SYS_VACUUM_HISTORY`, `SYS_QUERY_HISTORY`).
//!
//! PostgreSQL's own `ANALYZE`/`VACUUM` mean something else, so neither reaches it:
//! both are run here against a model of each table's state, kept in
//! `public.rdl_table_upkeep` (one row per table that was ever analyzed or vacuumed).
//!
//! **The model** (what moves `stats_off`, `unsorted`, `tbl_rows`). Every row carries
//! the id of the transaction that inserted it (`xmin`); an ANALYZE or a VACUUM notes
//! its own transaction id and the table's row count. Then, exactly:
//! - rows inserted since the last sort (`xmin` newer than the sort's) are unsorted;
//!   a table never vacuumed counts every row as unsorted (Redshift sorts only a load
//!   into an empty table with a sort key; the model gives every table a sort key);
//! - rows deleted since the last delete phase = rows counted then that no longer
//!   exist; they stay in `tbl_rows` until a VACUUM FULL or DELETE ONLY (Redshift marks
//!   deleted rows and keeps them until vacuumed: SVV_TABLE_INFO `tbl_rows` "includes
//!   rows marked for deletion but not yet vacuumed",
//!   <https://docs.aws.amazon.com/redshift/latest/dg/r_SVV_TABLE_INFO.html>);
//! - `stats_off` = rows inserted plus rows deleted since the last ANALYZE, in percent
//!   of the rows then (100 when never analyzed), capped at 100;
//! - `vacuum_sort_benefit` = `unsorted` (Redshift estimates it from scans; the model
//!   has no scans).
//!
//! **The rules** (<https://docs.aws.amazon.com/redshift/latest/dg/r_VACUUM_command.html>):
//! - VACUUM can't run in a transaction block: in a batch it fails with PostgreSQL's
//!   (and Redshift's) words `VACUUM cannot run inside a transaction block`.
//! - One VACUUM at a time per workgroup (cluster); a second fails at once. Redshift's
//!   words for it are not documented: the emulator's are
//!   [`VACUUM_ALREADY_RUNNING`]. The fault `vacuum_ms` holds each VACUUM that long.
//! - Without the right (owner, superuser, or a member of a role with the VACUUM /
//!   ANALYZE system permission: `crate::rbac`), the statement "completes successfully but has
//!   no effect", AWS's current wording; older pages said a single-table VACUUM fails.
//!   The stricter reading for a caller is the silent one: nothing changes, nothing is
//!   recorded, and a PostgreSQL-style WARNING is only logged.
//! - VACUUM sorts only when less than `TO n PERCENT` (default 95) of the rows are sorted.
//! - SVV_TABLE_INFO: user tables with rows only, visible only to superusers unless SELECT
//!   is granted on it. SYS_VACUUM_HISTORY and SYS_QUERY_HISTORY: every user sees their
//!   own rows, superusers all. SYS_ANALYZE_HISTORY: superusers only
//!   (<https://docs.aws.amazon.com/redshift/latest/dg/SYS_ANALYZE_HISTORY.html>).
//!
//! **SYS_QUERY_HISTORY** rows are written when a statement reads the view (the
//! statement registry knows every statement; Redshift's query logs are not
//! transactional either): `queue_time` is the wait for one of `--concurrency` slots
//! (the emulator's WLM queue), `execution_time` the sub-statement's run, both in
//! microseconds (<https://docs.aws.amazon.com/redshift/latest/dg/SYS_QUERY_HISTORY.html>).

use std::collections::HashSet;
use std::sync::Mutex;

use tokio_postgres::Client;

use crate::executor::{postgres_error_text, quote_ident};
use crate::statements::{now_epoch, Statement, Status};

/// Created once per database with the emulator's other system tables.
pub const UPKEEP_DDL: &str = "
         CREATE TABLE IF NOT EXISTS public.rdl_table_upkeep (
           table_id oid PRIMARY KEY,
           analyzed_xid bigint, analyzed_rows bigint, analyzed_at timestamp,
           sorted_xid bigint, sorted_at timestamp,
           purged_xid bigint, purged_rows bigint, vacuumed_at timestamp);
         CREATE TABLE IF NOT EXISTS public.rdl_vacuum_history (
           user_id integer, transaction_id bigint, query_id bigint, database_name text,
           schema_name text, table_name text, table_id integer, vacuum_type character(10),
           is_automatic boolean, status character(30), start_time timestamp,
           end_time timestamp, record_time timestamp, duration bigint,
           rows_before_vacuum bigint, reclaimable_rows bigint, reclaimed_rows bigint,
           sortedrows_before_vacuum bigint, sortedrows_after_vacuum bigint);
         CREATE OR REPLACE VIEW public.sys_vacuum_history AS
           SELECT * FROM public.rdl_vacuum_history
           WHERE user_id = (SELECT usesysid::int FROM pg_user WHERE usename = current_user)
              OR (SELECT usesuper FROM pg_user WHERE usename = current_user);
         GRANT SELECT ON public.sys_vacuum_history TO PUBLIC;
         CREATE TABLE IF NOT EXISTS public.sys_analyze_history (
           user_id integer, transaction_id bigint, database_name character(30),
           schema_name character(30), table_name character(30), table_id integer,
           is_automatic character(1), status character(15), start_time timestamp,
           end_time timestamp, rows double precision, modified_rows double precision,
           analyze_threshold_percent integer, last_analyze_time timestamp);
         CREATE TABLE IF NOT EXISTS public.rdl_query_history (
           user_id integer, query_id bigint PRIMARY KEY, transaction_id bigint,
           session_id integer, database_name character(128), query_type character(32),
           status character(10), start_time timestamp, end_time timestamp,
           elapsed_time bigint, queue_time bigint, execution_time bigint,
           error_message character(512), query_text character(4000));
         CREATE OR REPLACE VIEW public.sys_query_history AS
           SELECT * FROM public.rdl_query_history
           WHERE user_id = (SELECT usesysid::int FROM pg_user WHERE usename = current_user)
              OR (SELECT usesuper FROM pg_user WHERE usename = current_user);
         GRANT SELECT ON public.sys_query_history TO PUBLIC;
         CREATE OR REPLACE FUNCTION public.rdl_table_info() RETURNS TABLE (
             database text, schema text, table_id oid, \"table\" text, size bigint,
             unsorted numeric(5,2), stats_off numeric(5,2), tbl_rows numeric(38,0),
             estimated_visible_rows numeric(38,0), vacuum_sort_benefit numeric(12,2))
           LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $rdl$
           DECLARE r record; s record; n bigint; newer_sort bigint; older_purge bigint;
                   newer_analyze bigint; deleted bigint; total bigint; changed bigint;
           BEGIN
             FOR r IN SELECT c.oid, n2.nspname, c.relname FROM pg_class c
                      JOIN pg_namespace n2 ON n2.oid = c.relnamespace
                      WHERE c.relkind = 'r' AND n2.nspname NOT IN ('pg_catalog', 'information_schema')
                        AND n2.nspname NOT LIKE 'pg\\_%'
                        AND NOT (n2.nspname = 'public' AND (c.relname LIKE 'rdl\\_%' OR c.relname LIKE 'stl\\_%'
                                 OR c.relname LIKE 'sys\\_%' OR c.relname LIKE 'stv\\_%')) LOOP
               SELECT * INTO s FROM public.rdl_table_upkeep u WHERE u.table_id = r.oid;
               EXECUTE format('SELECT count(*), count(*) FILTER (WHERE xmin::text::bigint > $1),
                                      count(*) FILTER (WHERE xmin::text::bigint <= $2),
                                      count(*) FILTER (WHERE xmin::text::bigint > $3) FROM %I.%I',
                              r.nspname, r.relname)
                 INTO n, newer_sort, older_purge, newer_analyze
                 USING coalesce(s.sorted_xid, 0), coalesce(s.purged_xid, 0), coalesce(s.analyzed_xid, 0);
               deleted := greatest(coalesce(s.purged_rows, 0) - older_purge, 0);
               total := n + deleted;
               CONTINUE WHEN total = 0;
               database := current_database(); schema := r.nspname; table_id := r.oid;
               \"table\" := r.relname;
               size := greatest(1, pg_relation_size(r.oid) / 1048576);
               unsorted := round(100.0 * newer_sort / total, 2);
               IF s.analyzed_xid IS NULL THEN
                 stats_off := 100;
               ELSE
                 changed := newer_analyze + greatest(s.analyzed_rows - (n - newer_analyze), 0);
                 stats_off := least(100, round(100.0 * changed / greatest(s.analyzed_rows, 1), 2));
               END IF;
               tbl_rows := total; estimated_visible_rows := n;
               vacuum_sort_benefit := unsorted;
               RETURN NEXT;
             END LOOP;
           END $rdl$;
         CREATE OR REPLACE VIEW public.svv_table_info AS SELECT * FROM public.rdl_table_info();
         REVOKE ALL ON public.svv_table_info FROM PUBLIC;";

/// The emulator's words for a VACUUM refused because another runs (Redshift's are
/// not documented; the rule is: "only one VACUUM at a time").
pub const VACUUM_ALREADY_RUNNING: &str =
    "ERROR: VACUUM is already running on this cluster; run it again after it finishes";

/// `VACUUM`'s phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VacuumMode {
    Full,
    SortOnly,
    DeleteOnly,
    Reindex,
    Recluster,
}

impl VacuumMode {
    fn sorts(self) -> bool {
        self != VacuumMode::DeleteOnly
    }

    fn purges(self) -> bool {
        matches!(
            self,
            VacuumMode::Full | VacuumMode::DeleteOnly | VacuumMode::Reindex
        )
    }

    fn history_type(self) -> &'static str {
        match self {
            VacuumMode::Full => "Full",
            VacuumMode::SortOnly => "Sort",
            VacuumMode::DeleteOnly => "Delete",
            VacuumMode::Reindex => "Reindex",
            VacuumMode::Recluster => "Recluster",
        }
    }
}

/// An upkeep statement, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ANALYZE [VERBOSE] table [(columns)] [PREDICATE COLUMNS | ALL COLUMNS]`.
    Analyze { table: Option<String> },
    /// `VACUUM [mode] [table [TO n PERCENT] [BOOST]]`.
    Vacuum {
        mode: VacuumMode,
        table: Option<String>,
        percent: u32,
    },
}

/// Words of a statement: double-quoted identifiers kept whole (with their quotes), `(`
/// `)` and `,` on their own, the rest split on blanks. Good enough for the two
/// commands' grammar.
fn words(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in sql.trim().trim_end_matches(';').chars() {
        if quoted {
            current.push(c);
            if c == '"' {
                quoted = false;
            }
            continue;
        }
        match c {
            '"' => {
                current.push(c);
                quoted = true;
            }
            '(' | ')' | ',' => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn is(word: Option<&String>, keyword: &str) -> bool {
    word.is_some_and(|w| w.eq_ignore_ascii_case(keyword))
}

/// `Some` when `sql` is an ANALYZE or VACUUM (`Err`: Redshift's syntax refused).
pub fn parse(sql: &str) -> Option<Result<Command, String>> {
    let w = words(sql);
    let first = w.first()?;
    if first.eq_ignore_ascii_case("analyze") {
        let mut i = 1;
        if is(w.get(i), "verbose") {
            i += 1;
        }
        if is(w.get(i), "compression") {
            return Some(Err(
                "ERROR: ANALYZE COMPRESSION is not supported by redshift-data-local".into(),
            ));
        }
        let table = w
            .get(i)
            .filter(|t| !t.eq_ignore_ascii_case("predicate"))
            .cloned();
        return Some(Ok(Command::Analyze { table }));
    }
    if !first.eq_ignore_ascii_case("vacuum") {
        return None;
    }
    let mut i = 1;
    let mode = match w.get(i).map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("full") => {
            i += 1;
            VacuumMode::Full
        }
        Some("reindex") => {
            i += 1;
            VacuumMode::Reindex
        }
        Some("recluster") => {
            i += 1;
            VacuumMode::Recluster
        }
        Some("sort") if is(w.get(i + 1), "only") => {
            i += 2;
            VacuumMode::SortOnly
        }
        Some("delete") if is(w.get(i + 1), "only") => {
            i += 2;
            VacuumMode::DeleteOnly
        }
        _ => VacuumMode::Full,
    };
    let table = w.get(i).filter(|t| !t.eq_ignore_ascii_case("to")).cloned();
    if table.is_some() {
        i += 1;
    }
    let mut percent = 95;
    if is(w.get(i), "to") {
        let n = w.get(i + 1).and_then(|n| n.parse::<u32>().ok());
        match (n, is(w.get(i + 2), "percent")) {
            (Some(n), true) if (0..=100).contains(&n) => percent = n,
            _ => {
                return Some(Err(
                    "ERROR: syntax error: VACUUM ... TO threshold PERCENT needs 0 to 100".into(),
                ))
            }
        }
        i += 3;
    }
    if is(w.get(i), "boost") {
        i += 1;
    }
    if let Some(extra) = w.get(i) {
        return Some(Err(format!("ERROR: syntax error at or near \"{extra}\"")));
    }
    Some(Ok(Command::Vacuum {
        mode,
        table,
        percent,
    }))
}

/// `true` when a statement reads SYS_QUERY_HISTORY (its rows are written first).
pub fn reads_query_history(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("sys_query_history")
}

/// Workgroups (fault scopes) with a VACUUM running: one at a time per cluster.
static RUNNING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Releases a workgroup's VACUUM slot when dropped.
struct VacuumSlot(String);

impl VacuumSlot {
    fn take(scope: &str) -> Option<VacuumSlot> {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        running
            .get_or_insert_with(HashSet::new)
            .insert(scope.to_string())
            .then(|| VacuumSlot(scope.to_string()))
    }
}

impl Drop for VacuumSlot {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = running.as_mut() {
            set.remove(&self.0);
        }
    }
}

/// One table as an upkeep command sees it.
struct Target {
    oid: u32,
    schema: String,
    name: String,
    may: bool,
}

/// The tables a command covers (one, or every user table the caller may touch), and
/// whether the caller may analyze/vacuum each: its owner, a superuser, or a member of
/// a role with the `permission` (ANALYZE or VACUUM) system permission (`crate::rbac`).
async fn targets(
    client: &Client,
    table: Option<&str>,
    permission: &str,
    pid: i64,
) -> Result<Vec<Target>, String> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text,
                    pg_has_role(current_user, c.relowner, 'USAGE')
                    OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                    OR public.rdl_has_system_privilege($2::text, current_user)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r'
               AND CASE WHEN $1::text IS NULL
                        THEN n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
                             AND n.nspname NOT LIKE 'pg\\_%'
                        ELSE c.oid = to_regclass($1::text) END",
            &[&table, &permission],
        )
        .await
        .map_err(|e| postgres_error_text(&e, pid))?;
    if let (Some(name), true) = (table, rows.is_empty()) {
        return Err(format!("ERROR: relation \"{name}\" does not exist"));
    }
    rows.iter()
        .map(|r| {
            let oid: u32 = r.try_get(0).map_err(|e| format!("ERROR: {e}"))?;
            Ok(Target {
                oid,
                schema: r.try_get(1).map_err(|e| format!("ERROR: {e}"))?,
                name: r.try_get(2).map_err(|e| format!("ERROR: {e}"))?,
                may: r.try_get(3).map_err(|e| format!("ERROR: {e}"))?,
            })
        })
        .collect()
}

/// Runs an ANALYZE or VACUUM of `statement` (sub-statement `query_id`): the caller's
/// rights are checked on its session `client`; the model and the histories are written
/// on `admin` (a connection of the emulator's own: Redshift's system logs are not the
/// caller's to write, nor transactional). `hold` is how long a VACUUM takes (the
/// `vacuum_ms` fault).
pub async fn run(
    client: &Client,
    admin: &Client,
    statement: &Statement,
    command: Command,
    query_id: i64,
    hold: std::time::Duration,
) -> Result<i64, String> {
    let pid = statement.redshift_pid;
    let user = statement.identity.user().map(str::to_string);
    match command {
        Command::Analyze { table } => {
            for t in targets(client, table.as_deref(), "ANALYZE", pid).await? {
                if !t.may {
                    tracing::warn!(table = %t.name, "skipping: only table or database owner can analyze it");
                    continue;
                }
                analyze(admin, &t, user.as_deref(), pid).await?;
            }
            Ok(0)
        }
        Command::Vacuum {
            mode,
            table,
            percent,
        } => {
            // <https://docs.aws.amazon.com/redshift/latest/dg/r_VACUUM_command.html>:
            // "You can't run VACUUM within a transaction block (BEGIN ... END)."
            if statement.is_batch() {
                return Err("ERROR: VACUUM cannot run inside a transaction block".into());
            }
            let scope = statement.scope().unwrap_or_default().to_string();
            let Some(_slot) = VacuumSlot::take(&scope) else {
                return Err(VACUUM_ALREADY_RUNNING.into());
            };
            for t in targets(client, table.as_deref(), "VACUUM", pid).await? {
                if !t.may {
                    tracing::warn!(table = %t.name, "skipping: only table or database owner can vacuum it");
                    continue;
                }
                vacuum(
                    admin,
                    &t,
                    user.as_deref(),
                    mode,
                    percent,
                    query_id,
                    hold,
                    pid,
                )
                .await?;
            }
            Ok(0)
        }
    }
}

async fn analyze(client: &Client, t: &Target, user: Option<&str>, pid: i64) -> Result<(), String> {
    let failed = |e: tokio_postgres::Error| postgres_error_text(&e, pid);
    let sql = format!(
        "WITH x AS (SELECT txid_current() & 4294967295 AS xid),
              n AS (SELECT count(*) AS rows FROM {}.{}),
              old AS (SELECT * FROM public.rdl_table_upkeep WHERE table_id = $1),
              up AS (INSERT INTO public.rdl_table_upkeep AS u (table_id, analyzed_xid, analyzed_rows, analyzed_at)
                     SELECT $1, x.xid, n.rows, clock_timestamp() AT TIME ZONE 'UTC' FROM x, n
                     ON CONFLICT (table_id) DO UPDATE SET analyzed_xid = EXCLUDED.analyzed_xid,
                       analyzed_rows = EXCLUDED.analyzed_rows, analyzed_at = EXCLUDED.analyzed_at
                     RETURNING 1)
         INSERT INTO public.sys_analyze_history (user_id, transaction_id, database_name, schema_name,
           table_name, table_id, is_automatic, status, start_time, end_time, rows, modified_rows,
           analyze_threshold_percent, last_analyze_time)
         SELECT COALESCE((SELECT usesysid::int FROM pg_user WHERE usename = $4::text),
                         (SELECT usesysid::int FROM pg_user WHERE usename = current_user)), x.xid,
                current_database(), $2, $3, $1::oid::int, 'f', 'Full',
                clock_timestamp() AT TIME ZONE 'UTC', clock_timestamp() AT TIME ZONE 'UTC',
                n.rows, NULL, 10, (SELECT analyzed_at FROM old)
         FROM x, n, (SELECT count(*) FROM up) _",
        quote_ident(&t.schema),
        quote_ident(&t.name)
    );
    client
        .execute(&sql, &[&t.oid, &t.schema, &t.name, &user])
        .await
        .map_err(failed)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn vacuum(
    client: &Client,
    t: &Target,
    user: Option<&str>,
    mode: VacuumMode,
    percent: u32,
    query_id: i64,
    hold: std::time::Duration,
    pid: i64,
) -> Result<(), String> {
    let failed = |e: tokio_postgres::Error| postgres_error_text(&e, pid);
    let started = chrono::Utc::now().naive_utc();
    let before = client
        .query_one(
            "SELECT tbl_rows::bigint, estimated_visible_rows::bigint, unsorted::float8
             FROM public.rdl_table_info() WHERE table_id = $1
             UNION ALL SELECT 0, 0, 0 LIMIT 1",
            &[&t.oid],
        )
        .await
        .map_err(failed)?;
    let rows: i64 = before.try_get(0).map_err(failed)?;
    let visible: i64 = before.try_get(1).map_err(failed)?;
    let unsorted: f64 = before.try_get(2).map_err(failed)?;
    let sorted_before = rows - (unsorted * rows as f64 / 100.0).round() as i64;
    let record = client
        .query_one(
            "INSERT INTO public.rdl_vacuum_history (user_id, transaction_id, query_id, database_name,
               schema_name, table_name, table_id, vacuum_type, is_automatic, status, start_time,
               record_time, rows_before_vacuum, reclaimable_rows, sortedrows_before_vacuum)
             VALUES (COALESCE((SELECT usesysid::int FROM pg_user WHERE usename = $10::text),
                              (SELECT usesysid::int FROM pg_user WHERE usename = current_user)),
               txid_current() & 4294967295, $1, current_database(), $2, $3, $4::oid::int, $5, false,
               'Sort', $6, $6, $7, $8, $9)
             RETURNING transaction_id",
            &[
                &query_id,
                &t.schema,
                &t.name,
                &t.oid,
                &mode.history_type(),
                &started,
                &rows,
                &(rows - visible),
                &sorted_before,
                &user,
            ],
        )
        .await
        .map_err(failed)?;
    let xid: i64 = record.try_get(0).map_err(failed)?;
    tokio::time::sleep(hold).await;
    // Redshift skips the sort phase when at least `percent` of the rows are sorted.
    let sorts = mode.sorts() && (100.0 - unsorted) < f64::from(percent);
    let purges = mode.purges();
    let sql = format!(
        "WITH n AS (SELECT count(*) AS rows FROM {}.{})
         INSERT INTO public.rdl_table_upkeep AS u (table_id, sorted_xid, sorted_at, purged_xid, purged_rows, vacuumed_at)
         SELECT $1, CASE WHEN $3 THEN $2::bigint END, CASE WHEN $3 THEN clock_timestamp() AT TIME ZONE 'UTC' END,
                CASE WHEN $4 THEN $2::bigint END, CASE WHEN $4 THEN n.rows END,
                clock_timestamp() AT TIME ZONE 'UTC' FROM n
         ON CONFLICT (table_id) DO UPDATE SET
           sorted_xid = CASE WHEN $3 THEN EXCLUDED.sorted_xid ELSE u.sorted_xid END,
           sorted_at = CASE WHEN $3 THEN EXCLUDED.sorted_at ELSE u.sorted_at END,
           purged_xid = CASE WHEN $4 THEN EXCLUDED.purged_xid ELSE u.purged_xid END,
           purged_rows = CASE WHEN $4 THEN EXCLUDED.purged_rows ELSE u.purged_rows END,
           vacuumed_at = EXCLUDED.vacuumed_at",
        quote_ident(&t.schema),
        quote_ident(&t.name)
    );
    client
        .execute(&sql, &[&t.oid, &xid, &sorts, &purges])
        .await
        .map_err(failed)?;
    let reclaimed = if purges { rows - visible } else { 0 };
    let status = if sorts || (purges && reclaimed > 0) {
        "Finished"
    } else {
        "Skipped"
    };
    client
        .execute(
            "UPDATE public.rdl_vacuum_history SET status = $2, end_time = clock_timestamp() AT TIME ZONE 'UTC',
               duration = (extract(epoch FROM clock_timestamp() AT TIME ZONE 'UTC' - start_time) * 1000000)::bigint,
               reclaimed_rows = $3, sortedrows_after_vacuum = CASE WHEN $4 THEN $5 ELSE sortedrows_before_vacuum END
             WHERE query_id = $1 AND table_id = $6::oid::int",
            &[&query_id, &status, &reclaimed, &sorts, &visible, &t.oid],
        )
        .await
        .map_err(failed)?;
    Ok(())
}

/// One SYS_QUERY_HISTORY row of a sub-statement.
struct QueryRow {
    user: Option<String>,
    query_id: i64,
    session: i32,
    database: String,
    query_type: &'static str,
    status: &'static str,
    start: f64,
    end: Option<f64>,
    queue_us: i64,
    execution_us: i64,
    error: Option<String>,
    text: String,
}

fn query_type(sql: &str) -> &'static str {
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match first.as_str() {
        "select" | "with" => "SELECT",
        "insert" => "INSERT",
        "update" => "UPDATE",
        "delete" => "DELETE",
        "copy" => "COPY",
        "unload" => "UNLOAD",
        "create" | "drop" | "alter" | "truncate" => "DDL",
        "vacuum" | "analyze" => "UTILITY",
        _ => "COMMAND",
    }
}

fn query_rows(statements: &[Statement]) -> Vec<QueryRow> {
    let now = now_epoch();
    let mut out = Vec::new();
    for s in statements {
        // Queue: from submission until the statement had a slot and a session.
        let started_epoch = s.started.map(|i| now - i.elapsed().as_secs_f64());
        let queue_us = started_epoch.map_or(((now - s.created_at) * 1e6) as i64, |t| {
            ((t - s.created_at).max(0.0) * 1e6) as i64
        });
        for sub in &s.subs {
            if sub.query_id == 0 {
                continue;
            }
            let status = match sub.status {
                Status::Finished => "success",
                Status::Failed => "failed",
                Status::Aborted => "canceled",
                Status::Submitted | Status::Picked => "queued",
                _ => "running",
            };
            let execution_us = if sub.status.is_active() {
                sub.started.map_or(0, |i| i.elapsed().as_micros() as i64)
            } else {
                sub.duration_ns / 1000
            };
            out.push(QueryRow {
                user: s.identity.user().map(str::to_string),
                query_id: sub.query_id,
                session: i32::try_from(s.redshift_pid).unwrap_or_default(),
                database: s.target.database.clone().unwrap_or_default(),
                query_type: query_type(&sub.sql),
                status,
                start: started_epoch.unwrap_or(s.created_at),
                end: (!sub.status.is_active()).then_some(sub.updated_at),
                queue_us,
                execution_us,
                error: sub.error.clone(),
                text: sub.sql.chars().take(4000).collect(),
            });
        }
    }
    out
}

/// Sub-statements whose final SYS_QUERY_HISTORY row is written: (database, query id).
/// Each read then writes only what is new or still running, not the whole registry.
static RECORDED: Mutex<Option<HashSet<(String, i64)>>> = Mutex::new(None);

fn recorded(database: &str, query_id: i64) -> bool {
    let set = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
    set.as_ref()
        .is_some_and(|s| s.contains(&(database.to_string(), query_id)))
}

fn mark_recorded(database: &str, query_id: i64) {
    let mut set = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
    set.get_or_insert_with(HashSet::new)
        .insert((database.to_string(), query_id));
}

/// Writes (or refreshes) the SYS_QUERY_HISTORY rows of `statements` in `database`,
/// on an admin connection `client`.
pub async fn record_query_history(client: &Client, database: &str, statements: &[Statement]) {
    let to_ts =
        |t: f64| chrono::DateTime::from_timestamp_micros((t * 1e6) as i64).map(|d| d.naive_utc());
    for row in query_rows(statements)
        .into_iter()
        .filter(|r| r.database == database && !recorded(database, r.query_id))
    {
        let last = row.end.is_some();
        let user = row.user.clone();
        let start = to_ts(row.start);
        let end = row.end.and_then(to_ts);
        // The emulator's own bookkeeping, in the database's isolation level: under
        // REPEATABLE READ (SNAPSHOT) and SERIALIZABLE two readers recording the same row
        // at once fail one of them with "could not serialize access due to concurrent
        // update" (SQLSTATE 40001). Each INSERT is its own transaction, so trying again
        // sees the other's row. Giving up there left every later row unrecorded, and
        // SYS_QUERY_HISTORY without a COPY's queue time (seen in CI).
        let mut attempt = 0;
        let result = loop {
            let result = insert_history_row(client, &user, &row, &start, &end).await;
            match result {
                Err(e)
                    if attempt < 5
                        && e.code()
                            == Some(
                                &tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE,
                            ) =>
                {
                    attempt += 1;
                }
                other => break other,
            }
        };
        match result {
            Ok(_) if last => mark_recorded(database, row.query_id),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not record sys_query_history");
                return;
            }
        }
    }
}

/// One SYS_QUERY_HISTORY row, written or refreshed.
async fn insert_history_row(
    client: &Client,
    user: &Option<String>,
    row: &QueryRow,
    start: &Option<chrono::NaiveDateTime>,
    end: &Option<chrono::NaiveDateTime>,
) -> Result<u64, tokio_postgres::Error> {
    client
            .execute(
                "INSERT INTO public.rdl_query_history (user_id, query_id, session_id, database_name,
                   query_type, status, start_time, end_time, elapsed_time, queue_time, execution_time,
                   error_message, query_text)
                 VALUES (COALESCE((SELECT usesysid::int FROM pg_user WHERE usename = $1),
                                  (SELECT usesysid::int FROM pg_user WHERE usename = current_user)),
                   $2, $3, $4, $5, $6, $7, $8, $9::bigint + $10::bigint, $9, $10, left($11, 512), $12)
                 ON CONFLICT (query_id) DO UPDATE SET status = EXCLUDED.status,
                   end_time = EXCLUDED.end_time, elapsed_time = EXCLUDED.elapsed_time,
                   queue_time = EXCLUDED.queue_time, execution_time = EXCLUDED.execution_time,
                   error_message = EXCLUDED.error_message",
                &[
                    user,
                    &row.query_id,
                    &row.session,
                    &row.database,
                    &row.query_type,
                    &row.status,
                    start,
                    end,
                    &row.queue_us,
                    &row.execution_us,
                    &row.error,
                    &row.text,
                ],
            )
            .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyze_and_vacuum_parse_redshift_syntax() {
        assert_eq!(
            parse("ANALYZE \"s\".\"t\" PREDICATE COLUMNS"),
            Some(Ok(Command::Analyze {
                table: Some("\"s\".\"t\"".into())
            }))
        );
        assert_eq!(
            parse("vacuum sort only s.t to 80 percent"),
            Some(Ok(Command::Vacuum {
                mode: VacuumMode::SortOnly,
                table: Some("s.t".into()),
                percent: 80
            }))
        );
        assert_eq!(
            parse("VACUUM"),
            Some(Ok(Command::Vacuum {
                mode: VacuumMode::Full,
                table: None,
                percent: 95
            }))
        );
        assert!(matches!(parse("VACUUM t TO 200 PERCENT"), Some(Err(_))));
        assert!(matches!(parse("VACUUM t extra"), Some(Err(_))));
        assert_eq!(parse("SELECT 1"), None);
    }

    #[test]
    fn one_vacuum_per_workgroup_at_a_time() {
        let first = VacuumSlot::take("wg-a");
        assert!(first.is_some());
        assert!(VacuumSlot::take("wg-a").is_none());
        assert!(VacuumSlot::take("wg-b").is_some());
        drop(first);
        assert!(VacuumSlot::take("wg-a").is_some());
    }
}
