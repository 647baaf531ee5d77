//! The lease protocol of one target table: acquire or hand off, drain, release.
//!
//! Every target table has its own lease table (one row, `holder` NULL when free), ledger
//! and wake-up table in the loader schema ([`sql::LeaseTables`]). An invocation that
//! finds the lease held by a live holder does not wait: it leaves a wake-up row (its
//! bucket, partition and object) and returns `queued`. The holder, after each load,
//! runs one drain step under the same `LOCK` as every wake-up insert: release when no
//! wake-up is left, otherwise renew and claim them, load every claimed partition
//! (listing it again), repeat.
//!
//! Invariant: an acquire is one submission (`LOCK wakeup; CALL take(...); SELECT lease`),
//! whether it takes the lease or queues a wake-up; the holder then reads its ledger.
//! Invariant: a wake-up insert and "release if no wake-up is left" are serialised by
//! `LOCK <wake-up table>`, so a wake-up is either claimed by the holder or inserted after
//! the release, by an invocation that then finds the lease free and takes it.
//! Invariant: an invocation that finds the lease busy locks and writes only the wake-up
//! table; the holder's load batch never reads or writes the wake-up table. So a busy
//! acquirer and a running load never form a cycle under Redshift's table-level
//! SERIALIZABLE rule, whether or not a LOCK counts as a write there.
//! Invariant: every take writes the lease row, and every load ends with the fence that
//! writes it too: a load whose lease was taken over meanwhile fails (the fence finds
//! another holder, or a write-write conflict), under SNAPSHOT and SERIALIZABLE alike.
//! Invariant: a wake-up is deleted only by the holder that claimed it, after loading its
//! partition from a listing made after the claim (so after the wake-up's object existed).
//! Invariant: a wake-up is deleted only after its partition loaded or failed
//! permanently: a transient failure ends the drain before the step that deletes it.
//! Invariant: a lease token belongs to one tenure of one attempt of one request
//! ([`attempt_token`], [`tenure_token`]): no statement of an earlier tenure, run late,
//! matches a later tenure's lease. A take may take over only a free or expired lease,
//! its own, or one of an earlier attempt or tenure of the same request, and only when
//! none of that holder's load statements runs.
//! Invariant: a load batch's fence refuses files the ledger holds under another load,
//! so no file is committed by two loads, whatever the tokens.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::warehouse::{Row, Warehouse};
use crate::lake::config::Config;
use crate::lake::event::ObjectCreated;
use crate::protocol::plan::{self, LoadedFile};
use crate::sql::{self, LeaseTables, TableName, WakeUp};

/// Time granted to an explicit release after the work failed near the deadline.
pub const RELEASE_GRACE: Duration = Duration::from_secs(3);

/// The most a holder keeps in hand before its deadline: it claims no more wake-ups
/// (and the sweep starts no more steps) within it, rather than be cut off in the middle
/// of a load.
pub const DRAIN_RESERVE: Duration = Duration::from_secs(20);

/// The time kept in hand by an invocation that had `budget` in all: a quarter of it, at
/// most [`DRAIN_RESERVE`]. A fixed 20 s left a 30 s function (25 s of budget after
/// main.rs's margin) 5 s, which its own load used up: it released without draining, and
/// queued objects waited for another event or the sweep. A quarter keeps room for one
/// more load batch of the sizes the function's timeout was chosen for (a function whose
/// loads take longer than a quarter of its timeout is cut off and retried anyway).
pub fn reserve(budget: Duration) -> Duration {
    DRAIN_RESERVE.min(budget / 4)
}

/// How long a lease outlasts its holder's deadline (the deadline main.rs gives the
/// loader is up to 5 s before Lambda ends the invocation; the rest covers the time
/// between computing a lease time here and Redshift's `GETDATE()` in the take, which
/// only makes the lease longer). The take and every drain step set the expiry to the
/// holder's remaining time plus this, never more than `LEASE_TTL_SECONDS`, and the
/// fence never moves it: so an expired lease means that its holder's invocation is
/// over, which is what lets an acquirer take over an expired lease as soon as its
/// holder's statement is found ended (issue 21.1).
pub const LEASE_MARGIN: Duration = Duration::from_secs(15);

/// The prefix of every load batch's StatementName: the completion events' rule
/// (`template.yaml`) matches it.
pub const STATEMENT_NAME_PREFIX: &str = "partition-loader:";

/// The StatementName of a load batch: `partition-loader:<schema>.<table>:<holder
/// token>`, which says whose lease the statement holds. Past the Data API's 500
/// characters ([`crate::io::warehouse::MAX_STATEMENT_NAME`]) the table is named by its
/// lease table's name (at most 127 bytes, stable and collision-free, [`LeaseTables`]).
pub fn statement_name(tables: &LeaseTables, holder: &str) -> String {
    let name = format!("{STATEMENT_NAME_PREFIX}{}:{holder}", tables.target);
    if name.len() <= crate::io::warehouse::MAX_STATEMENT_NAME {
        name
    } else {
        format!("{STATEMENT_NAME_PREFIX}{}:{holder}", tables.lease.as_str())
    }
}

