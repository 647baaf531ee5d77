//! The invariants, as named functions over the model's state (so that the soak can
//! check the same properties against the real tables). Step-local ones run at every
//! commit or return; final ones after the final sweep and redrive, at a time after
//! every TTL.

use std::collections::BTreeSet;

use super::warehouse::{State, WakeUp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// One of the names below.
    pub invariant: &'static str,
    pub detail: String,
}

/// Every existing non-corrupt file is loaded exactly once (never twice at any commit;
/// once at the end); a corrupt one never, and Redshift reported its failure.
pub const EXACTLY_ONCE: &str = "exactly_once";
/// A corrupt file (its COPY fails permanently) is quarantined by the end, never loaded,
/// and never costs the good files of its partition their load (those are
/// [`EXACTLY_ONCE`]'s: loaded once).
pub const BAD_FILE_QUARANTINED: &str = "bad_file_quarantined_not_hostage";
/// A wake-up row is deleted only once every file it stands for is in the ledger or its
/// COPY failed permanently; none is left at the end.
pub const NO_WAKEUP_LOST: &str = "no_wakeup_lost";
/// A lease never lasts longer than TTL after the write that set it, and at the end
/// (after every TTL, the final sweep and the redrive) no lease is held.
pub const NO_LEASE_PAST_TTL: &str = "no_lease_held_by_a_dead_holder_past_its_ttl";
/// An invocation that returns success did not release its lease while wake-ups queued
/// during its tenure were still waiting.
pub const HOLDER_DRAINS: &str = "holder_returns_success_only_after_draining";
/// No two load batches into one table run at once (issue 21.1): a load batch starts
/// only while no other load batch of its table has started and not ended, whether or
/// not the invocation that submitted the other is still alive.
pub const ONE_LOAD_AT_A_TIME: &str = "one_load_statement_per_table_at_a_time";
/// With ready markers: nothing of a partition is loaded before its marker exists (and,
/// by [`EXACTLY_ONCE`] at the end, every file of a marked partition is loaded once).
pub const LOADED_AFTER_MARKER: &str = "nothing_loaded_before_its_marker";
/// The S3 gate (issue 21 item 4): at quiescence, an S3 wake-up object exists only
/// behind its table's gate object, unless a crash explains it (its writer, or a gate
/// holder of its table, was killed: the sweep's case); after the final sweep, no gate
/// object and no S3 wake-up is left.
pub const NO_WAKEUP_STRANDED: &str = "no_wakeup_stranded";
/// The model understands every statement the loader sends.
pub const MODEL: &str = "model_understands_every_statement";

fn violation(invariant: &'static str, detail: String) -> Option<Violation> {
    Some(Violation { invariant, detail })
}

/// Step-local half of [`EXACTLY_ONCE`]: after a commit, no file is in a target twice.
pub fn no_file_loaded_twice(state: &State, new_loads: &[String]) -> Option<Violation> {
    let url = new_loads.iter().find(|u| state.loaded_count(u) > 1)?;
    violation(
        EXACTLY_ONCE,
        format!(
            "{url} is now in its table {} times",
            state.loaded_count(url)
        ),
    )
}

/// Ready markers (issue 20 item 1): a file is loaded only when its partition's marker
/// exists (checked at the commit that loads it; objects are never deleted, so it existed
/// when the loader listed).
pub fn loaded_only_after_marker(
    s3: &super::storage::Objects,
    new_loads: &[String],
    marker: &str,
) -> Option<Violation> {
    let url = new_loads.iter().find(|u| {
        let dir = &u[..u.rfind('/').unwrap_or(0) + 1];
        s3.object(&format!("{dir}{marker}")).is_none()
    })?;
    violation(
        LOADED_AFTER_MARKER,
        format!("{url} was loaded before its partition's {marker} existed"),
    )
}

/// [`NO_WAKEUP_LOST`] at the DELETE of wake-ups (checked on the committed state).
pub fn wakeups_deleted_only_when_done(
    state: &State,
    failed_permanently: &BTreeSet<String>,
    deleted: &[WakeUp],
) -> Option<Violation> {
    for w in deleted {
        if let Some(url) = w
            .files
            .iter()
            .find(|u| !state.in_ledger(u) && !failed_permanently.contains(*u))
        {
            return violation(
                NO_WAKEUP_LOST,
                format!(
                    "wake-up for {}{} ({} by {}) deleted, but {url} is not in the ledger and \
                     did not fail permanently",
                    w.bucket,
                    if w.s3_url.is_empty() {
                        format!(" partition {}", w.partition)
                    } else {
                        format!(" object {}", w.s3_url)
                    },
                    "queued",
                    w.queued_by
                ),
            );
        }
    }
    None
}

/// Step-local half of [`NO_LEASE_PAST_TTL`]: a lease write sets an expiry at most TTL
/// after the writing statement's start.
pub fn lease_write_within_ttl(
    now_ms: i64,
    ttl_ms: i64,
    expires_ms: Option<i64>,
) -> Option<Violation> {
    let e = expires_ms?;
    if e > now_ms + ttl_ms {
        return violation(
            NO_LEASE_PAST_TTL,
            format!("lease set to expire {} ms after its write", e - now_ms),
        );
    }
    None
}

