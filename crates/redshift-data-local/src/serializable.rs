//! Redshift's SERIALIZABLE isolation is table-level: two concurrent transactions
//! conflict when one reads a table the other writes, whatever the rows, and Redshift
//! aborts the one whose commit would make the concurrent workload non-serializable
//! with `ERROR: 1023 DETAIL: Serializable isolation violation on table - <table id>,
//! transactions forming the cycle are: <xid>, <xid> (pid:<pid>)`
//! (<https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation.html>,
//! <https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation-serializable-isolation-troubleshooting.html>).
//! PostgreSQL's SSI is row- (predicate-) level and lets two transactions that touch
//! different rows of the same tables both commit, so the emulator adds this check
//! at COMMIT, on top of PostgreSQL's own.
//!
//! The documentation describes the outcome, not the algorithm. This is serialization
//! graph testing at table granularity: a committing transaction is refused when it
//! would close a cycle in the dependency graph of the transactions committed so far
//! (the error names "the transactions forming the cycle"). Edges, `a` must precede
//! `b`, over a table both touched:
//! - rw (anti-dependency): `a` read it, `b` wrote it, and `a`'s snapshot does not
//!   see `b` (they are concurrent);
//! - wr: `a` wrote it, `b` read it and saw `a`'s commit;
//! - ww: both wrote it; `b` saw `a`, or, concurrent, `a` committed first (Redshift
//!   orders writers of one table by its table write lock).
//!
//! A transaction's reads and writes are taken from PostgreSQL at COMMIT
//! ([`FOOTPRINT_SQL`]): a write is a `RowExclusiveLock` (INSERT, UPDATE, DELETE,
//! COPY, even when no row changed: the stricter reading); a read is an
//! `AccessShareLock` or a scan (UPDATE and DELETE read the rows they change). `LOCK`
//! alone (`AccessExclusiveLock`) is neither, unless `--lock-is-write`: see
//! ARCHITECTURE.md, "Where Redshift's documentation leaves a behaviour open". Temporary tables and the emulator's
//! system tables (`public.stl_*`, `sys_*`, …) are not tracked: Redshift does not
//! lock its system tables in a transaction.
//!
//! The committed transactions are kept per database in this process only (several
//! emulators sharing one PostgreSQL do not see each other's transactions).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// PostgreSQL's full transaction id (`xid8`), shown as Redshift's xid.
pub type Xid = u64;

/// A table's PostgreSQL oid, shown as Redshift's table id.
pub type TableId = u32;

/// The tables a transaction read and wrote, and their modes, from `pg_locks` and
/// `pg_stat_xact_user_tables` on the transaction's own connection. Columns: table
/// oid, wrote, read. `$1`: whether an `AccessExclusiveLock` (LOCK) is a write. Then the transaction's xid and snapshot (`pg_current_xact_id()`
/// assigns an xid to a read-only transaction: harmless, and the error can name it).
pub const FOOTPRINT_SQL: &str = "SELECT c.oid::bigint, \
       bool_or(l.mode = 'RowExclusiveLock' OR ($1::bool AND l.mode = 'AccessExclusiveLock')), \
       bool_or(l.mode = 'AccessShareLock') \
         OR COALESCE(max(s.seq_scan + COALESCE(s.idx_scan, 0)), 0) > 0 \
     FROM pg_locks l \
     JOIN pg_class c ON c.oid = l.relation \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_stat_xact_user_tables s ON s.relid = c.oid \
     WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted \
       AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p' \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg\\_%' \
       AND NOT (n.nspname = 'public' AND c.relname ~ '^(stl|stv|svl|svv|sys)_') \
     GROUP BY c.oid";

/// `pg_current_xact_id()` and `pg_current_snapshot()` as text.
pub const IDENTITY_SQL: &str = "SELECT pg_current_xact_id()::text, pg_current_snapshot()::text";

/// A PostgreSQL snapshot (`xmin:xmax:xip,…`): which commits a transaction sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub xmin: Xid,
    pub xmax: Xid,
    pub in_progress: Vec<Xid>,
}

impl Snapshot {
    /// Parses `pg_current_snapshot()::text`.
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let list = parts.next()?;
        let in_progress = if list.is_empty() {
            Vec::new()
        } else {
            list.split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<_>>>()?
        };
        Some(Snapshot {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// Whether a committed transaction `xid` had committed when this snapshot was
    /// taken (PostgreSQL's rule for a committed xid).
    pub fn sees(&self, xid: Xid) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.in_progress.contains(&xid))
    }
}