/// The holder token a load batch's StatementName carries, if it names one of `tables`'s
/// ([`statement_name`]).
pub fn holder_of_statement<'n>(tables: &LeaseTables, name: &'n str) -> Option<&'n str> {
    let rest = name.strip_prefix(STATEMENT_NAME_PREFIX)?;
    [tables.target.to_string(), tables.lease.as_str().to_string()]
        .iter()
        .find_map(|t| rest.strip_prefix(t.as_str())?.strip_prefix(':'))
        .filter(|h| !h.is_empty())
}

/// The lease token of one attempt of a Lambda request: `<request id>~<random>`. Lambda
/// keeps the request id across its retries, so a token of the request id alone let a
/// retry pass the fence of its own earlier attempt's batch, still running server-side.
/// The take still lets an attempt take over the lease of an earlier attempt of the same
/// request (same part before `~`): that invocation is over, and its batch's fence now
/// finds another holder.
pub fn attempt_token(request_id: &str) -> String {
    format!(
        "{request_id}{}{:08x}",
        sql::ATTEMPT_SEPARATOR,
        fastrand::u32(..)
    )
}

/// The Lambda request id of a lease token ([`attempt_token`], [`tenure_token`]): the
/// metrics name the request, as Lambda's own log lines do.
pub fn request_of(token: &str) -> &str {
    let invocation = invocation_of(token);
    invocation
        .split(sql::ATTEMPT_SEPARATOR)
        .next()
        .unwrap_or(invocation)
}

/// Separates an invocation's token from the number of one of its tenures
/// ([`tenure_token`]).
pub const TENURE_SEPARATOR: char = '+';

/// The lease token of one tenure: the `n`-th time an invocation (token `invocation`)
/// takes a table's lease, `<invocation>+<n>`. An invocation that loads several
/// partitions of one table (a backfill, the sweep, an SQS batch) takes its lease once
/// per partition; with one token for all of them, a statement of an earlier tenure
/// that ran after its caller gave up on it (a release whose caller timed out; a cancel
/// does not always take) matched the later tenure's lease and released it, and another
/// invocation's COPY then ran beside this one's (simulation seed 4174 of `statement`).
/// With a token per tenure such a statement matches no lease. A later tenure may take
/// over an earlier one's lease as it may an earlier attempt's (same request), after
/// finding none of its load statements running.
pub fn tenure_token(invocation: &str, n: u64) -> String {
    format!("{invocation}{TENURE_SEPARATOR}{n}")
}

/// The invocation's token of a tenure's ([`tenure_token`]; a token of no tenure is its
/// own).
pub fn invocation_of(token: &str) -> &str {
    token
        .split_once(TENURE_SEPARATOR)
        .map_or(token, |(invocation, _)| invocation)
}

/// One wake-up the holder claimed: where to list again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub bucket: String,
    pub partition_path: String,
    /// The route it came under; `None` for a wake-up queued by a version before routes
    /// were recorded (the holder lists it under its own route, as those versions did).
    pub route_prefix: Option<String>,
}

/// The outcome of one acquire.
#[derive(Debug)]
pub enum Acquired {
    /// We hold the lease; what the acquire batch read under it.
    Held(Held),
    /// Someone else holds it; our wake-up row is queued for them.
    Queued { holder: String, expires_at: String },
}

/// What the holder read under the lease, for one partition.
#[derive(Debug, Default)]
pub struct Held {
    /// Ledger rows of the partition.
    pub ledger: Vec<LoadedFile>,
    /// The partition's quarantined files (`sql::quarantine_read`): kept out of its
    /// loads while their ETag is the one quarantined.
    pub quarantined: Vec<LoadedFile>,
    /// The target's columns in table order (empty: the table does not exist).
    pub columns: Vec<String>,
    /// Those of them that are CHAR (blank-padded): replace mode refuses a partition value
    /// ending in a blank for them ([`sql::blank_in_char_column`]).
    pub char_columns: Vec<String>,
    /// `information_schema.columns.data_type` of each of `columns`, in the same order:
    /// partition values are rendered for them ([`sql::literals_for_table`]) and Parquet
    /// footers are matched against them ([`crate::lake::schema_match`]).
    pub column_types: Vec<String>,
    /// Those of `columns` that are NOT NULL without a DEFAULT: a file that lacks one is
    /// refused before COPY. Empty when the warehouse did not say.
    pub required_columns: Vec<String>,
}

