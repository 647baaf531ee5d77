//! The model warehouse: Redshift as DESIGN.md "Redshift facts" describes it, on
//! in-memory tables, for the statements `src/sql/` emits (read by `sql.rs` here).
//!
//! Per target table: the lease row, the ledger, the wake-up table and the target itself,
//! kept as "one row per loaded file" (`loads`: which file a COPY put in, how often).
//!
//! Rules, each checkable against the facts:
//! - A batch (or a single statement) is one transaction. It is submitted at once and
//!   *starts* later (a scheduler choice): `LOCK t` waits while another started,
//!   uncommitted transaction holds `t`'s lock (readers wait too); the snapshot is taken
//!   when it starts, after the lock (the snapshot starts at the first SELECT/DML, not at
//!   LOCK). All its statements run at the start against that snapshot, `GETDATE()` being
//!   the start time; it *commits* later (another choice), so other transactions
//!   interleave between its start and its commit. A statement that raises (the fence) or
//!   fails (COPY of a corrupt file) fails the whole transaction at once.
//! - SNAPSHOT: row-level write-write conflicts, first committer wins; the loser fails with
//!   `ERROR: 1023 DETAIL: Serializable isolation violation on table …` (Redshift reports
//!   its write conflicts with error 1023 under both levels; the emulator does the same).
//! - SERIALIZABLE: the same row rule, plus Redshift's table-level rule: a commit that
//!   would close a cycle in the dependency graph of committed transactions, with edges
//!   rw / wr / ww over whole tables (as `crates/redshift-data-local/src/serializable.rs`
//!   does; <https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation.html>), fails
//!   with 1023. `LOCK` is neither a read nor a write (the emulator's default reading).
//! - The Data API adapter's own contract is modelled too, since the model replaces it:
//!   a 1023 is resubmitted (up to 4 attempts, as `DataApi::execute`), then
//!   `SerializationConflict`; FAILED/ABORTED is `StatementFailed` with the error text;
//!   a caller whose deadline passes gets `Timeout` and its cancel may or may not take:
//!   the statement may still commit later (statements live up to 24 h).
//!
//! Looser than Redshift: replace mode's `DELETE FROM <target> WHERE <predicate>` is not
//! modelled (a loud failure if it is ever sent); column types are not checked; the
//! manifest is trusted for `content_length`.

use std::collections::{BTreeMap, BTreeSet};

use partition_loader::sql::{LeaseTables, TableName};

use super::sql::{self, Stmt, Value};
use super::storage::Objects;

pub type Row = Vec<Option<String>>;

/// Which of a target's four tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Lease,
    Ledger,
    WakeUp,
    Target,
    /// Files Redshift refused (`sql::create_quarantine`), read beside the ledger.
    Quarantine,
}

/// A table: (target index, kind).
pub type TableKey = (usize, Kind);

/// A row: (table, row id); the lease row of a target has id 0.
pub type RowKey = (TableKey, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    Snapshot,
    Serializable,
}

/// One target table and the names the loader's SQL gives its objects.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: TableName,
    /// `schema.name` of the lease, ledger, wake-up tables and procedures, as the
    /// recogniser reads them.
    pub lease: String,
    pub ledger: String,
    pub wakeup: String,
    pub quarantine: String,
    pub take: String,
    pub fence: String,
    /// `(bucket, prefix)` of every route into it: what a wake-up's partition covers.
    pub routes: Vec<(String, String)>,
}