/// One transaction as the check knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub xid: Xid,
    pub pid: i64,
    pub snapshot: Snapshot,
    pub reads: BTreeSet<TableId>,
    pub writes: BTreeSet<TableId>,
    /// The database's commit counter when the transaction began (before its snapshot).
    pub begun: u64,
    /// Its commit's number; `u64::MAX` while it is the one committing.
    pub committed: u64,
}

impl Transaction {
    fn touches_nothing(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty()
    }
}

/// The table through which `a` must precede `b` in every serial order, if any.
pub fn precedes(a: &Transaction, b: &Transaction) -> Option<TableId> {
    if a.xid == b.xid {
        return None;
    }
    let a_sees_b = a.snapshot.sees(b.xid);
    let b_sees_a = b.snapshot.sees(a.xid);
    if !a_sees_b {
        if let Some(t) = a.reads.intersection(&b.writes).next() {
            return Some(*t);
        }
    }
    if b_sees_a {
        if let Some(t) = a.writes.intersection(&b.reads).next() {
            return Some(*t);
        }
    }
    let concurrent_first = !a_sees_b && !b_sees_a && a.committed < b.committed;
    if b_sees_a || concurrent_first {
        if let Some(t) = a.writes.intersection(&b.writes).next() {
            return Some(*t);
        }
    }
    None
}

/// A cycle the committing transaction would close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The table of the committing transaction's first edge of the cycle.
    pub table: TableId,
    /// The cycle's transactions, the committing one first.
    pub xids: Vec<Xid>,
}

impl Cycle {
    /// Redshift's words (the shape of real 1023 errors; the pid is the aborted
    /// transaction's session).
    pub fn message(&self, pid: i64) -> String {
        let xids: Vec<String> = self.xids.iter().map(|x| x.to_string()).collect();
        format!(
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - {}, transactions forming the cycle are: {} (pid:{pid})",
            self.table,
            xids.join(", ")
        )
    }
}

/// The cycle `candidate` would close with the committed `history`, if any: a path
/// candidate → … → candidate (breadth first, so the shortest).
pub fn find_cycle(history: &[Transaction], candidate: &Transaction) -> Option<Cycle> {
    if candidate.touches_nothing() {
        return None;
    }
    // parent[i] = (previous node (None = candidate), table of the candidate's first edge)
    let mut parent: Vec<Option<(Option<usize>, TableId)>> = vec![None; history.len()];
    let mut queue = std::collections::VecDeque::new();
    for (i, t) in history.iter().enumerate() {
        if let Some(table) = precedes(candidate, t) {
            parent[i] = Some((None, table));
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        let first_table = parent[i].map(|(_, t)| t).unwrap_or_default();
        if precedes(&history[i], candidate).is_some() {
            let mut xids = vec![history[i].xid];
            let mut at = i;
            while let Some((Some(previous), _)) = parent[at] {
                xids.push(history[previous].xid);
                at = previous;
            }
            xids.push(candidate.xid);
            xids.reverse();
            return Some(Cycle {
                table: first_table,
                xids,
            });
        }
        for (j, t) in history.iter().enumerate() {
            if parent[j].is_none() && precedes(&history[i], t).is_some() {
                parent[j] = Some((Some(i), first_table));
                queue.push_back(j);
            }
        }
    }
    None
}

/// Drops the committed transactions no future cycle can contain. An edge `a → b`
/// implies `b.committed > a.begun` (otherwise `a` saw `b`); so a cycle through a
/// transaction that begins at or after `h` only reaches transactions committed after
/// `h` that began at or after `h`, where `h` is the fixpoint below, starting at the
/// oldest active transaction's `begun` (or `now`).
pub fn prune(history: &mut Vec<Transaction>, active: impl IntoIterator<Item = u64>, now: u64) {
    let mut horizon = active.into_iter().min().unwrap_or(now).min(now);
    loop {
        let lower = history
            .iter()
            .filter(|t| t.committed > horizon)
            .map(|t| t.begun)
            .min()
            .unwrap_or(horizon)
            .min(horizon);
        if lower == horizon {
            break;
        }
        horizon = lower;
    }
    history.retain(|t| t.committed > horizon);
}

/// The committed transactions of every database of this process.
#[derive(Default)]
pub struct Tracker {
    databases: Mutex<HashMap<String, Arc<Database>>>,
}

#[derive(Default)]
struct Database {
    /// One transaction at a time checks and commits, so that two transactions closing
    /// one cycle cannot both pass the check.
    turn: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    commits: u64,
    next_token: u64,
    /// token → `begun` of each transaction under way.
    active: HashMap<u64, u64>,
    history: Vec<Transaction>,
}

impl Tracker {
    /// Registers a transaction about to begin on `database` (call before BEGIN: the
    /// recorded start is then never later than its snapshot).
    pub fn begin(&self, database: &str) -> Active {
        let database = {
            let mut databases = lock(&self.databases);
            Arc::clone(databases.entry(database.to_string()).or_default())
        };
        let (token, begun) = {
            let mut state = lock(&database.state);
            state.next_token += 1;
            let token = state.next_token;
            let begun = state.commits;
            state.active.insert(token, begun);
            (token, begun)
        };
        Active {
            database,
            token,
            begun,
        }
    }
}

/// A transaction under way; dropping it (commit, rollback, failure) forgets it.
pub struct Active {
    database: Arc<Database>,
    token: u64,
    begun: u64,
}

impl Active {
    pub fn begun(&self) -> u64 {
        self.begun
    }

    /// Waits for this database's commit turn; hold it through the check and COMMIT.
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.database.turn.lock().await
    }

    /// The cycle `candidate` would close (call holding the turn).
    pub fn check(&self, candidate: &Transaction) -> Option<Cycle> {
        let state = lock(&self.database.state);
        find_cycle(&state.history, candidate)
    }

    /// Records `transaction` as committed (call holding the turn, after COMMIT).
    pub fn committed(&self, mut transaction: Transaction) {
        let mut state = lock(&self.database.state);
        state.active.remove(&self.token);
        state.commits += 1;
        if !transaction.touches_nothing() {
            transaction.committed = state.commits;
            state.history.push(transaction);
        }
        let State {
            commits,
            active,
            history,
            ..
        } = &mut *state;
        prune(history, active.values().copied(), *commits);
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        lock(&self.database.state).active.remove(&self.token);
    }
}