/// What one drain step found.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// No wake-up was left: the lease is free.
    Released,
    /// The lease is renewed; load these, then step again with this claim as the done
    /// claim.
    Claimed(Vec<Claimed>),
    /// The lease is not ours any more (it expired and was taken over, or was unlocked).
    Lost { holder: Option<String> },
}

/// The lease protocol's context for one table and one invocation.
pub struct Ctx<'a, W> {
    /// Where the statements go.
    pub warehouse: &'a W,
    /// The loader schema, holding the lease, ledger and wake-up tables.
    pub schema: &'a sql::Ident,
    /// The table's own loader tables and procedures.
    pub tables: LeaseTables,
    /// This invocation's id (the Lambda request id: a retry keeps it, so a retried
    /// holder takes its own lease again).
    pub holder: &'a str,
    /// How long a take or a fence makes the lease last.
    pub ttl_seconds: u64,
    /// Nothing is started after it.
    pub deadline: Instant,
    /// No wake-up is claimed when less than this is left ([`reserve`] of the time the
    /// invocation had when the context was made).
    pub reserve: Duration,
}

impl<W> Ctx<'_, W> {
    /// The lease time a take or drain step sets now: the rest of this invocation plus
    /// [`LEASE_MARGIN`], at most the configured TTL.
    pub fn ttl_now(&self) -> u64 {
        let rest = self.deadline.saturating_duration_since(Instant::now()) + LEASE_MARGIN;
        // Whole seconds, rounded up: never shorter than the invocation.
        (rest.as_secs() + u64::from(rest.subsec_nanos() > 0)).min(self.ttl_seconds)
    }
}

impl<'a, W: Warehouse> Ctx<'a, W> {
    pub fn new(
        warehouse: &'a W,
        config: &'a Config,
        table: &TableName,
        holder: &'a str,
        deadline: Instant,
    ) -> Self {
        Ctx {
            warehouse,
            schema: &config.loader_schema,
            tables: LeaseTables::for_target(table),
            holder,
            ttl_seconds: config.lease_ttl.as_secs(),
            deadline,
            reserve: reserve(deadline.saturating_duration_since(Instant::now())),
        }
    }
}

/// Takes the lease for an event's object, or queues the object for the live holder.
pub async fn acquire_for_event<W: Warehouse>(
    ctx: &Ctx<'_, W>,
    route_prefix: &str,
    bucket: &str,
    partition_path: &str,
    object: &ObjectCreated,
) -> Result<Acquired, LoaderError> {
    let url = plan::s3_url(&object.bucket, &object.key);
    let etag = object.etag.as_deref().map(plan::normalise_etag);
    let wake = WakeUp {
        bucket,
        partition_path,
        s3_url: &url,
        etag: etag.as_deref().unwrap_or(""),
        route_prefix,
    };
    try_acquire(ctx, &wake).await
}

/// Takes the lease for a whole partition (backfill, sweep), or queues the partition for
/// the live holder.
pub async fn acquire_for_partition<W: Warehouse>(
    ctx: &Ctx<'_, W>,
    route_prefix: &str,
    bucket: &str,
    partition_path: &str,
) -> Result<Acquired, LoaderError> {
    let wake = WakeUp {
        bucket,
        partition_path,
        s3_url: "",
        etag: "",
        route_prefix,
    };
    try_acquire(ctx, &wake).await
}

/// Takes the lease only if it is free (the sweep, to drain what a crashed holder left);
/// queues nothing when it is held, since the live holder drains.
pub async fn acquire_if_free<W: Warehouse>(ctx: &Ctx<'_, W>) -> Result<Acquired, LoaderError> {
    let wake = WakeUp {
        bucket: "",
        partition_path: "",
        s3_url: "",
        etag: "",
        route_prefix: "",
    };
    try_acquire(ctx, &wake).await
}

/// The ledger rows of one partition and the target's columns, read by the holder for a
/// partition it claimed while draining.
pub async fn read_partition<W: Warehouse>(
    ctx: &Ctx<'_, W>,
    partition_path: &str,
) -> Result<Held, LoaderError> {
    let sqls = sql::holder_reads(ctx.schema, &ctx.tables, partition_path)?;
    let id = ctx
        .warehouse
        .run_batch(sqls, ctx.deadline)
        .await
        .map_err(|e| missing_tables(ctx, e))?;
    let ledger = ledger_rows(ctx.warehouse.rows(format!("{id}:1"), ctx.deadline).await?);
    let columns = ctx.warehouse.rows(format!("{id}:2"), ctx.deadline).await?;
    let quarantined = ledger_rows(ctx.warehouse.rows(format!("{id}:3"), ctx.deadline).await?);
    Ok(Held {
        ledger,
        quarantined,
        char_columns: char_columns(&columns),
        column_types: second_column(&columns),
        required_columns: required_columns(&columns),
        columns: first_column(columns),
    })
}