impl Target {
    pub fn new(loader_schema: &str, name: TableName, routes: Vec<(String, String)>) -> Self {
        let t = LeaseTables::for_target(&name);
        let q = |i: &partition_loader::sql::Ident| format!("{loader_schema}.{}", i.as_str());
        Target {
            lease: q(&t.lease),
            ledger: q(&t.ledger),
            wakeup: q(&t.wakeup),
            quarantine: q(&t.quarantine),
            take: q(&t.take),
            fence: q(&t.fence),
            name,
            routes,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Lease {
    pub holder: Option<String>,
    pub acquired_ms: Option<i64>,
    pub expires_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct WakeUp {
    pub target: usize,
    pub bucket: String,
    pub partition: String,
    pub s3_url: String,
    pub etag: String,
    pub queued_by: String,
    pub queued_ms: i64,
    pub claim: Option<String>,
    /// The route prefix the acquirer's object belongs to (`None`: queued without one,
    /// as earlier versions did; the holder then lists under its own route).
    pub route_prefix: Option<String>,
    /// The holder the lease belonged to when this was queued (for the invariants).
    pub queued_for: Option<String>,
    /// The data files this wake-up stands for: its object, or (a partition's wake-up)
    /// every file of the partition that existed when it was queued.
    pub files: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct LedgerRow {
    pub target: usize,
    pub partition: String,
    pub s3_url: String,
    pub etag: String,
    pub loaded_ms: i64,
    pub holder: String,
    /// The load (batch) that wrote it: the fence refuses a file another load wrote.
    pub load_id: String,
}

/// One file COPYed into a target (the model's "rows of that file").
#[derive(Debug, Clone)]
pub struct Load {
    pub target: usize,
    pub s3_url: String,
    pub etag: String,
}

/// The committed (or a snapshot's) contents.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub leases: BTreeMap<usize, Lease>,
    pub wakeups: BTreeMap<u64, WakeUp>,
    pub ledger: BTreeMap<u64, LedgerRow>,
    /// Quarantine rows (the ledger's shape: target, partition, URL, ETag, holder, load).
    pub quarantine: BTreeMap<u64, LedgerRow>,
    pub loads: BTreeMap<u64, Load>,
    /// Commit sequence number of the last write of each row (deletes included).
    pub versions: BTreeMap<RowKey, u64>,
}

impl State {
    pub fn loaded_count(&self, url: &str) -> usize {
        self.loads.values().filter(|l| l.s3_url == url).count()
    }

    pub fn in_ledger(&self, url: &str) -> bool {
        self.ledger.values().any(|r| r.s3_url == url)
    }

    pub fn quarantined(&self, url: &str) -> bool {
        self.quarantine.values().any(|r| r.s3_url == url)
    }
}

/// A write, applied to the committed state at commit.
#[derive(Debug, Clone)]
enum Op {
    SetLease(usize, Lease),
    InsertWakeUp(u64, WakeUp),
    DeleteWakeUp(u64),
    Claim(u64, String),
    InsertLedger(u64, LedgerRow),
    InsertQuarantine(u64, LedgerRow),
    DeleteLedger(u64),
    InsertLoad(u64, Load),
}

/// A started, uncommitted transaction.
#[derive(Debug)]
pub struct Txn {
    start_seq: u64,
    pub now_ms: i64,
    snap: State,
    ops: Vec<Op>,
    reads: BTreeSet<TableKey>,
    writes: BTreeSet<TableKey>,
    row_writes: BTreeSet<RowKey>,
    pub locks: BTreeSet<TableKey>,
    results: Vec<Vec<Row>>,
    stages: BTreeMap<String, Vec<Load>>,
    /// Whether it ran a COPY (a transient S3 failure can hit it).
    pub copies: bool,
}

/// How a statement ended.
#[derive(Debug, Clone)]
pub enum End {
    Finished(Vec<Vec<Row>>),
    /// FAILED or ABORTED with Redshift's words.
    Failed(String),
}

#[derive(Debug)]
pub enum Phase {
    Submitted,
    Started(Box<Txn>),
    Done(End),
}

/// One Data API statement (a batch or a single statement).
#[derive(Debug)]
pub struct Statement {
    pub id: String,
    /// The invocation that submitted it (it may be dead: the statement runs on).
    pub inv: usize,
    pub holder_hint: String,
    pub sqls: Vec<String>,
    pub phase: Phase,
    /// The caller still waits for it (false once it timed out or was killed).
    pub waited_for: bool,
    pub attempt: u32,
    /// The Data API StatementName (load batches: `partition-loader:<table>:<holder>`).
    pub name: Option<String>,
    /// Its completion event was sent (load batches are submitted `WithEvent`).
    pub evented: bool,
}

/// What a commit changed, for the invariants.
#[derive(Debug, Default)]
pub struct Committed {
    pub inv: usize,
    pub deleted_wakeups: Vec<WakeUp>,
    /// A release (holder set to NULL) by this holder.
    pub released_by: Option<String>,
    pub new_loads: Vec<String>,
    pub lease_writes: Vec<(usize, Lease)>,
}

#[derive(Debug)]
struct CommitRecord {
    start_seq: u64,
    commit_seq: u64,
    reads: BTreeSet<TableKey>,
    writes: BTreeSet<TableKey>,
}

/// `CONFLICT_ATTEMPTS` of `src/warehouse.rs`.
pub const CONFLICT_ATTEMPTS: u32 = 4;

pub const SLOW_DOWN: &str = "S3ServiceException:Please reduce your request rate.,Status 503,\
     Error SlowDown,Rid 1,ExtRid 1,CanRetry 1";
pub const ABORTED: &str = "ABORTED";

pub struct Db {
    pub isolation: Isolation,
    pub targets: Vec<Target>,
    /// `(schema, table)` → columns with types (information_schema.columns).
    pub columns: Vec<(String, String)>,
    pub state: State,
    pub statements: Vec<Statement>,
    seq: u64,
    next_row: u64,
    log: Vec<CommitRecord>,
    /// Corrupt files whose COPY failed (a permanent failure reported by Redshift).
    pub failed_permanently: BTreeSet<String>,
    /// SQL the recogniser did not know, or a rule the model does not have.
    pub fatal: Option<String>,
    pub conflicts: u64,
    /// The routes' ready marker (issue 20 item 1), for what a wake-up stands for.
    pub ready_marker: Option<&'static str>,
}

impl Db {
    pub fn new(isolation: Isolation, targets: Vec<Target>) -> Db {
        let mut state = State::default();
        for i in 0..targets.len() {
            state.leases.insert(i, Lease::default());
        }
        Db {
            isolation,
            targets,
            columns: vec![
                ("id".into(), "bigint".into()),
                ("amount".into(), "bigint".into()),
            ],
            state,
            statements: Vec::new(),
            seq: 0,
            next_row: 1,
            log: Vec::new(),
            failed_permanently: BTreeSet::new(),
            fatal: None,
            conflicts: 0,
            ready_marker: None,
        }
    }

    pub fn submit(
        &mut self,
        inv: usize,
        holder: &str,
        sqls: Vec<String>,
        name: Option<String>,
    ) -> usize {
        let n = self.statements.len();
        self.statements.push(Statement {
            id: format!("stmt-{n}"),
            inv,
            holder_hint: holder.to_string(),
            sqls,
            phase: Phase::Submitted,
            waited_for: true,
            attempt: 1,
            name,
            evented: false,
        });
        n
    }

    /// The id of a statement named `name` that has not ended (ListStatements).
    pub fn running_named(&self, name: &str) -> Option<String> {
        self.statements
            .iter()
            .find(|s| s.name.as_deref() == Some(name) && !matches!(s.phase, Phase::Done(_)))
            .map(|s| s.id.clone())
    }

    /// DescribeStatement's status and error of statement `id`.
    pub fn status(&self, id: &str) -> (String, Option<String>) {
        match self
            .statements
            .iter()
            .find(|s| s.id == id)
            .map(|s| &s.phase)
        {
            Some(Phase::Done(End::Finished(_))) => ("FINISHED".into(), None),
            Some(Phase::Done(End::Failed(m))) if m == ABORTED => ("ABORTED".into(), None),
            Some(Phase::Done(End::Failed(m))) => ("FAILED".into(), Some(m.clone())),
            Some(Phase::Started(_)) => ("STARTED".into(), None),
            _ => ("SUBMITTED".into(), None),
        }
    }

    /// Tables locked by started transactions other than `except`.
    fn locked(&self, except: usize) -> BTreeSet<TableKey> {
        self.statements
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .filter_map(|(_, s)| match &s.phase {
                Phase::Started(t) => Some(t.locks.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Starts statement `n` (the caller checked [`Db::startable`]): runs it on a
    /// snapshot taken now.
    pub fn start(&mut self, n: usize, now_ms: i64, s3: &Objects) {
        let sqls = self.statements[n].sqls.clone();
        let mut txn = Txn {
            start_seq: self.seq,
            now_ms,
            snap: self.state.clone(),
            ops: Vec::new(),
            reads: BTreeSet::new(),
            writes: BTreeSet::new(),
            row_writes: BTreeSet::new(),
            locks: BTreeSet::new(),
            results: Vec::new(),
            stages: BTreeMap::new(),
            copies: false,
        };
        let mut failure = None;
        for sql in &sqls {
            match self.exec(&mut txn, sql, s3) {
                Ok(rows) => txn.results.push(rows),
                Err(message) => {
                    failure = Some(message);
                    break;
                }
            }
        }
        self.statements[n].phase = match failure {
            Some(message) => Phase::Done(End::Failed(message)),
            None => Phase::Started(Box::new(txn)),
        };
    }

    /// Whether statement `n` could start now (no lock in the way).
    pub fn startable(&self, n: usize) -> bool {
        let locked = self.locked(n);
        // A batch's first LOCK is what waits; other statements touching a locked table
        // wait as well, but the loader's SQL touches the wake-up table only under LOCK.
        !self.statements[n]
            .sqls
            .iter()
            .any(|s| match sql::recognise(s) {
                Stmt::Lock(name) => self.resolve(&name).is_some_and(|key| locked.contains(&key)),
                _ => false,
            })
    }

    /// Fails a started (or submitted) statement with `message` (a fault, or a cancel).
    pub fn fail(&mut self, n: usize, message: &str) {
        self.statements[n].phase = Phase::Done(End::Failed(message.to_string()));
    }

    /// Commits statement `n`. On a conflict it is resubmitted (the adapter's retry) or,
    /// after the last attempt, fails with the 1023 text.
    pub fn commit(&mut self, n: usize) -> Option<Committed> {
        let Phase::Started(txn) =
            std::mem::replace(&mut self.statements[n].phase, Phase::Submitted)
        else {
            return None;
        };
        if let Some(table) = self.conflict(&txn) {
            self.conflicts += 1;
            let message = format!(
                "ERROR: 1023 DETAIL: Serializable isolation violation on table - {}, \
                 transactions forming the cycle are: {}, {} (pid:{})",
                table,
                txn.start_seq,
                self.seq + 1,
                n
            );
            let s = &mut self.statements[n];
            if s.attempt < CONFLICT_ATTEMPTS && s.waited_for {
                s.attempt += 1;
                s.phase = Phase::Submitted;
            } else {
                s.phase = Phase::Done(End::Failed(message));
            }
            return None;
        }
        self.seq += 1;
        let seq = self.seq;
        let mut committed = Committed {
            inv: self.statements[n].inv,
            ..Committed::default()
        };
        for op in txn.ops {
            match op {
                Op::SetLease(t, lease) => {
                    if lease.holder.is_none() {
                        committed.released_by = self.state.leases[&t].holder.clone();
                    }
                    committed.lease_writes.push((t, lease.clone()));
                    self.state.leases.insert(t, lease);
                    self.state.versions.insert(((t, Kind::Lease), 0), seq);
                }
                Op::InsertWakeUp(id, w) => {
                    self.state
                        .versions
                        .insert(((w.target, Kind::WakeUp), id), seq);
                    self.state.wakeups.insert(id, w);
                }
                Op::DeleteWakeUp(id) => {
                    if let Some(w) = self.state.wakeups.remove(&id) {
                        self.state
                            .versions
                            .insert(((w.target, Kind::WakeUp), id), seq);
                        committed.deleted_wakeups.push(w);
                    }
                }
                Op::Claim(id, claim) => {
                    if let Some(w) = self.state.wakeups.get_mut(&id) {
                        w.claim = Some(claim);
                        self.state
                            .versions
                            .insert(((w.target, Kind::WakeUp), id), seq);
                    }
                }
                Op::InsertLedger(id, r) => {
                    self.state.ledger.insert(id, r);
                }
                Op::InsertQuarantine(id, r) => {
                    self.state
                        .versions
                        .insert(((r.target, Kind::Quarantine), id), seq);
                    self.state.quarantine.insert(id, r);
                }
                Op::DeleteLedger(id) => {
                    if let Some(r) = self.state.ledger.remove(&id) {
                        self.state
                            .versions
                            .insert(((r.target, Kind::Ledger), id), seq);
                    }
                }
                Op::InsertLoad(id, l) => {
                    committed.new_loads.push(l.s3_url.clone());
                    self.state.loads.insert(id, l);
                }
            }
        }
        self.log.push(CommitRecord {
            start_seq: txn.start_seq,
            commit_seq: seq,
            reads: txn.reads,
            writes: txn.writes,
        });
        self.prune_log();
        self.statements[n].phase = Phase::Done(End::Finished(txn.results));
        Some(committed)
    }

    /// The table of a conflict that forbids committing `txn`, if any.
    fn conflict(&self, txn: &Txn) -> Option<String> {
        // Row level, both isolation levels: a row this transaction wrote was written by
        // a transaction committed after its snapshot.
        if let Some(((t, kind), _)) = txn.row_writes.iter().find(|k| {
            self.state
                .versions
                .get(k)
                .is_some_and(|v| *v > txn.start_seq)
        }) {
            return Some(format!("{kind:?} of {}", self.targets[*t].name));
        }
        if self.isolation == Isolation::Serializable {
            return self.closes_cycle(txn);
        }
        None
    }

    /// Table-level serialization graph test: does committing `txn` close a cycle?
    fn closes_cycle(&self, txn: &Txn) -> Option<String> {
        let me = CommitRecord {
            start_seq: txn.start_seq,
            commit_seq: self.seq + 1,
            reads: txn.reads.clone(),
            writes: txn.writes.clone(),
        };
        let nodes: Vec<&CommitRecord> = self.log.iter().chain(std::iter::once(&me)).collect();
        let sees = |a: &CommitRecord, b: &CommitRecord| b.commit_seq <= a.start_seq;
        // a must precede b (over some table), per the rules in serializable.rs.
        let edge = |a: &CommitRecord, b: &CommitRecord| -> Option<TableKey> {
            let concurrent = !sees(a, b) && !sees(b, a);
            let rw = a
                .reads
                .iter()
                .find(|t| b.writes.contains(t))
                .filter(|_| !sees(a, b));
            let wr = a
                .writes
                .iter()
                .find(|t| b.reads.contains(t))
                .filter(|_| sees(b, a));
            let ww = a
                .writes
                .iter()
                .find(|t| b.writes.contains(t))
                .filter(|_| sees(b, a) || (concurrent && a.commit_seq < b.commit_seq));
            rw.or(wr).or(ww).copied()
        };
        let last = nodes.len() - 1;
        // Depth-first search from `me` back to `me`.
        let mut stack = vec![last];
        let mut seen = BTreeSet::new();
        while let Some(i) = stack.pop() {
            for (j, node) in nodes.iter().enumerate() {
                if i == j {
                    continue;
                }
                if let Some(table) = edge(nodes[i], node) {
                    if j == last {
                        return Some(format!("{:?} of {}", table.1, self.targets[table.0].name));
                    }
                    if seen.insert(j) {
                        stack.push(j);
                    }
                }
            }
        }
        None
    }

    /// Forgets commits that no started transaction can be concurrent with.
    fn prune_log(&mut self) {
        let oldest = self
            .statements
            .iter()
            .filter_map(|s| match &s.phase {
                Phase::Started(t) => Some(t.start_seq),
                _ => None,
            })
            .min()
            .unwrap_or(self.seq);
        self.log.retain(|c| c.commit_seq > oldest);
    }

    fn resolve(&self, name: &str) -> Option<TableKey> {
        self.targets.iter().enumerate().find_map(|(i, t)| {
            if name == t.lease {
                Some((i, Kind::Lease))
            } else if name == t.ledger {
                Some((i, Kind::Ledger))
            } else if name == t.wakeup {
                Some((i, Kind::WakeUp))
            } else if name == t.quarantine {
                Some((i, Kind::Quarantine))
            } else if name == t.name.to_string() {
                Some((i, Kind::Target))
            } else {
                None
            }
        })
    }

    fn table(&self, name: &str, kind: Kind) -> Result<usize, String> {
        match self.resolve(name) {
            Some((t, k)) if k == kind => Ok(t),
            _ => Err(self.model_error(format!("relation {name} is not a {kind:?} table"))),
        }
    }

    fn model_error(&self, what: String) -> String {
        format!("ERROR: simulation model: {what}")
    }

    fn row_id(&mut self) -> u64 {
        self.next_row += 1;
        self.next_row
    }

    /// Runs one statement inside `txn`. `Err` = the statement (and so the transaction)
    /// failed with this text.
    fn exec(&mut self, txn: &mut Txn, text: &str, s3: &Objects) -> Result<Vec<Row>, String> {
        let now = txn.now_ms;
        let stmt = sql::recognise(text);
        let out = match stmt {
            Stmt::Lock(name) => {
                let key = self
                    .resolve(&name)
                    .ok_or_else(|| self.model_error(format!("LOCK of unknown {name}")))?;
                txn.locks.insert(key);
                Vec::new()
            }
            Stmt::SetTimezone => Vec::new(),
            Stmt::Take { procedure, args } => self.take(txn, &procedure, &args, s3)?,
            Stmt::Fence { procedure, args } => self.fence(txn, &procedure, &args)?,
            Stmt::SelectLease(name) => {
                let t = self.table(&name, Kind::Lease)?;
                txn.reads.insert((t, Kind::Lease));
                let l = &txn.snap.leases[&t];
                vec![vec![l.holder.clone(), l.expires_ms.map(timestamp)]]
            }
            Stmt::SelectLeaseLive { lease, with_holder } => {
                let t = self.table(&lease, Kind::Lease)?;
                txn.reads.insert((t, Kind::Lease));
                let l = &txn.snap.leases[&t];
                let live = Some(l.expires_ms.is_some_and(|e| e > now).to_string());
                if with_holder {
                    vec![vec![l.holder.clone(), l.expires_ms.map(timestamp), live]]
                } else {
                    vec![vec![live]]
                }
            }
            Stmt::SelectLedger { ledger, partition }
                if self.resolve(&ledger).map(|k| k.1) == Some(Kind::Quarantine) =>
            {
                let t = self.table(&ledger, Kind::Quarantine)?;
                txn.reads.insert((t, Kind::Quarantine));
                txn.snap
                    .quarantine
                    .values()
                    .filter(|r| r.target == t && r.partition == partition)
                    .map(|r| vec![Some(r.s3_url.clone()), Some(r.etag.clone())])
                    .collect()
            }
            Stmt::SelectLedger { ledger, partition } => {
                let t = self.table(&ledger, Kind::Ledger)?;
                txn.reads.insert((t, Kind::Ledger));
                txn.snap
                    .ledger
                    .values()
                    .filter(|r| r.target == t && r.partition == partition)
                    .map(|r| {
                        vec![
                            Some(r.s3_url.clone()),
                            Some(r.etag.clone()),
                            Some("1".into()),
                        ]
                    })
                    .collect()
            }
            Stmt::Columns { schema, table } => {
                let known = self
                    .targets
                    .iter()
                    .any(|t| t.name.schema.as_str() == schema && t.name.name.as_str() == table);
                if known {
                    self.columns
                        .iter()
                        // Nullable, no default: no file may lack a NOT NULL column.
                        .map(|(c, ty)| {
                            vec![Some(c.clone()), Some(ty.clone()), Some("YES".into()), None]
                        })
                        .collect()
                } else {
                    Vec::new()
                }
            }
            Stmt::DeleteClaimed {
                wakeup,
                claim,
                holder,
            } => {
                let t = self.table(&wakeup, Kind::WakeUp)?;
                txn.reads.insert((t, Kind::Lease));
                txn.reads.insert((t, Kind::WakeUp));
                if txn.snap.leases[&t].holder.as_deref() == Some(&holder) {
                    let ids: Vec<u64> = txn
                        .snap
                        .wakeups
                        .iter()
                        .filter(|(_, w)| w.target == t && w.claim.as_deref() == Some(&claim))
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        txn.snap.wakeups.remove(&id);
                        txn.ops.push(Op::DeleteWakeUp(id));
                        txn.row_writes.insert(((t, Kind::WakeUp), id));
                    }
                    // Redshift counts a DELETE as a write of the table even when no row
                    // matched (the emulator's stricter reading).
                }
                txn.writes.insert((t, Kind::WakeUp));
                Vec::new()
            }
            Stmt::ReleaseIfNoWakeUp {
                lease,
                holder,
                wakeup,
            } => {
                let t = self.table(&lease, Kind::Lease)?;
                let w = self.table(&wakeup, Kind::WakeUp)?;
                txn.reads.insert((t, Kind::Lease));
                txn.reads.insert((w, Kind::WakeUp));
                txn.writes.insert((t, Kind::Lease));
                let empty = !txn.snap.wakeups.values().any(|x| x.target == w);
                if empty && txn.snap.leases[&t].holder.as_deref() == Some(&holder) {
                    set_lease(txn, t, Lease::default());
                }
                Vec::new()
            }
            Stmt::Renew { lease, ttl, holder } => {
                let t = self.table(&lease, Kind::Lease)?;
                txn.reads.insert((t, Kind::Lease));
                txn.writes.insert((t, Kind::Lease));
                let l = txn.snap.leases[&t].clone();
                if l.holder.as_deref() == Some(&holder) {
                    set_lease(
                        txn,
                        t,
                        Lease {
                            expires_ms: Some(now + ttl * 1000),
                            ..l
                        },
                    );
                }
                Vec::new()
            }
            Stmt::ClaimAll {
                wakeup,
                claim,
                holder,
            } => {
                let t = self.table(&wakeup, Kind::WakeUp)?;
                txn.reads.insert((t, Kind::Lease));
                txn.reads.insert((t, Kind::WakeUp));
                txn.writes.insert((t, Kind::WakeUp));
                if txn.snap.leases[&t].holder.as_deref() == Some(&holder) {
                    let ids: Vec<u64> = txn
                        .snap
                        .wakeups
                        .iter()
                        .filter(|(_, w)| w.target == t)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        if let Some(w) = txn.snap.wakeups.get_mut(&id) {
                            w.claim = Some(claim.clone());
                        }
                        txn.ops.push(Op::Claim(id, claim.clone()));
                        txn.row_writes.insert(((t, Kind::WakeUp), id));
                    }
                }
                Vec::new()
            }
            Stmt::SelectClaimed {
                route,
                wakeup,
                claim,
            } => {
                let t = self.table(&wakeup, Kind::WakeUp)?;
                txn.reads.insert((t, Kind::WakeUp));
                let set: BTreeSet<(String, String, Option<String>)> = txn
                    .snap
                    .wakeups
                    .values()
                    .filter(|w| w.target == t && w.claim.as_deref() == Some(&claim))
                    .map(|w| {
                        (
                            w.partition.clone(),
                            w.bucket.clone(),
                            w.route_prefix.clone(),
                        )
                    })
                    .collect();
                set.into_iter()
                    .map(|(p, b, r)| {
                        let mut row = vec![Some(b), Some(p)];
                        if route {
                            row.push(r);
                        }
                        row
                    })
                    .collect()
            }
            Stmt::Release { lease, holder } => {
                let t = self.table(&lease, Kind::Lease)?;
                txn.reads.insert((t, Kind::Lease));
                txn.writes.insert((t, Kind::Lease));
                let current = txn.snap.leases[&t].holder.clone();
                if holder.is_none() || (current.is_some() && current == holder) {
                    set_lease(txn, t, Lease::default());
                }
                Vec::new()
            }
            Stmt::Copy { table, manifest } => {
                txn.copies = true;
                let files = self.copy_files(&manifest, s3)?;
                if let Some(stage) = txn.stages.get_mut(&table) {
                    stage.extend(files);
                } else {
                    let t = self.table(&table, Kind::Target)?;
                    txn.writes.insert((t, Kind::Target));
                    for mut f in files {
                        f.target = t;
                        let id = self.row_id();
                        txn.snap.loads.insert(id, f.clone());
                        txn.ops.push(Op::InsertLoad(id, f));
                    }
                }
                Vec::new()
            }
            Stmt::CreateStage { stage } => {
                txn.stages.insert(stage, Vec::new());
                Vec::new()
            }
            Stmt::InsertFromStage { table, stage } => {
                let t = self.table(&table, Kind::Target)?;
                txn.writes.insert((t, Kind::Target));
                for mut f in txn.stages.get(&stage).cloned().unwrap_or_default() {
                    f.target = t;
                    let id = self.row_id();
                    txn.snap.loads.insert(id, f.clone());
                    txn.ops.push(Op::InsertLoad(id, f));
                }
                Vec::new()
            }
            Stmt::Drop(stage) => {
                txn.stages.remove(&stage);
                Vec::new()
            }
            Stmt::LedgerInsert {
                ledger,
                columns,
                rows,
            } if self.table(&ledger, Kind::WakeUp).is_ok() => {
                // The wake-up a holder leaves for its own partition when its load
                // statement runs on (`sql::leave_wakeup_batch`).
                let t = self.table(&ledger, Kind::WakeUp)?;
                txn.writes.insert((t, Kind::WakeUp));
                for row in rows {
                    let col = |name: &str| {
                        columns
                            .iter()
                            .position(|c| c == name)
                            .and_then(|i| row.get(i))
                            .map(Value::text)
                            .unwrap_or_default()
                    };
                    let (bucket, partition, route) =
                        (col("bucket"), col("partition_path"), col("route_prefix"));
                    let files = self.targets[t]
                        .routes
                        .iter()
                        .filter(|(b, p)| *b == bucket && (route.is_empty() || route == *p))
                        .flat_map(|(b, prefix)| s3.data_files(b, &format!("{prefix}{partition}")))
                        .collect();
                    let w = WakeUp {
                        target: t,
                        bucket,
                        partition,
                        s3_url: col("s3_url"),
                        etag: col("etag"),
                        queued_by: col("queued_by"),
                        queued_ms: now,
                        claim: None,
                        route_prefix: Some(route).filter(|r| !r.is_empty()),
                        queued_for: txn.snap.leases[&t].holder.clone(),
                        files,
                    };
                    let id = self.row_id();
                    txn.snap.wakeups.insert(id, w.clone());
                    txn.ops.push(Op::InsertWakeUp(id, w));
                }
                Vec::new()
            }
            Stmt::LedgerInsert {
                ledger,
                columns,
                rows,
            } => {
                let kind = match self.resolve(&ledger) {
                    Some((_, Kind::Quarantine)) => Kind::Quarantine,
                    _ => Kind::Ledger,
                };
                let t = self.table(&ledger, kind)?;
                txn.writes.insert((t, kind));
                let col = |row: &[Value], name: &str| {
                    columns
                        .iter()
                        .position(|c| c == name)
                        .and_then(|i| row.get(i))
                        .map(Value::text)
                        .unwrap_or_default()
                };
                for row in rows {
                    let r = LedgerRow {
                        target: t,
                        partition: col(&row, "partition_path"),
                        s3_url: col(&row, "s3_url"),
                        etag: col(&row, "etag"),
                        loaded_ms: now,
                        holder: col(&row, "holder"),
                        load_id: col(&row, "load_id"),
                    };
                    let id = self.row_id();
                    if kind == Kind::Quarantine {
                        txn.snap.quarantine.insert(id, r.clone());
                        txn.ops.push(Op::InsertQuarantine(id, r));
                    } else {
                        txn.snap.ledger.insert(id, r.clone());
                        txn.ops.push(Op::InsertLedger(id, r));
                    }
                }
                Vec::new()
            }
            Stmt::DeleteLedgerPartition { ledger, partition } => {
                let t = self.table(&ledger, Kind::Ledger)?;
                txn.reads.insert((t, Kind::Ledger));
                txn.writes.insert((t, Kind::Ledger));
                let ids: Vec<u64> = txn
                    .snap
                    .ledger
                    .iter()
                    .filter(|(_, r)| r.target == t && r.partition == partition)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    txn.snap.ledger.remove(&id);
                    txn.ops.push(Op::DeleteLedger(id));
                    txn.row_writes.insert(((t, Kind::Ledger), id));
                }
                Vec::new()
            }
            Stmt::RecentPartitions {
                ledger,
                days,
                url_prefix,
            } => {
                let t = self.table(&ledger, Kind::Ledger)?;
                txn.reads.insert((t, Kind::Ledger));
                let since = now - days * 86_400_000;
                let set: BTreeSet<String> = txn
                    .snap
                    .ledger
                    .values()
                    .filter(|r| r.target == t && r.loaded_ms > since)
                    .filter(|r| {
                        url_prefix
                            .as_deref()
                            .is_none_or(|u| r.s3_url.starts_with(u))
                    })
                    .map(|r| r.partition.clone())
                    .collect();
                set.into_iter().map(|p| vec![Some(p)]).collect()
            }
            Stmt::DeleteTarget { .. } | Stmt::Unknown(_) => {
                let message = format!("statement not modelled: {text}");
                self.fatal.get_or_insert(message.clone());
                return Err(self.model_error(message));
            }
        };
        Ok(out)
    }

    /// `CALL take(holder, ttl, bucket, partition, url, etag, route, checked, …)`: take
    /// the lease when it is free, the caller's own, or held by `checked` (the caller saw
    /// it expired or of an earlier attempt of its request, and its load statement
    /// ended); otherwise queue a wake-up naming the route (unless `bucket` is empty).
    fn take(
        &mut self,
        txn: &mut Txn,
        procedure: &str,
        args: &[Value],
        s3: &Objects,
    ) -> Result<Vec<Row>, String> {
        let t = self
            .targets
            .iter()
            .position(|x| x.take == procedure)
            .ok_or_else(|| self.model_error(format!("unknown procedure {procedure}")))?;
        let arg = |i: usize| args.get(i).map(Value::text).unwrap_or_default();
        let ttl = match args.get(1) {
            Some(Value::Number(n)) => *n,
            _ => return Err(self.model_error(format!("take without a ttl: {args:?}"))),
        };
        let (holder, bucket, partition, url, etag) = (arg(0), arg(2), arg(3), arg(4), arg(5));
        let route = args.get(6).map(Value::text);
        // The holder the caller checked (its load statement found ended): only then is
        // a held lease taken over, expired or not (issue 21.1).
        let checked = arg(7);
        let now = txn.now_ms;
        txn.reads.insert((t, Kind::Lease));
        let cur = txn.snap.leases[&t].clone();
        let takes = match cur.holder.as_deref() {
            None => true,
            Some(h) => h == holder || (!checked.is_empty() && h == checked),
        };
        if takes {
            txn.writes.insert((t, Kind::Lease));
            set_lease(
                txn,
                t,
                Lease {
                    holder: Some(holder),
                    acquired_ms: Some(now),
                    expires_ms: Some(now + ttl * 1000),
                },
            );
        } else if !bucket.is_empty() {
            txn.writes.insert((t, Kind::WakeUp));
            let files = if url.is_empty() {
                self.targets[t]
                    .routes
                    .iter()
                    .filter(|(b, p)| {
                        *b == bucket && route.as_deref().is_none_or(|r| r.is_empty() || r == p)
                    })
                    .flat_map(|(b, prefix)| {
                        let dir = format!("{prefix}{partition}");
                        // A partition waiting for its marker: the marker's event loads it.
                        let waits = self
                            .ready_marker
                            .is_some_and(|m| s3.object(&format!("s3://{b}/{dir}{m}")).is_none());
                        if waits {
                            BTreeSet::new()
                        } else {
                            s3.data_files(b, &dir)
                        }
                    })
                    .collect()
            } else if let Some(marker) = self.ready_marker {
                stands_for_with_marker(s3, &url, marker)
            } else {
                BTreeSet::from([url.clone()])
            };
            let w = WakeUp {
                target: t,
                bucket,
                partition,
                s3_url: url,
                etag,
                queued_by: holder,
                queued_ms: now,
                claim: None,
                route_prefix: route.filter(|r| !r.is_empty()),
                queued_for: cur.holder,
                files,
            };
            let id = self.row_id();
            txn.snap.wakeups.insert(id, w.clone());
            txn.ops.push(Op::InsertWakeUp(id, w));
        }
        Ok(Vec::new())
    }

    /// `CALL fence(holder, ttl, partition, load_id)`: write our lease row (expired or
    /// not, its expiry unchanged) or raise;
    /// raise too when a file of this load is in the partition's ledger under another
    /// load (an earlier attempt's batch outlived it).
    fn fence(
        &mut self,
        txn: &mut Txn,
        procedure: &str,
        args: &[Value],
    ) -> Result<Vec<Row>, String> {
        let t = self
            .targets
            .iter()
            .position(|x| x.fence == procedure)
            .ok_or_else(|| self.model_error(format!("unknown procedure {procedure}")))?;
        let holder = args.first().map(Value::text).unwrap_or_default();
        let ttl = match args.get(1) {
            Some(Value::Number(n)) => *n,
            _ => return Err(self.model_error(format!("fence without a ttl: {args:?}"))),
        };
        let now = txn.now_ms;
        txn.reads.insert((t, Kind::Lease));
        txn.writes.insert((t, Kind::Lease));
        let l = txn.snap.leases[&t].clone();
        // Its holder's lease, expired or not: a statement left running holds it until
        // someone takes it over (issue 21.1).
        if l.holder.as_deref() != Some(&holder) {
            return Err(format!(
                "ERROR: {} '{}' is not held by {holder} (expired or taken over); load rolled back",
                partition_loader::sql::LEASE_LOST_MARKER,
                self.targets[t].name
            ));
        }
        if let (Some(partition), Some(load_id)) = (args.get(2), args.get(3)) {
            let (partition, load_id) = (partition.text(), load_id.text());
            txn.reads.insert((t, Kind::Ledger));
            let in_partition = |r: &&LedgerRow| r.target == t && r.partition == partition;
            let ours: BTreeSet<&str> = txn
                .snap
                .ledger
                .values()
                .filter(in_partition)
                .filter(|r| r.load_id == load_id)
                .map(|r| r.s3_url.as_str())
                .collect();
            let elsewhere = txn
                .snap
                .ledger
                .values()
                .filter(in_partition)
                .filter(|r| r.load_id != load_id && ours.contains(r.s3_url.as_str()))
                .count();
            if elsewhere > 0 {
                return Err(format!(
                    "ERROR: {}: {elsewhere} files of this load are in the ledger of {} under \
                     another load (an earlier attempt's batch outlived it); rolled back",
                    partition_loader::sql::LOADED_ELSEWHERE_MARKER,
                    self.targets[t].name
                ));
            }
        }
        // Written, never moved: the write-write conflict with a takeover stays, and a
        // statement that outlived its caller does not make the lease live again.
        let _ = (ttl, now);
        set_lease(txn, t, l);
        Ok(Vec::new())
    }

    /// The files a COPY with this manifest loads, or its failure.
    fn copy_files(&mut self, manifest_url: &str, s3: &Objects) -> Result<Vec<Load>, String> {
        let Some(body) = s3.body(manifest_url) else {
            return Err(format!(
                "ERROR: Manifest file {manifest_url} does not exist or is not accessible"
            ));
        };
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("ERROR: Manifest file is not in correct json format: {e}"))?;
        let mut out = Vec::new();
        for entry in json["entries"].as_array().into_iter().flatten() {
            let url = entry["url"].as_str().unwrap_or_default().to_string();
            match s3.object(&url) {
                None => {
                    return Err(format!(
                        "ERROR: Problem reading manifest file - S3ServiceException:The specified \
                         key does not exist.,Status 404,Error NoSuchKey: {url}"
                    ))
                }
                Some(o) if o.corrupt => {
                    self.failed_permanently.insert(url.clone());
                    return Err(format!(
                        "ERROR: Spectrum Scan Error. File '{url}' has an invalid version number"
                    ));
                }
                Some(o) => out.push(Load {
                    target: 0,
                    s3_url: url,
                    etag: o.etag.clone(),
                }),
            }
        }
        Ok(out)
    }
}

fn set_lease(txn: &mut Txn, t: usize, lease: Lease) {
    txn.snap.leases.insert(t, lease.clone());
    txn.ops.push(Op::SetLease(t, lease));
    txn.row_writes.insert(((t, Kind::Lease), 0));
    txn.writes.insert((t, Kind::Lease));
}

/// A model time (milliseconds since the run began) as a timestamp text.
pub fn timestamp(ms: i64) -> String {
    let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default();
    (base + chrono::Duration::milliseconds(ms))
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// What an object's wake-up stands for on a route with a ready marker: the marker's,
/// every data file of its partition that exists (its event makes them ready); a data
/// file's, itself once its partition's marker exists, else nothing (the file waits: the
/// marker's event, or the sweep once it exists, loads it; the final check asks for it).
fn stands_for_with_marker(s3: &Objects, url: &str, marker: &str) -> BTreeSet<String> {
    let dir = &url[..url.rfind('/').map_or(0, |i| i + 1)];
    if url[dir.len()..] == *marker {
        let Some((bucket, prefix)) = dir.strip_prefix("s3://").and_then(|d| d.split_once('/'))
        else {
            return BTreeSet::new();
        };
        return s3.data_files(bucket, prefix);
    }
    if s3.object(&format!("{dir}{marker}")).is_some() {
        BTreeSet::from([url.to_string()])
    } else {
        BTreeSet::new()
    }
}
