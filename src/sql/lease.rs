//! The statements of the lease steps ([`crate::protocol::lease`]): the take, the holder's reads,
//! the drain, the release, and the texts the fencing procedures raise.

use super::*;

/// Text the fencing procedures raise; the warehouse adapter recognises it.
pub const LEASE_LOST_MARKER: &str = "partition-loader: lease on";

/// Separates a Lambda request id from the attempt's own suffix in a lease token
/// (`<request id>~<suffix>`, see `lease::attempt_token`): the take lets an attempt take
/// over the lease of an earlier attempt of the same request, whose invocation is over.
pub const ATTEMPT_SEPARATOR: &str = "~";

/// Text the fence raises when a file of the batch is in the ledger under another load.
pub const LOADED_ELSEWHERE_MARKER: &str = "partition-loader: loaded by another load";

/// Text the acquire procedure raises when a lease table does not hold exactly one row.
pub const LEASE_ROWS_MARKER: &str = "expected exactly one";

/// The acquire batch: one submission whatever happens. Result `:3` (1-based, as the
/// Data API numbers them) = the lease row(s). When the lease is someone else's, the
/// procedure queued a wake-up instead of taking it (unless `wake.bucket` is empty: then
/// nothing). Only these three statements run under the lock, which every acquirer of
/// the table queues on: the holder reads the ledger afterwards ([`holder_reads`]; only
/// it writes the ledger while it holds the lease).
pub fn take_batch(
    schema: &Ident,
    t: &LeaseTables,
    holder: &str,
    ttl_seconds: u64,
    wake: &WakeUp<'_>,
    checked: &str,
) -> Result<Vec<String>, LoaderError> {
    let s = schema.quoted();
    Ok(vec![
        // First on purpose: every acquirer and every drain of this table is serialised by
        // it, and the snapshot (taken at the first query) follows the previous holder.
        // The wake-up table, not the lease table: if Redshift counted a LOCK as a write
        // in its table-level conflict check (undocumented), a busy acquirer locking the
        // lease table would close a cycle with a running load, whose fence reads and
        // writes the lease row; the wake-up table is one that no load batch touches.
        format!("LOCK {}", t.q(schema, &t.wakeup)),
        format!(
            "CALL {s}.{}({}, {ttl_seconds}, {}, {}, {}, {}, {}, {})",
            t.take.quoted(),
            literal(holder)?,
            literal(wake.bucket)?,
            literal(wake.partition_path)?,
            literal(wake.s3_url)?,
            literal(wake.etag)?,
            literal(wake.route_prefix)?,
            literal(checked)?
        ),
        format!("SELECT holder, expires_at FROM {}", t.q(schema, &t.lease)),
        // Whether the lease read above is live, compared in UTC like every lease time
        // (`:5`); after the reads, so the snapshot and indexes above stay as they were.
        UTC_SESSION.to_string(),
        format!(
            "SELECT COALESCE(expires_at > GETDATE(), FALSE) FROM {}",
            t.q(schema, &t.lease)
        ),
    ])
}

/// What an acquirer hands to the holder when the lease is busy.
#[derive(Debug, Clone, Copy)]
pub struct WakeUp<'a> {
    pub bucket: &'a str,
    pub partition_path: &'a str,
    /// The event's object; empty for a backfill or sweep (the whole partition).
    pub s3_url: &'a str,
    pub etag: &'a str,
    /// The prefix of the route the object came under: a table may have several routes,
    /// and the holder lists the partition under this one.
    pub route_prefix: &'a str,
}

fn columns_query(table: &TableName) -> Result<String, LoaderError> {
    Ok(format!(
        "SELECT column_name, data_type, is_nullable, column_default FROM \
         information_schema.columns WHERE table_schema = {} \
         AND table_name = {} ORDER BY ordinal_position",
        literal(table.schema.as_str())?,
        literal(table.name.as_str())?
    ))
}

/// The ledger rows of one partition (`:1`) and the target's columns with their types
/// (`:2`: `column_name, data_type, is_nullable, column_default`; `is_nullable` `NO`
/// without a default marks a column a Parquet file must hold, [`crate::lake::schema_match`]),
/// read by the holder, and the partition's quarantined files (`:3`: `s3_url, etag`).
pub fn holder_reads(
    schema: &Ident,
    t: &LeaseTables,
    partition_path: &str,
) -> Result<Vec<String>, LoaderError> {
    Ok(vec![
        format!(
            "SELECT s3_url, etag, size_bytes FROM {} WHERE partition_path = {}",
            t.q(schema, &t.ledger),
            literal(partition_path)?
        ),
        columns_query(&t.target)?,
        quarantine_read(schema, t, partition_path)?,
    ])
}