/// One drain step: forget the wake-ups of `done_claim` (loaded), then release the lease
/// if none is left, or renew it and claim all that are left as `new_claim`.
pub async fn drain_step<W: Warehouse>(
    ctx: &Ctx<'_, W>,
    done_claim: &str,
    new_claim: &str,
) -> Result<Drain, LoaderError> {
    let sqls = sql::drain_batch(
        ctx.schema,
        &ctx.tables,
        ctx.holder,
        ctx.ttl_now(),
        done_claim,
        new_claim,
    )?;
    let id = ctx
        .warehouse
        .run_batch(sqls, ctx.deadline)
        .await
        .map_err(|e| missing_tables(ctx, e))?;
    let lease = ctx.warehouse.rows(format!("{id}:8"), ctx.deadline).await?;
    let current = lease_row(ctx, &lease)?.0;
    match current {
        None => Ok(Drain::Released),
        Some(h) if h == ctx.holder => {
            let claimed = ctx
                .warehouse
                .rows(format!("{id}:7"), ctx.deadline)
                .await?
                .into_iter()
                .filter_map(|r| match r.as_slice() {
                    // An unpartitioned route's path is '' (NULL in no database, but be
                    // lenient with drivers that map '' to NULL).
                    [Some(bucket), path, route_prefix] => Some(Claimed {
                        bucket: bucket.clone(),
                        partition_path: path.clone().unwrap_or_default(),
                        route_prefix: route_prefix.clone(),
                    }),
                    _ => None,
                })
                .collect();
            Ok(Drain::Claimed(claimed))
        }
        Some(other) => Ok(Drain::Lost {
            holder: Some(other),
        }),
    }
}

/// Gives our lease up at once, wake-ups or not (no-op when we do not hold it). Used
/// after a failure and when the deadline leaves no time to drain: the next holder, a
/// Lambda retry or the sweep drains what is left.
pub async fn release<W: Warehouse>(ctx: &Ctx<'_, W>, deadline: Instant) -> Result<(), LoaderError> {
    let sqls = sql::release_batch(ctx.schema, &ctx.tables, ctx.holder)?;
    ctx.warehouse.run_batch(sqls, deadline).await.map(|_| ())
}

/// Leaves a wake-up for the holder's own partition before it ends its invocation with
/// its load statement running ([`sql::leave_wakeup_batch`]).
pub async fn leave_wakeup<W: Warehouse>(
    ctx: &Ctx<'_, W>,
    wake: &WakeUp<'_>,
    deadline: Instant,
) -> Result<(), LoaderError> {
    let sqls = sql::leave_wakeup_batch(ctx.schema, &ctx.tables, ctx.holder, wake)?;
    ctx.warehouse.run_batch(sqls, deadline).await.map(|_| ())
}

/// The lease as it is now: `(holder, live)`, for the completion step.
pub async fn lease_now<W: Warehouse>(
    ctx: &Ctx<'_, W>,
) -> Result<(Option<String>, bool), LoaderError> {
    let id = ctx
        .warehouse
        .run_batch(sql::lease_read(ctx.schema, &ctx.tables), ctx.deadline)
        .await
        .map_err(|e| missing_tables(ctx, e))?;
    let rows = ctx.warehouse.rows(format!("{id}:2"), ctx.deadline).await?;
    let (holder, _) = lease_row(ctx, &rows)?;
    let live = rows
        .first()
        .and_then(|r| r.get(2).cloned().flatten())
        .is_some_and(|v| is_true(&v));
    Ok((holder, live))
}

fn is_true(v: &str) -> bool {
    matches!(v, "true" | "t" | "1" | "TRUE")
}

/// The acquire: one take; when it found the lease held by someone whose invocation is
/// over (expired, or an earlier attempt of our own request), that holder's load
/// statement is looked up: still running, the lease stays the statement's and our
/// wake-up (queued by that take) waits for it; ended (or none), a second take names the
/// holder as checked and takes the lease over. Between the check and the second take
/// nothing of the old holder can start: its invocation is over (an expired lease says
/// so, [`LEASE_MARGIN`]); and if someone else took the lease meanwhile, the second take
/// finds another holder than the one checked and queues.
async fn try_acquire<W: Warehouse>(
    ctx: &Ctx<'_, W>,
    wake: &WakeUp<'_>,
) -> Result<Acquired, LoaderError> {
    let first = take_once(ctx, wake, "").await?;
    let TakeSeen::Other {
        holder,
        expires_at,
        live,
    } = first
    else {
        return finish_take(ctx, first, wake).await;
    };
    let over = !live || request_of(&holder) == request_of(ctx.holder);
    if !over {
        return Ok(Acquired::Queued { holder, expires_at });
    }
    let name = statement_name(&ctx.tables, &holder);
    if let Some(id) = ctx.warehouse.running_statement(name, ctx.deadline).await? {
        tracing::info!(table = %ctx.tables.target, holder, statement_id = id,
            "the lease expired, but its load statement still runs: it holds the lease");
        return Ok(Acquired::Queued { holder, expires_at });
    }
    // Our wake-up, if the first take queued one, is drained by ourselves.
    let second = take_once(ctx, wake, &holder).await?;
    finish_take(ctx, second, wake).await
}