/// A poisoned lock only means another task panicked mid-update; the data is still
/// usable for a test emulator.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TableId = 100;
    const B: TableId = 200;

    fn snap(xmin: Xid, xmax: Xid, in_progress: &[Xid]) -> Snapshot {
        Snapshot {
            xmin,
            xmax,
            in_progress: in_progress.to_vec(),
        }
    }

    fn tx(xid: Xid, snapshot: Snapshot, reads: &[TableId], writes: &[TableId]) -> Transaction {
        Transaction {
            xid,
            pid: xid as i64,
            snapshot,
            reads: reads.iter().copied().collect(),
            writes: writes.iter().copied().collect(),
            begun: 0,
            committed: u64::MAX,
        }
    }

    fn committed(mut t: Transaction, n: u64) -> Transaction {
        t.committed = n;
        t
    }

    #[test]
    fn snapshots_parse_and_see_what_had_committed() {
        let s = Snapshot::parse("10:15:11,13").unwrap();
        assert_eq!(s, snap(10, 15, &[11, 13]));
        assert!(s.sees(9) && s.sees(12) && s.sees(14));
        assert!(!s.sees(11) && !s.sees(13) && !s.sees(15) && !s.sees(20));
        assert_eq!(Snapshot::parse("7:7:"), Some(snap(7, 7, &[])));
        assert_eq!(Snapshot::parse("7:x:"), None);
        assert_eq!(Snapshot::parse("7"), None);
    }

    #[test]
    fn write_skew_across_two_tables_is_a_cycle_whatever_the_rows() {
        // T1 reads A writes B, T2 reads B writes A, both snapshots before either commit.
        let t1 = committed(tx(10, snap(10, 12, &[11]), &[A], &[B]), 1);
        let t2 = tx(11, snap(10, 12, &[10]), &[B], &[A]);
        let cycle = find_cycle(&[t1], &t2).expect("cycle");
        assert_eq!(cycle.xids, vec![11, 10]);
        assert_eq!(cycle.table, B, "T2 read B, which T1 changed");
        assert_eq!(
            cycle.message(4242),
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - 200, \
             transactions forming the cycle are: 11, 10 (pid:4242)"
        );
    }

    #[test]
    fn no_cycle_when_serial_disjoint_or_one_way() {
        // T2 began after T1 committed (it sees 10): T1 then T2 explains both.
        let t1 = committed(tx(10, snap(10, 11, &[]), &[A], &[B]), 1);
        let t2 = tx(11, snap(11, 11, &[]), &[B], &[A]);
        assert_eq!(find_cycle(std::slice::from_ref(&t1), &t2), None);
        // Disjoint tables, concurrent.
        let t3 = tx(12, snap(10, 12, &[10, 11]), &[300], &[300]);
        assert_eq!(find_cycle(std::slice::from_ref(&t1), &t3), None);
        // Only one direction: T4 reads B that T1 wrote, writes nothing T1 read.
        let t4 = tx(13, snap(10, 13, &[10]), &[B], &[400]);
        assert_eq!(find_cycle(&[t1], &t4), None);
        // Blind concurrent writers of one table: ordered by commit, no cycle.
        let w1 = committed(tx(20, snap(20, 22, &[21]), &[], &[A]), 5);
        let w2 = tx(21, snap(20, 22, &[20]), &[], &[A]);
        assert_eq!(find_cycle(&[w1], &w2), None);
    }

    #[test]
    fn read_and_write_of_one_table_against_a_concurrent_writer_is_a_cycle() {
        // W wrote A and committed; R (concurrent) read A without W, then wrote A after.
        let w = committed(tx(20, snap(20, 22, &[21]), &[], &[A]), 5);
        let r = tx(21, snap(20, 22, &[20]), &[A], &[A]);
        assert_eq!(find_cycle(&[w], &r).map(|c| c.table), Some(A));
    }

    #[test]
    fn read_only_transactions_close_longer_cycles() {
        // The read-only anomaly at table granularity. C1 (xid 50) takes its snapshot;
        // C2 (51) writes B and C and commits; U (52) takes its snapshot (sees C2, not
        // C1); C1 reads B, writes A, commits; U reads A and C. U → C1 (rw on A),
        // C1 → C2 (rw on B), C2 → U (wr on C): no serial order explains U.
        const C: TableId = 300;
        let c2 = committed(tx(51, snap(50, 52, &[50]), &[], &[B, C]), 1);
        let c1 = tx(50, snap(50, 50, &[]), &[B], &[A]);
        assert_eq!(find_cycle(std::slice::from_ref(&c2), &c1), None);
        let c1 = committed(c1, 2);
        let u = tx(52, snap(50, 53, &[50]), &[A, C], &[]);
        let cycle = find_cycle(&[c2, c1], &u).expect("cycle");
        assert_eq!(cycle.xids, vec![52, 50, 51]);
        assert_eq!(cycle.table, A);
    }

    #[test]
    fn pruning_keeps_what_an_active_transaction_overlaps() {
        let mut history = vec![
            Transaction {
                begun: 0,
                ..committed(tx(1, snap(1, 1, &[]), &[A], &[]), 1)
            },
            Transaction {
                begun: 1,
                ..committed(tx(2, snap(2, 2, &[]), &[A], &[B]), 3)
            },
            Transaction {
                begun: 2,
                ..committed(tx(3, snap(3, 3, &[]), &[A], &[B]), 4)
            },
        ];
        // An active transaction that began at 3: tx 3 (committed 4) overlaps it and
        // began at 2, so tx 2 (committed 3 > 2) stays; tx 1 (committed 1) goes.
        prune(&mut history, [3], 4);
        assert_eq!(
            history.iter().map(|t| t.xid).collect::<Vec<_>>(),
            vec![2, 3]
        );
        // Nothing active: everything committed at or before now goes.
        prune(&mut history, [], 4);
        assert!(history.is_empty());
    }

    /// The read-only anomaly through the tracker, which prunes at every commit: C2
    /// committed before U began, so no active transaction overlaps it when C1
    /// commits, yet the cycle U → C1 → C2 → U needs it (kept because C1, which
    /// overlaps U, began before C2 committed).
    #[tokio::test]
    async fn pruning_keeps_what_a_cycle_through_a_later_commit_needs() {
        const C: TableId = 300;
        let tracker = Tracker::default();
        let c1 = tracker.begin("dev");
        let c2 = tracker.begin("dev");
        c2.committed(tx(51, snap(50, 52, &[50]), &[], &[B, C]));
        drop(c2);
        let u = tracker.begin("dev");
        let mut t1 = tx(50, snap(50, 50, &[]), &[B], &[A]);
        t1.begun = c1.begun();
        assert_eq!(c1.check(&t1), None);
        c1.committed(t1);
        drop(c1);
        let mut tu = tx(52, snap(50, 53, &[50]), &[A, C], &[]);
        tu.begun = u.begun();
        let cycle = u.check(&tu).expect("C2 was kept");
        assert_eq!(cycle.xids, vec![52, 50, 51]);
    }

    #[tokio::test]
    async fn tracker_records_checks_and_forgets() {
        let tracker = Tracker::default();
        let first = tracker.begin("dev");
        let second = tracker.begin("dev");
        let t1 = tx(10, snap(10, 12, &[11]), &[A], &[B]);
        let t2 = tx(11, snap(10, 12, &[10]), &[B], &[A]);
        {
            let _turn = first.turn().await;
            assert_eq!(first.check(&t1), None);
            first.committed(t1);
        }
        drop(first);
        let _turn = second.turn().await;
        assert!(second.check(&t2).is_some(), "second closes the cycle");
        // Another database does not see them.
        let other = tracker.begin("other");
        assert_eq!(other.check(&t2), None);
    }
}