/// The holder's step between loads, under the same `LOCK` as every wake-up insert:
/// forget the wake-ups of the partitions it has just loaded (`done_claim`), then either
/// release the lease when no wake-up is left, or renew it and claim every wake-up left
/// (`new_claim`, including claims of a crashed holder). Results: `:7` = claimed
/// `(bucket, partition_path, route_prefix)` (`route_prefix` NULL for wake-ups queued by
/// versions before it), `:8` = the lease row.
pub fn drain_batch(
    schema: &Ident,
    t: &LeaseTables,
    holder: &str,
    ttl_seconds: u64,
    done_claim: &str,
    new_claim: &str,
) -> Result<Vec<String>, LoaderError> {
    let lease = t.q(schema, &t.lease);
    let wakeup = t.q(schema, &t.wakeup);
    let h = literal(holder)?;
    let ours = format!("EXISTS (SELECT 1 FROM {lease} WHERE holder = {h})");
    Ok(vec![
        // The same lock as every acquire's (see `take_batch`).
        format!("LOCK {wakeup}"),
        // The renewal below writes a lease time (see [`UTC_SESSION`]).
        UTC_SESSION.to_string(),
        format!(
            "DELETE FROM {wakeup} WHERE claim = {} AND {ours}",
            literal(done_claim)?
        ),
        format!(
            "UPDATE {lease} SET holder = NULL, acquired_at = NULL, expires_at = NULL \
             WHERE holder = {h} AND NOT EXISTS (SELECT 1 FROM {wakeup})"
        ),
        format!(
            "UPDATE {lease} SET expires_at = DATEADD(second, {ttl_seconds}, GETDATE()) \
             WHERE holder = {h}"
        ),
        format!(
            "UPDATE {wakeup} SET claim = {} WHERE {ours}",
            literal(new_claim)?
        ),
        format!(
            "SELECT DISTINCT bucket, partition_path, route_prefix FROM {wakeup} WHERE claim = {} \
             ORDER BY partition_path",
            literal(new_claim)?
        ),
        format!("SELECT holder, expires_at FROM {lease}"),
    ])
}

/// Gives the lease up at once, wake-ups or not (after a failure, or when the deadline
/// leaves no time to drain: the next holder or the sweep drains them). Under the
/// acquirers' lock, so that an acquire either sees the lease still held (and its
/// wake-up is left for the next holder or the sweep, as every wake-up of a released
/// lease is) or sees it free and takes it.
pub fn release_batch(
    schema: &Ident,
    t: &LeaseTables,
    holder: &str,
) -> Result<Vec<String>, LoaderError> {
    Ok(vec![
        format!("LOCK {}", t.q(schema, &t.wakeup)),
        format!(
            "UPDATE {} SET holder = NULL, acquired_at = NULL, expires_at = NULL \
             WHERE holder = {}",
            t.q(schema, &t.lease),
            literal(holder)?
        ),
    ])
}

/// The wake-up a holder leaves for its own partition when it ends the invocation with
/// its load statement still running (outcome `running`): if that statement fails, the
/// next holder (the completion step, an acquirer or the sweep) lists the partition
/// again; if it commits, that listing finds it up to date. A batch of its own on the
/// wake-up table, which no load batch touches, so it never conflicts with the running
/// load. Queued for `holder` itself: the next holder claims every wake-up.
pub fn leave_wakeup_batch(
    schema: &Ident,
    t: &LeaseTables,
    holder: &str,
    wake: &WakeUp<'_>,
) -> Result<Vec<String>, LoaderError> {
    leave_wakeups_batch(schema, t, holder, std::slice::from_ref(wake))
}

/// Several wake-ups in one INSERT under the acquirers' lock ([`leave_wakeup_batch`]):
/// the S3 gate's transfer of the wake-ups queued in S3 (`run::gate`), each row queued by
/// `holder` (the transferring invocation). An INSERT under `LOCK wakeup` is either seen
/// by the lease holder's next drain step or comes after its release.
pub fn leave_wakeups_batch(
    schema: &Ident,
    t: &LeaseTables,
    holder: &str,
    wakes: &[WakeUp<'_>],
) -> Result<Vec<String>, LoaderError> {
    let h = literal(holder)?;
    let rows = wakes
        .iter()
        .map(|w| {
            Ok(format!(
                "({}, {}, {}, {}, {h}, GETDATE(), {})",
                literal(w.bucket)?,
                literal(w.partition_path)?,
                literal(w.s3_url)?,
                literal(w.etag)?,
                literal(w.route_prefix)?
            ))
        })
        .collect::<Result<Vec<_>, LoaderError>>()?;
    Ok(vec![
        format!("LOCK {}", t.q(schema, &t.wakeup)),
        UTC_SESSION.to_string(),
        format!(
            "INSERT INTO {} (bucket, partition_path, s3_url, etag, queued_by, queued_at, \
             route_prefix) VALUES {}",
            t.q(schema, &t.wakeup),
            rows.join(", ")
        ),
    ])
}

/// The lease row with its liveness in UTC, read by the completion step before it
/// decides anything (`:2`: holder, expires_at, live).
pub fn lease_read(schema: &Ident, t: &LeaseTables) -> Vec<String> {
    vec![
        UTC_SESSION.to_string(),
        format!(
            "SELECT holder, expires_at, COALESCE(expires_at > GETDATE(), FALSE) FROM {}",
            t.q(schema, &t.lease)
        ),
    ]
}