/// What one take batch found.
enum TakeSeen {
    /// We hold the lease.
    Ours,
    /// Nobody holds it (only `acquire_if_free` leaves a free lease free).
    Free,
    Other {
        holder: String,
        expires_at: String,
        live: bool,
    },
}

async fn finish_take<W: Warehouse>(
    ctx: &Ctx<'_, W>,
    seen: TakeSeen,
    wake: &WakeUp<'_>,
) -> Result<Acquired, LoaderError> {
    match seen {
        TakeSeen::Ours => {
            let read = read_partition(ctx, wake.partition_path).await;
            if read.is_err() {
                // The batch committed, so we hold the lease.
                let _ = release(ctx, ctx.deadline.max(Instant::now() + RELEASE_GRACE)).await;
            }
            Ok(Acquired::Held(read?))
        }
        // Reported as held by nobody, which the sweep treats as "nothing to drain".
        TakeSeen::Free => Ok(Acquired::Queued {
            holder: String::new(),
            expires_at: String::new(),
        }),
        TakeSeen::Other {
            holder, expires_at, ..
        } => Ok(Acquired::Queued { holder, expires_at }),
    }
}

/// Runs the take batch once, taking over the lease of `checked` if it still holds it.
async fn take_once<W: Warehouse>(
    ctx: &Ctx<'_, W>,
    wake: &WakeUp<'_>,
    checked: &str,
) -> Result<TakeSeen, LoaderError> {
    let sqls = sql::take_batch(
        ctx.schema,
        &ctx.tables,
        ctx.holder,
        ctx.ttl_now(),
        wake,
        checked,
    )?;
    let id = match ctx.warehouse.run_batch(sqls, ctx.deadline).await {
        Ok(id) => id,
        Err(e @ LoaderError::Timeout { .. }) => {
            // The cancelled acquire may have committed anyway: do not leave a lease
            // behind for its TTL when dropping it is harmless.
            let _ = release(ctx, Instant::now() + RELEASE_GRACE).await;
            return Err(e);
        }
        Err(e) => return Err(missing_tables(ctx, e)),
    };
    let read = read_take(ctx, &id).await;
    if read.is_err() {
        // The batch committed, so we may hold the lease without knowing it.
        let _ = release(ctx, ctx.deadline.max(Instant::now() + RELEASE_GRACE)).await;
    }
    read
}

async fn read_take<W: Warehouse>(ctx: &Ctx<'_, W>, id: &str) -> Result<TakeSeen, LoaderError> {
    let lease = ctx.warehouse.rows(format!("{id}:3"), ctx.deadline).await?;
    let (current, expires_at) = lease_row(ctx, &lease)?;
    match current {
        Some(h) if h == ctx.holder => Ok(TakeSeen::Ours),
        Some(holder) => {
            let live = ctx.warehouse.rows(format!("{id}:5"), ctx.deadline).await?;
            let live = live
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .is_some_and(|v| is_true(&v));
            Ok(TakeSeen::Other {
                holder,
                expires_at,
                live,
            })
        }
        None => Ok(TakeSeen::Free),
    }
}

/// The single lease row: `(holder, expires_at)`. Zero or several rows is an error,
/// never "pick the first".
fn lease_row<W>(ctx: &Ctx<'_, W>, rows: &[Row]) -> Result<(Option<String>, String), LoaderError> {
    match rows {
        [row] => Ok((
            row.first().cloned().flatten(),
            row.get(1).cloned().flatten().unwrap_or_default(),
        )),
        _ => Err(LoaderError::LeaseRows {
            table: ctx.tables.target.to_string(),
            detail: format!("{} rows, expected exactly one", rows.len()),
        }),
    }
}