/// Final half of [`NO_LEASE_PAST_TTL`]: every lease free or expired.
pub fn no_lease_held(state: &State, now_ms: i64) -> Option<Violation> {
    let (t, l) = state
        .leases
        .iter()
        .find(|(_, l)| l.holder.is_some() && l.expires_ms.is_some_and(|e| e > now_ms))?;
    violation(
        NO_LEASE_PAST_TTL,
        format!(
            "after every TTL the lease of target {t} is still held by {:?}",
            l.holder
        ),
    )
}

/// [`HOLDER_DRAINS`]: `left` = wake-ups queued during its tenure that its own release
/// left behind; `deadline_forced`: it ended with less than its drain reserve
/// (`lease::reserve`) left, so the release may be the deadline's (allowed: the next
/// holder, a retry or the sweep drains them).
pub fn holder_drained(holder: &str, left: usize, deadline_forced: bool) -> Option<Violation> {
    if left == 0 || deadline_forced {
        return None;
    }
    violation(
        HOLDER_DRAINS,
        format!(
            "{holder} returned success but released its lease with {left} wake-up(s) queued \
             during its tenure still waiting"
        ),
    )
}

/// Final half of [`EXACTLY_ONCE`].
pub fn every_file_loaded_once(
    state: &State,
    files: &[(String, bool)],
    failed_permanently: &BTreeSet<String>,
) -> Option<Violation> {
    for (url, corrupt) in files {
        let n = state.loaded_count(url);
        if *corrupt {
            if n != 0 || !failed_permanently.contains(url) {
                return violation(
                    EXACTLY_ONCE,
                    format!(
                        "corrupt {url}: loaded {n} times, failure reported: {}",
                        failed_permanently.contains(url)
                    ),
                );
            }
        } else if n != 1 {
            return violation(EXACTLY_ONCE, format!("{url} loaded {n} times"));
        }
    }
    None
}

/// Final check of [`BAD_FILE_QUARANTINED`]: every corrupt file is in its table's
/// quarantine and loaded nowhere; no good file is.
pub fn bad_files_quarantined(state: &State, files: &[(String, bool)]) -> Option<Violation> {
    for (url, corrupt) in files {
        let (q, n) = (state.quarantined(url), state.loaded_count(url));
        if *corrupt && (!q || n != 0) {
            return violation(
                BAD_FILE_QUARANTINED,
                format!("corrupt {url}: quarantined {q}, loaded {n} times"),
            );
        }
        if !*corrupt && q {
            return violation(BAD_FILE_QUARANTINED, format!("good {url} quarantined"));
        }
    }
    None
}

/// Final half of [`NO_WAKEUP_LOST`]: nothing is left waiting.
pub fn no_wakeup_left(state: &State) -> Option<Violation> {
    let w = state.wakeups.values().next()?;
    violation(
        NO_WAKEUP_LOST,
        format!(
            "after the final sweep a wake-up for {} {} is still queued",
            w.partition, w.s3_url
        ),
    )
}

/// [`ONE_LOAD_AT_A_TIME`] when load batch `starting` (a StatementName, `partition-loader:
/// <table>:<holder>`) starts while `running` (those of started, unended load batches)
/// are.
pub fn one_load_at_a_time(starting: &str, running: &[String]) -> Option<Violation> {
    let table = |name: &str| name.rsplit_once(':').map(|(t, _)| t.to_string());
    let other = running
        .iter()
        .find(|r| table(r) == table(starting) && r.as_str() != starting)?;
    violation(
        ONE_LOAD_AT_A_TIME,
        format!("{starting} starts while {other} runs"),
    )
}

/// [`NO_WAKEUP_STRANDED`] at quiescence, before the final sweep. Keys:
/// `<prefix><table>/gate.json` and `<prefix><table>/wakeups/…`.
pub fn no_wakeup_stranded(
    s3: &super::storage::Objects,
    bucket: &str,
    prefix: &str,
    writers: &std::collections::BTreeMap<String, usize>,
    holders: &BTreeSet<(String, usize)>,
    killed: &BTreeSet<usize>,
) -> Option<Violation> {
    for o in s3.list(bucket, prefix) {
        let Some((folder, _)) = o.key.split_once("/wakeups/") else {
            continue;
        };
        let gate = format!("{folder}/gate.json");
        if s3.object(&format!("s3://{bucket}/{gate}")).is_some() {
            continue;
        }
        let writer_killed = writers.get(&o.key).is_some_and(|i| killed.contains(i));
        let holder_killed = holders
            .iter()
            .any(|(g, i)| *g == gate && killed.contains(i));
        if !writer_killed && !holder_killed {
            return violation(
                NO_WAKEUP_STRANDED,
                format!(
                    "S3 wake-up {} (written by inv {:?}) waits with no gate over it, and \
                     no crash explains it",
                    o.key,
                    writers.get(&o.key)
                ),
            );
        }
    }
    None
}

/// [`NO_WAKEUP_STRANDED`] after the final sweep.
pub fn no_gate_object_left(
    s3: &super::storage::Objects,
    bucket: &str,
    prefix: &str,
) -> Option<Violation> {
    let left = s3.list(bucket, prefix);
    let first = left.first()?;
    violation(
        NO_WAKEUP_STRANDED,
        format!(
            "{} gate object(s) left after the final sweep, e.g. {}",
            left.len(),
            first.key
        ),
    )
}