fn ledger_rows(rows: Vec<Row>) -> Vec<LoadedFile> {
    rows.into_iter()
        .filter_map(|r| match r.as_slice() {
            [Some(url), Some(etag), ..] => Some(LoadedFile {
                s3_url: url.clone(),
                etag: etag.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Names of the CHAR columns among `column_name, data_type` rows
/// (`information_schema.columns` says `character` for CHAR/BPCHAR/NCHAR).
fn char_columns(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter(|r| matches!(r.get(1), Some(Some(t)) if t == "character" || t == "bpchar"))
        .filter_map(|r| r.first().cloned().flatten())
        .collect()
}

fn second_column(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter(|r| matches!(r.first(), Some(Some(_))))
        .map(|r| r.get(1).cloned().flatten().unwrap_or_default())
        .collect()
}

/// Names of the columns among `column_name, data_type, is_nullable, column_default`
/// rows that are NOT NULL and have no DEFAULT.
fn required_columns(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter(|r| matches!(r.get(2), Some(Some(n)) if n.eq_ignore_ascii_case("no")))
        .filter(|r| matches!(r.get(3), Some(None)))
        .filter_map(|r| r.first().cloned().flatten())
        .collect()
}

fn first_column(rows: Vec<Row>) -> Vec<String> {
    rows.into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect()
}

/// Names a failure that means the table's loader objects were never created (or the
/// lease table lost its single row).
pub(crate) fn missing_tables<W>(ctx: &Ctx<'_, W>, e: LoaderError) -> LoaderError {
    match e {
        LoaderError::StatementFailed { message, .. }
            if message.contains("does not exist")
                && (message.contains(ctx.tables.lease.as_str())
                    || message.contains(ctx.tables.take.as_str())
                    || message.contains(ctx.tables.ledger.as_str())
                    || message.contains(ctx.tables.quarantine.as_str())
                    || message.contains(ctx.schema.as_str())) =>
        {
            LoaderError::NotBootstrapped {
                table: ctx.tables.target.to_string(),
                message,
            }
        }
        LoaderError::StatementFailed { message, .. }
            if message.contains(sql::LEASE_ROWS_MARKER) =>
        {
            LoaderError::LeaseRows {
                table: ctx.tables.target.to_string(),
                detail: message,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    //! The control flow against a scripted in-memory warehouse: each call pops the next
    //! scripted answer and records the statements it was given.
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Scripted answers: `run_batch`/`run` pop an id or an error; `rows` pops rows.
    #[derive(Default)]
    struct Scripted {
        submits: Mutex<VecDeque<Result<String, LoaderError>>>,
        rows: Mutex<VecDeque<Vec<Row>>>,
        sent: Mutex<Vec<Vec<String>>>,
        /// What `running_statement` answers, and the names it was asked about.
        running: Mutex<Option<String>>,
        asked: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn submit(self, r: Result<&str, LoaderError>) -> Self {
            self.submits
                .lock()
                .unwrap()
                .push_back(r.map(str::to_string));
            self
        }
        fn rows(self, rows: Vec<Row>) -> Self {
            self.rows.lock().unwrap().push_back(rows);
            self
        }
        fn sent(&self) -> Vec<Vec<String>> {
            self.sent.lock().unwrap().clone()
        }
        fn pop(&self, sqls: Vec<String>) -> Result<String, LoaderError> {
            self.sent.lock().unwrap().push(sqls);
            self.submits
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Err(LoaderError::Config("script ran out".into())))
        }
    }

    impl Warehouse for Scripted {
        async fn run_batch(&self, sqls: Vec<String>, _d: Instant) -> Result<String, LoaderError> {
            self.pop(sqls)
        }
        async fn run(
            &self,
            sql: String,
            _p: Vec<(&'static str, String)>,
            _d: Instant,
        ) -> Result<String, LoaderError> {
            self.pop(vec![sql])
        }
        async fn rows(&self, _id: String, _d: Instant) -> Result<Vec<Row>, LoaderError> {
            Ok(self.rows.lock().unwrap().pop_front().unwrap_or_default())
        }
        async fn running_statement(
            &self,
            name: String,
            _d: Instant,
        ) -> Result<Option<String>, LoaderError> {
            self.asked.lock().unwrap().push(name);
            Ok(self.running.lock().unwrap().clone())
        }
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    fn ctx(w: &Scripted) -> Ctx<'_, Scripted> {
        static SCHEMA: std::sync::OnceLock<sql::Ident> = std::sync::OnceLock::new();
        Ctx {
            warehouse: w,
            schema: SCHEMA.get_or_init(|| sql::Ident::parse("pl").unwrap()),
            tables: LeaseTables::for_target(&TableName::parse("s.t").unwrap()),
            holder: "me",
            ttl_seconds: 960,
            deadline: Instant::now() + Duration::from_secs(60),
            reserve: Duration::from_secs(15),
        }
    }

    fn object() -> ObjectCreated {
        ObjectCreated {
            bucket: "b".into(),
            key: "o/d=1/f".into(),
            raw_key: "o/d=1/f".into(),
            size: Some(1),
            etag: Some("\"e\"".into()),
        }
    }

    #[tokio::test]
    async fn a_busy_lease_costs_one_submission_and_queues() {
        let w = Scripted::default()
            .submit(Ok("id"))
            .rows(vec![vec![some("other"), some("2026-01-01 00:00:00")]])
            .rows(vec![vec![some("true")]]);
        let got = acquire_for_event(&ctx(&w), "o/", "b", "d=1/", &object()).await;
        match got {
            Ok(Acquired::Queued { holder, .. }) => assert_eq!(holder, "other"),
            other => panic!("{other:?}"),
        }
        let sent = w.sent();
        assert_eq!(sent.len(), 1, "one submission");
        assert!(
            sent[0][1].contains("'s3://b/o/d=1/f', 'e', 'o/', '')"),
            "{}",
            sent[0][1]
        );
        assert!(
            w.asked.lock().unwrap().is_empty(),
            "a live lease needs no check"
        );
    }

    #[tokio::test]
    async fn an_expired_lease_whose_statement_runs_stays_the_statements() {
        let w = Scripted::default()
            .submit(Ok("id"))
            .rows(vec![vec![some("dead~1"), some("2026-01-01 00:00:00")]])
            .rows(vec![vec![some("false")]]);
        *w.running.lock().unwrap() = Some("stmt-1".into());
        match acquire_for_event(&ctx(&w), "o/", "b", "d=1/", &object()).await {
            Ok(Acquired::Queued { holder, .. }) => assert_eq!(holder, "dead~1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.sent().len(), 1, "no second take while the statement runs");
        assert_eq!(
            *w.asked.lock().unwrap(),
            ["partition-loader:s.t:dead~1"],
            "the statement is found by the name its holder gave it"
        );
    }

    #[tokio::test]
    async fn an_expired_lease_whose_statement_ended_is_taken_over_by_name() {
        let w = Scripted::default()
            .submit(Ok("id"))
            .rows(vec![vec![some("dead~1"), some("2026-01-01 00:00:00")]])
            .rows(vec![vec![some("false")]])
            .submit(Ok("id2"))
            .rows(vec![vec![some("me"), some("x")]])
            .submit(Ok("reads"))
            .rows(vec![])
            .rows(vec![vec![some("id"), some("bigint")]]);
        match acquire_for_event(&ctx(&w), "o/", "b", "d=1/", &object()).await {
            Ok(Acquired::Held(held)) => assert_eq!(held.columns, ["id"]),
            other => panic!("{other:?}"),
        }
        let sent = w.sent();
        assert_eq!(sent.len(), 3, "take, take over the checked holder, read");
        assert!(sent[1][1].ends_with("'o/', 'dead~1')"), "{}", sent[1][1]);
    }

    #[test]
    fn statement_names_carry_table_and_holder_within_the_limit() {
        let t = LeaseTables::for_target(&TableName::parse("s.t").unwrap());
        let name = statement_name(&t, "req~0000abcd");
        assert_eq!(name, "partition-loader:s.t:req~0000abcd");
        assert_eq!(holder_of_statement(&t, &name), Some("req~0000abcd"));
        let other = LeaseTables::for_target(&TableName::parse("s.t2").unwrap());
        assert_eq!(holder_of_statement(&other, &name), None);
        let long = format!("{}.{}", "s".repeat(127), "t".repeat(127));
        let t = LeaseTables::for_target(&TableName::parse(&long).unwrap());
        let token = "r".repeat(256);
        let name = statement_name(&t, &token);
        assert!(
            name.len() <= crate::io::warehouse::MAX_STATEMENT_NAME,
            "{}",
            name.len()
        );
        assert_eq!(holder_of_statement(&t, &name), Some(token.as_str()));
    }

    #[tokio::test]
    async fn a_free_lease_is_taken_with_the_partition_ledger() {
        let w = Scripted::default()
            .submit(Ok("id"))
            .rows(vec![vec![some("me"), some("x")]])
            .submit(Ok("reads"))
            .rows(vec![vec![some("s3://b/o/d=1/f"), some("e"), some("1")]])
            .rows(vec![
                vec![some("id"), some("bigint")],
                vec![some("d"), some("character")],
            ]);
        match acquire_for_event(&ctx(&w), "o/", "b", "d=1/", &object()).await {
            Ok(Acquired::Held(held)) => {
                assert_eq!(held.ledger.len(), 1);
                assert_eq!(held.columns, ["id", "d"]);
                assert_eq!(held.char_columns, ["d"]);
            }
            other => panic!("{other:?}"),
        }
        let sent = w.sent();
        assert_eq!(sent.len(), 2, "the holder reads its ledger after the lock");
        assert!(
            sent[1][0].contains("partition_path = 'd=1/'"),
            "{:?}",
            sent[1]
        );
    }

    #[tokio::test]
    async fn two_lease_rows_are_an_error_never_the_first_pick() {
        let w = Scripted::default()
            .submit(Ok("id"))
            .rows(vec![vec![some("me"), None], vec![some("other"), None]])
            .submit(Ok("release"));
        let e = acquire_for_event(&ctx(&w), "o/", "b", "d=1/", &object())
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "Permanent.LeaseRows");
        assert!(
            w.sent()[1][1].starts_with("UPDATE"),
            "released after the failed read"
        );
    }

    #[tokio::test]
    async fn a_cancelled_acquire_releases_what_it_may_have_taken() {
        let w = Scripted::default()
            .submit(Err(LoaderError::Timeout {
                statement_id: "x".into(),
                status: "STARTED".into(),
            }))
            .submit(Ok("release"));
        let e = acquire_for_event(&ctx(&w), "o/", "b", "d=1/", &object())
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "Retryable.Timeout");
        assert_eq!(w.sent().len(), 2);
        assert!(
            w.sent()[1][0].starts_with("LOCK "),
            "under the acquirers' lock"
        );
        assert!(w.sent()[1][1].contains("SET holder = NULL"));
    }

    #[tokio::test]
    async fn drain_steps_tell_released_claimed_and_lost_apart() {
        let w = Scripted::default()
            .submit(Ok("a"))
            .rows(vec![vec![None, None]])
            .submit(Ok("b"))
            .rows(vec![vec![some("me"), some("x")]])
            .rows(vec![vec![some("b"), some("d=2/"), some("o/")]])
            .submit(Ok("c"))
            .rows(vec![vec![some("thief"), some("x")]]);
        let c = ctx(&w);
        assert_eq!(drain_step(&c, "", "me#1").await.unwrap(), Drain::Released);
        assert_eq!(
            drain_step(&c, "me#1", "me#2").await.unwrap(),
            Drain::Claimed(vec![Claimed {
                bucket: "b".into(),
                partition_path: "d=2/".into(),
                route_prefix: Some("o/".into())
            }])
        );
        assert_eq!(
            drain_step(&c, "me#2", "me#3").await.unwrap(),
            Drain::Lost {
                holder: Some("thief".into())
            }
        );
    }

    #[tokio::test]
    async fn a_wake_up_of_an_earlier_version_is_claimed_without_a_route() {
        let w = Scripted::default()
            .submit(Ok("a"))
            .rows(vec![vec![some("me"), some("x")]])
            .rows(vec![
                vec![some("b"), some("d=2/"), None],
                vec![some("b"), None, some("")],
            ]);
        let got = drain_step(&ctx(&w), "", "me#1").await.unwrap();
        assert_eq!(
            got,
            Drain::Claimed(vec![
                Claimed {
                    bucket: "b".into(),
                    partition_path: "d=2/".into(),
                    route_prefix: None
                },
                Claimed {
                    bucket: "b".into(),
                    partition_path: String::new(),
                    route_prefix: Some(String::new())
                },
            ])
        );
    }

    #[test]
    fn the_reserve_scales_with_the_time_the_invocation_had() {
        assert_eq!(
            reserve(Duration::from_secs(25)),
            Duration::from_millis(6250)
        );
        assert_eq!(reserve(Duration::from_secs(895)), DRAIN_RESERVE);
        assert_eq!(reserve(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn each_attempt_has_its_own_token_with_the_request_id_in_front() {
        let a = attempt_token("3f1c-req");
        let b = attempt_token("3f1c-req");
        assert_ne!(a, b);
        for t in [&a, &b] {
            assert_eq!(
                t.split(sql::ATTEMPT_SEPARATOR).next(),
                Some("3f1c-req"),
                "{t}"
            );
        }
    }

    #[test]
    fn each_tenure_has_its_own_token_and_names_its_invocation_and_request() {
        let attempt = "3f1c-req~0000abcd";
        let (a, b) = (tenure_token(attempt, 0), tenure_token(attempt, 1));
        assert_ne!(a, b);
        for t in [&a, &b] {
            assert_eq!(invocation_of(t), attempt);
            assert_eq!(request_of(t), "3f1c-req");
        }
        assert_eq!(invocation_of(attempt), attempt);
        assert_eq!(request_of("sweep-5+2"), "sweep-5");
    }

    #[tokio::test]
    async fn missing_loader_tables_name_the_fix() {
        let w = Scripted::default().submit(Err(LoaderError::StatementFailed {
            statement_id: "x".into(),
            message: "ERROR: relation \"pl.lease_1_s_t\" does not exist".into(),
        }));
        let e = acquire_for_event(&ctx(&w), "o/", "b", "d=1/", &object())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("loaderctl bootstrap"), "{e}");
        assert_eq!(e.error_type(), "Permanent.NotBootstrapped");
    }
}
