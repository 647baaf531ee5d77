//! The deterministic simulation of the lease protocol (issue 18, "The proof").
//!
//! It drives the real [`Loader`] (`handle`, `handle_batch`, `sweep`, `backfill`) through
//! in-memory implementations of the `Warehouse` and `Storage` traits. Every warehouse
//! batch and every S3 listing of every invocation parks at a gate; with every live
//! invocation parked, a [`Chooser`] (a seeded PRNG, or a scripted choice list for the
//! exhaustive search and replays) picks what happens next: a statement starts, a
//! started transaction commits, a listing is answered, a file appears, an event is
//! delivered (late, reordered, duplicated; some are lost), an SQS batch, a sweep, a
//! backfill, a fault (kill an invocation between two calls, a transient or ABORTED
//! statement failure, the clock past every lease's TTL). Time is tokio's paused clock,
//! advanced by the scheduler: the loader's deadlines and the model's `GETDATE()` read it.
//!
//! Determinism: one thread, futures polled by hand with a no-op waker, `BTreeMap`s
//! only, no wall clock except today's date (the sweep's window: a replay across midnight
//! names other partitions, in the same order), no randomness but the seed's. The
//! loader's own UUIDs (load ids, manifest keys) never reach a decision.

#![allow(dead_code)]

pub mod invariants;
pub mod sql;
pub mod storage;
pub mod warehouse;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use partition_loader::io::storage::Storage;
use partition_loader::io::warehouse::{is_serialization_conflict, LoadEnd, Row, Warehouse};
use partition_loader::protocol::plan::ListedObject;
use partition_loader::run::batch::{self, Invocation};
use partition_loader::{Config, Loader, LoaderError, Outcome};
use serde_json::{json, Value};
use tokio::time::Instant;

use invariants::Violation;
use storage::{Object, Objects, S3Answer, S3Op};
use warehouse::{Db, End, Isolation, Phase, Target};

pub const TTL_SECONDS: i64 = 960;
/// What a backfill gives each partition (as loaderctl does).
pub const BACKFILL_PER_PARTITION: Duration = Duration::from_secs(300);
/// How long a COPY takes with `slow_copies`: longer than a 30 s function.
pub const SLOW_COPY_MS: i64 = 40_000;
const BUCKET: &str = "lake";
const LOADER_SCHEMA: &str = "partition_loader";
/// Lambda's asynchronous invocation: the first attempt and two retries, same request id.
const ASYNC_ATTEMPTS: u32 = 3;
/// The SQS queue's maxReceiveCount before its dead-letter queue.
const SQS_RECEIVES: u32 = 3;
const SWEEP_LOOK_BACK_DAYS: u32 = 3;
/// The ready marker of [`Workload::ready_markers`].
const MARKER: &str = "_SUCCESS";
/// Where the S3 gate's objects live: the manifest location's `gates/` folder.
const GATES_BUCKET: &str = "manifests";
const GATES_PREFIX: &str = "m/gates/";

/// What one run contains: its size and which faults the scheduler may inject.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub isolation: Isolation,
    /// Target tables; 0: 1–3, drawn from the seed.
    pub tables: usize,
    /// Table 0 gets a second route (another prefix) into it.
    pub two_routes: bool,
    /// Date partitions per route (1–2); 0: drawn from the seed.
    pub partitions: usize,
    /// Data files written over the run.
    pub files: usize,
    /// One corrupt file, alone in a partition of route 0.
    pub corrupt: bool,
    /// Function timeouts an invocation gets (seconds), picked per invocation.
    pub timeouts: &'static [u64],
    pub lose_events: bool,
    pub duplicate_events: bool,
    pub sqs: bool,
    pub sweeps: u32,
    pub backfills: u32,
    pub kills: u32,
    /// Transient (SlowDown for a COPY, ABORTED otherwise) statement failures.
    pub transient_faults: u32,
    /// Clock jumps past every TTL.
    pub clock_jumps: u32,
    /// A caller's cancel after its deadline may not take (the statement runs on).
    pub cancels_may_fail: bool,
    /// Scheduler steps before the workload stops injecting (then the final phase).
    pub max_steps: usize,
    /// Load batches send their completion event (`WithEvent`, issue 21.2) into the
    /// pool of events to deliver.
    pub completion_events: bool,
    /// A started load batch commits only after [`SLOW_COPY_MS`] of model time (until
    /// then the scheduler may let time pass): COPYs longer than 30 s invocations, which
    /// leave them running (issue 21.1).
    pub slow_copies: bool,
    /// Routes have `ready_marker = "_SUCCESS"`; every partition with files gets its
    /// marker written at a random point among them (files before and after it).
    pub ready_markers: bool,
    /// The S3 gate's broken variant that reads the gate before writing its wake-up
    /// (`GateMode::ReadsFirst`): `no_wakeup_stranded` must find it.
    pub gate_reads_first: bool,
    /// Events go through the S3 gate (the deployed default). Off: the Redshift path
    /// alone, as before the gate (the regression seeds found before it keep their
    /// schedules so).
    pub gate: bool,
}

impl Workload {
    /// Everything on: the workload `scripts/simulate` and the full CI run use.
    pub fn full(isolation: Isolation) -> Workload {
        Workload {
            name: "full",
            isolation,
            tables: 0,
            two_routes: true,
            partitions: 0,
            files: 6,
            corrupt: true,
            timeouts: &[900, 900, 30],
            lose_events: true,
            duplicate_events: true,
            sqs: true,
            sweeps: 2,
            backfills: 1,
            kills: 2,
            transient_faults: 2,
            clock_jumps: 1,
            cancels_may_fail: true,
            max_steps: 400,
            ready_markers: false,
            completion_events: true,
            slow_copies: false,
            gate_reads_first: false,
            gate: true,
        }
    }

    /// A burst behind the S3 gate (issue 21 item 4): one table, one or two partitions,
    /// 10 files and their one-event invocations close together, kills and transient
    /// failures (S3 calls included), a clock jump; the final sweep after quiescence.
    pub fn burst(isolation: Isolation) -> Workload {
        Workload {
            name: "burst",
            tables: 1,
            two_routes: false,
            files: 10,
            corrupt: false,
            timeouts: &[900],
            lose_events: false,
            duplicate_events: true,
            sqs: false,
            sweeps: 0,
            backfills: 0,
            kills: 2,
            transient_faults: 2,
            clock_jumps: 1,
            completion_events: false,
            ..Workload::full(isolation)
        }
    }

    /// Statements that outlive their invocations (issue 21.1): slow COPYs and 30 s
    /// functions, completion events lost, duplicated and reordered, sweeps, kills.
    pub fn statement(isolation: Isolation) -> Workload {
        Workload {
            name: "statement",
            timeouts: &[30, 30, 900],
            slow_copies: true,
            ..Workload::full(isolation)
        }
    }

    /// What today's code handles: no transient failures (item 2), one route per table
    /// (item 3), 900 s timeouts (item 4), no kills, no clock jumps while invocations
    /// run and cancels that always take (item 5: no statement outlives its caller).
    pub fn handled_today(isolation: Isolation) -> Workload {
        Workload {
            name: "handled_today",
            two_routes: false,
            timeouts: &[900],
            kills: 0,
            transient_faults: 0,
            clock_jumps: 0,
            cancels_may_fail: false,
            ..Workload::full(isolation)
        }
    }

    /// The exhaustive bound: small enough to enumerate every schedule. Without the S3
    /// gate (its calls multiply the schedules past the bound): the gate's own bound is
    /// [`Workload::small_gate`].
    pub fn small(isolation: Isolation, kills: u32) -> Workload {
        Workload {
            name: "small",
            isolation,
            tables: 1,
            two_routes: false,
            partitions: 1,
            files: 2,
            corrupt: false,
            timeouts: &[900],
            lose_events: false,
            duplicate_events: false,
            sqs: false,
            sweeps: 0,
            backfills: 0,
            kills,
            transient_faults: 0,
            clock_jumps: 0,
            cancels_may_fail: false,
            max_steps: 200,
            ready_markers: false,
            completion_events: false,
            slow_copies: false,
            gate_reads_first: false,
            gate: false,
        }
    }

    /// The small bound through the S3 gate: two files, their two events, every interleaving of their S3 and Redshift calls (explored up
    /// to a number of schedules in CI).
    pub fn small_gate(isolation: Isolation) -> Workload {
        Workload {
            name: "small_gate",
            gate: true,
            ..Workload::small(isolation, 0)
        }
    }

    /// An exhaustive bound with a statement left running: one file, a 30 s function,
    /// slow COPYs, completion events.
    pub fn small_statement(isolation: Isolation) -> Workload {
        Workload {
            name: "small_statement",
            files: 1,
            timeouts: &[30],
            completion_events: true,
            slow_copies: true,
            ..Workload::small(isolation, 0)
        }
    }
}

/// Picks every choice of a run: from a seeded PRNG (weighted), or from a script (the
/// exhaustive search's prefix, then the first option).
pub struct Chooser {
    rng: Option<fastrand::Rng>,
    script: Vec<usize>,
    /// Every choice made: (chosen, number of options).
    pub made: Vec<(usize, usize)>,
    /// The schedule, readable.
    pub trail: Vec<String>,
}

impl Chooser {
    pub fn random(seed: u64) -> Chooser {
        Chooser {
            rng: Some(fastrand::Rng::with_seed(seed)),
            script: Vec::new(),
            made: Vec::new(),
            trail: Vec::new(),
        }
    }

    pub fn scripted(script: Vec<usize>) -> Chooser {
        Chooser {
            rng: None,
            script,
            made: Vec::new(),
            trail: Vec::new(),
        }
    }

    fn pick(&mut self, weights: &[u32]) -> usize {
        let n = weights.len();
        let i = match &mut self.rng {
            Some(rng) => {
                let total: u32 = weights.iter().sum();
                let mut x = rng.u32(0..total.max(1));
                weights
                    .iter()
                    .position(|w| {
                        if x < *w {
                            true
                        } else {
                            x -= w;
                            false
                        }
                    })
                    .unwrap_or(0)
            }
            None => self
                .script
                .get(self.made.len())
                .copied()
                .unwrap_or(0)
                .min(n - 1),
        };
        self.made.push((i, n));
        i
    }

    fn coin(&mut self) -> bool {
        self.pick(&[1, 1]) == 1
    }
}

// ----- the world the gates share -----

pub struct World {
    pub db: Db,
    pub s3: Objects,
    pub invs: Vec<Slot>,
    pub t0: Instant,
    /// Per invocation: wake-ups queued during its tenure that its release left behind.
    pub left_behind: BTreeMap<usize, usize>,
    pub violation: Option<Violation>,
    pub commits: u64,
    /// Load batches left running by their invocation.
    pub left_running: usize,
    /// Invocations killed (or ended by their function timeout).
    pub killed: std::collections::BTreeSet<usize>,
    /// Per S3 wake-up key: the invocation that wrote it.
    pub wakeup_writers: BTreeMap<String, usize>,
    /// (gate key, invocation) of every successful create or takeover of a gate.
    pub gate_holders: std::collections::BTreeSet<(String, usize)>,
}

impl World {
    pub fn now_ms(&self) -> i64 {
        (Instant::now() - self.t0).as_millis() as i64
    }
}

pub struct Slot {
    pub holder: String,
    pub label: String,
    pub alive: bool,
    pub waiting: Waiting,
    pub reply: Option<Reply>,
    /// The deadline the loader gave its current warehouse call.
    pub call_deadline: Option<Instant>,
    /// The current call is a load batch its caller leaves running at the deadline.
    pub leaves: bool,
    /// The function's own timeout: Lambda ends the invocation here.
    pub timeout_at: Instant,
    /// The deadline main.rs gives the loader, and when the invocation started: the
    /// drain's reserve ([`partition_loader::protocol::lease::reserve`]) is a share of the two.
    pub deadline: Instant,
    pub started: Instant,
    pub job: Job,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Waiting {
    Idle,
    Statement(usize),
    List(String, String),
    S3(S3Op),
}

pub enum Reply {
    Statement(Result<String, LoaderError>),
    /// A load batch still running when its caller left it (`run_load_batch`).
    Left(String),
    Listed(Vec<ListedObject>),
    S3(Result<S3Answer, LoaderError>),
}

type Shared = Arc<Mutex<World>>;

fn lock(world: &Shared) -> MutexGuard<'_, World> {
    // A poisoned lock means a panic in a previous step: the test failed already.
    world.lock().unwrap_or_else(|e| e.into_inner())
}

enum Request {
    /// The statements, the caller's deadline, and for a load batch its StatementName
    /// (then the caller leaves it running at the deadline instead of cancelling).
    Statement(Vec<String>, Instant, Option<String>),
    List(String, String),
    S3(S3Op),
}

/// Where an invocation waits for the scheduler.
struct Gate {
    world: Shared,
    inv: usize,
    request: Option<Request>,
}

impl Future for Gate {
    type Output = Reply;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Reply> {
        let this = self.get_mut();
        let mut w = lock(&this.world);
        if let Some(request) = this.request.take() {
            let holder = w.invs[this.inv].holder.clone();
            match request {
                Request::Statement(sqls, deadline, name) => {
                    w.invs[this.inv].leaves = name.is_some();
                    let n = w.db.submit(this.inv, &holder, sqls, name);
                    w.invs[this.inv].waiting = Waiting::Statement(n);
                    w.invs[this.inv].call_deadline = Some(deadline);
                }
                Request::List(b, p) => w.invs[this.inv].waiting = Waiting::List(b, p),
                Request::S3(op) => w.invs[this.inv].waiting = Waiting::S3(op),
            }
            return Poll::Pending;
        }
        match w.invs[this.inv].reply.take() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

fn model_error(what: &str) -> LoaderError {
    LoaderError::Warehouse {
        message: format!("simulation: {what}"),
        retryable: false,
    }
}

/// The `Warehouse` of one invocation.
pub struct SimWarehouse {
    world: Shared,
    inv: usize,
}

impl Warehouse for SimWarehouse {
    async fn run_batch(&self, sqls: Vec<String>, deadline: Instant) -> Result<String, LoaderError> {
        let gate = Gate {
            world: self.world.clone(),
            inv: self.inv,
            request: Some(Request::Statement(sqls, deadline, None)),
        };
        match gate.await {
            Reply::Statement(r) => r,
            Reply::Left(_) | Reply::Listed(_) | Reply::S3(_) => {
                Err(model_error("a listing answered a statement"))
            }
        }
    }

    async fn run_load_batch(
        &self,
        sqls: Vec<String>,
        name: String,
        leave_at: Instant,
    ) -> Result<LoadEnd, LoaderError> {
        let gate = Gate {
            world: self.world.clone(),
            inv: self.inv,
            request: Some(Request::Statement(sqls, leave_at, Some(name))),
        };
        match gate.await {
            Reply::Statement(r) => r.map(LoadEnd::Committed),
            Reply::Left(id) => Ok(LoadEnd::Running(id)),
            Reply::Listed(_) | Reply::S3(_) => Err(model_error("a listing answered a statement")),
        }
    }

    /// ListStatements answers from the model at once: the check and the take that
    /// follows it are separate steps, so statements may end (or start) in between.
    async fn running_statement(
        &self,
        name: String,
        _: Instant,
    ) -> Result<Option<String>, LoaderError> {
        Ok(lock(&self.world).db.running_named(&name))
    }

    async fn statement_status(
        &self,
        statement_id: String,
        _: Instant,
    ) -> Result<(String, Option<String>), LoaderError> {
        Ok(lock(&self.world).db.status(&statement_id))
    }

    async fn run(
        &self,
        sql: String,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        if !params.is_empty() {
            lock(&self.world)
                .db
                .fatal
                .get_or_insert(format!("parameters not modelled: {sql}"));
        }
        self.run_batch(vec![sql], deadline).await
    }

    async fn rows(&self, statement_id: String, _: Instant) -> Result<Vec<Row>, LoaderError> {
        let w = lock(&self.world);
        let (id, k) = match statement_id.split_once(':') {
            Some((id, k)) => (id, k.parse::<usize>().unwrap_or(0)),
            None => (statement_id.as_str(), 1),
        };
        let found = w.db.statements.iter().find(|s| s.id == id);
        match found.map(|s| &s.phase) {
            Some(Phase::Done(End::Finished(results))) => results
                .get(k.wrapping_sub(1))
                .cloned()
                .ok_or_else(|| model_error(&format!("no result {statement_id}"))),
            _ => Err(model_error(&format!("{statement_id} has no results"))),
        }
    }
}

/// The `Storage` of one invocation.
pub struct SimStorage {
    world: Shared,
    inv: usize,
}

impl Storage for SimStorage {
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, LoaderError> {
        let gate = Gate {
            world: self.world.clone(),
            inv: self.inv,
            request: Some(Request::List(bucket.to_string(), prefix.to_string())),
        };
        match gate.await {
            Reply::Listed(v) => Ok(v),
            Reply::Statement(_) | Reply::Left(_) | Reply::S3(_) => {
                Err(model_error("a statement answered a listing"))
            }
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: String) -> Result<(), LoaderError> {
        if key.starts_with(GATES_PREFIX) {
            lock(&self.world)
                .wakeup_writers
                .insert(key.to_string(), self.inv);
            let op = S3Op::Put {
                bucket: bucket.into(),
                key: key.into(),
                body,
            };
            return self.s3(op).await.map(|_| ());
        }
        lock(&self.world).s3.insert(
            bucket,
            key,
            Object {
                size: body.len() as i64,
                etag: "manifest".into(),
                corrupt: false,
                body: Some(body),
            },
        );
        Ok(())
    }

    async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        body: String,
        expected: Option<&str>,
    ) -> Result<bool, LoaderError> {
        if !key.starts_with(GATES_PREFIX) {
            return Err(SimStorage::refuse("writing", bucket, key));
        }
        let op = S3Op::PutIf {
            bucket: bucket.into(),
            key: key.into(),
            body,
            expected: expected.map(String::from),
        };
        match self.s3(op).await? {
            S3Answer::Written(ok) => {
                if ok {
                    lock(&self.world)
                        .gate_holders
                        .insert((key.to_string(), self.inv));
                }
                Ok(ok)
            }
            _ => Err(model_error("a conditional PUT answered otherwise")),
        }
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<(String, String)>, LoaderError> {
        if !key.starts_with(GATES_PREFIX) {
            return Err(SimStorage::refuse("reading", bucket, key));
        }
        let op = S3Op::Get {
            bucket: bucket.into(),
            key: key.into(),
        };
        match self.s3(op).await? {
            S3Answer::Got(read) => Ok(read),
            _ => Err(model_error("a GET answered otherwise")),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), LoaderError> {
        if !key.starts_with(GATES_PREFIX) {
            return Err(SimStorage::refuse("deleting", bucket, key));
        }
        let op = S3Op::Delete {
            bucket: bucket.into(),
            key: key.into(),
        };
        self.s3(op).await.map(|_| ())
    }

    /// The model's clock (tokio's paused time), from a fixed epoch: gates expire with
    /// the leases when the scheduler lets time pass.
    fn now(&self) -> std::time::SystemTime {
        let ms = lock(&self.world).now_ms().max(0) as u64;
        std::time::SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_800_000_000)
            + Duration::from_millis(ms)
    }
}

impl SimStorage {
    async fn s3(&self, op: S3Op) -> Result<S3Answer, LoaderError> {
        let gate = Gate {
            world: self.world.clone(),
            inv: self.inv,
            request: Some(Request::S3(op)),
        };
        match gate.await {
            Reply::S3(r) => r,
            _ => Err(model_error("a statement answered an S3 call")),
        }
    }

    /// Objects other than the gate's are not readable here (as before the gate: the
    /// sweep's watermark is then unreadable, and the sweep queries).
    fn refuse(what: &str, bucket: &str, key: &str) -> LoaderError {
        LoaderError::Storage {
            message: format!("{what} s3://{bucket}/{key}: not supported by this storage"),
            retryable: false,
        }
    }
}

// ----- jobs -----

#[derive(Debug, Clone)]
pub struct Message {
    id: String,
    event: Value,
    receives: u32,
}

#[derive(Debug, Clone)]
pub enum Job {
    Event {
        event: Value,
        request_id: String,
        attempt: u32,
    },
    Sqs(Vec<Message>),
    Sweep,
    Backfill(String),
    Redrive(Value),
}

enum Finished {
    Event(Result<Outcome, LoaderError>),
    Sqs { failed: Vec<String>, ok: bool },
    Many(Vec<Result<Outcome, LoaderError>>),
}

/// An event waiting for delivery.
#[derive(Debug, Clone)]
struct Pending {
    event: Value,
    /// A Lambda retry: the request id and attempt it keeps.
    retry: Option<(String, u32)>,
    /// Through the SQS queue: message id and receives so far.
    sqs: Option<(String, u32)>,
}

#[derive(Debug, Clone)]
struct FileSpec {
    key: String,
    corrupt: bool,
    events: usize,
    via_sqs: bool,
    /// A ready marker (zero bytes), not a data file.
    marker: bool,
}

#[derive(Debug, Clone)]
enum Action {
    Start(usize),
    Commit(usize),
    List(usize),
    Write,
    Deliver(usize),
    SqsBatch,
    Sweep,
    Backfill,
    Kill(usize),
    Fault(usize, bool),
    Jump,
    /// Time passes (a slow COPY runs).
    Wait,
    /// An invocation's S3 call on a gate object is answered.
    S3(usize),
    /// It fails transiently (503 SlowDown); S3 may have applied it all the same.
    S3Fault(usize),
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    pub workload: &'static str,
    pub violation: Option<Violation>,
    pub steps: usize,
    pub invocations: usize,
    pub commits: u64,
    pub conflicts: u64,
    pub trail: Vec<String>,
    pub made: Vec<(usize, usize)>,
    /// Load batches whose invocation left them running (outcome `running`).
    pub left_running: usize,
}

impl Report {
    /// The schedule and the verdict, for a failing seed.
    pub fn schedule(&self) -> String {
        let mut out = format!(
            "workload {}: {} steps, {} invocations, {} commits, {} conflicts\n",
            self.workload, self.steps, self.invocations, self.commits, self.conflicts
        );
        for line in &self.trail {
            out.push_str(line);
            out.push('\n');
        }
        if let Some(v) = &self.violation {
            out.push_str(&format!("VIOLATED {}: {}\n", v.invariant, v.detail));
        }
        out
    }
}

/// Runs one schedule of `work` on a fresh single-threaded runtime with paused time.
pub fn run(work: &Workload, seed: u64, chooser: &mut Chooser) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async {
        let mut runner = Runner::new(work, seed, chooser);
        runner.run().await;
        let w = lock(&runner.world);
        Report {
            workload: work.name,
            violation: w.violation.clone(),
            steps: runner.steps,
            invocations: w.invs.len(),
            commits: w.commits,
            conflicts: w.db.conflicts,
            trail: std::mem::take(&mut runner.chooser.trail),
            made: runner.chooser.made.clone(),
            left_running: w.left_running,
        }
    })
}

/// Runs seed `seed` of `work` with the PRNG scheduler.
pub fn run_seed(work: &Workload, seed: u64) -> Report {
    let mut chooser = Chooser::random(seed);
    run(work, seed, &mut chooser)
}

/// What an exhaustive search covered.
#[derive(Debug, Default)]
pub struct Explored {
    pub schedules: u64,
    /// Every schedule of the bound was run.
    pub exhausted: bool,
    pub violating: u64,
    /// The first violating schedule.
    pub first: Option<Report>,
}

/// The exhaustive search: every schedule of `work` (stateless model checking: each run
/// starts from scratch with a choice prefix, branching at every choice point), up to
/// `max` schedules; stops at the first violation when `stop_at_first`.
pub fn explore(work: &Workload, max: u64, stop_at_first: bool) -> Explored {
    let mut prefix = Vec::new();
    let mut out = Explored::default();
    loop {
        let mut chooser = Chooser::scripted(prefix.clone());
        let report = run(work, 0, &mut chooser);
        out.schedules += 1;
        let made = report.made.clone();
        if report.violation.is_some() {
            out.violating += 1;
            out.first.get_or_insert(report);
            if stop_at_first {
                return out;
            }
        }
        let Some(i) = (0..made.len()).rev().find(|&i| made[i].0 + 1 < made[i].1) else {
            out.exhausted = true;
            return out;
        };
        prefix = made[..i].iter().map(|(c, _)| *c).collect();
        prefix.push(made[i].0 + 1);
        if out.schedules >= max {
            return out;
        }
    }
}

struct Runner<'a> {
    world: Shared,
    futs: Vec<Option<Pin<Box<dyn Future<Output = Finished>>>>>,
    config: Config,
    work: &'a Workload,
    chooser: &'a mut Chooser,
    /// Randomness that is not a choice point (workload shape, clock ticks).
    rng: fastrand::Rng,
    exhaustive: bool,
    files: Vec<FileSpec>,
    next_file: usize,
    pool: Vec<Pending>,
    dlq: Vec<Value>,
    next_id: usize,
    kills: u32,
    faults: u32,
    jumps: u32,
    sweeps: u32,
    backfills: u32,
    steps: usize,
    route_prefixes: Vec<String>,
}

impl<'a> Runner<'a> {
    fn new(work: &'a Workload, seed: u64, chooser: &'a mut Chooser) -> Runner<'a> {
        let exhaustive = chooser.rng.is_none();
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        let today = chrono::Utc::now().date_naive();
        let day = |back: u64| {
            today
                .checked_sub_days(chrono::Days::new(back))
                .unwrap_or(today)
                .format("%Y-%m-%d")
                .to_string()
        };
        let mut toml = String::new();
        let mut targets = Vec::new();
        let mut route_prefixes = Vec::new();
        let tables = match work.tables {
            0 => rng.usize(1..=3),
            n => n,
        };
        let partitions = match work.partitions {
            0 => rng.u64(1..=2),
            n => n as u64,
        };
        for t in 0..tables {
            let mut prefixes = vec![format!("t{t}/")];
            if t == 0 && work.two_routes {
                prefixes.push(format!("t{t}_eu/"));
            }
            let mut routes = Vec::new();
            for p in prefixes {
                toml.push_str(&format!(
                    "[[routes]]\nbucket = \"{BUCKET}\"\nprefix = \"{p}\"\ntable = \"s.t{t}\"\n\
                     format = \"parquet\"\nfile_columns = [\"id\", \"amount\"]\n\
                     partition_columns = [{{ name = \"order_date\", type = \"date\" }}]\n{}\n",
                    if work.ready_markers {
                        format!("ready_marker = \"{MARKER}\"\n")
                    } else {
                        String::new()
                    }
                ));
                routes.push((BUCKET.to_string(), p.clone()));
                route_prefixes.push(p);
            }
            let name = partition_loader::sql::TableName::parse(&format!("s.t{t}"))
                .expect("a valid table name");
            targets.push(Target::new(LOADER_SCHEMA, name, routes));
        }
        let env: BTreeMap<&str, String> = BTreeMap::from([
            ("REDSHIFT_WORKGROUP", "sim".to_string()),
            ("REDSHIFT_DATABASE", "dev".to_string()),
            (
                "COPY_IAM_ROLE",
                "arn:aws:iam::123456789012:role/copy".to_string(),
            ),
            ("MANIFEST_PREFIX", "s3://manifests/m/".to_string()),
            ("LEASE_TTL_SECONDS", TTL_SECONDS.to_string()),
            ("LOADER_SCHEMA", LOADER_SCHEMA.to_string()),
            ("LOADER_CONFIG", toml),
        ]);
        let config =
            Config::from_lookup(|k| env.get(k).cloned()).expect("the simulation's configuration");
        let mut files = Vec::new();
        for k in 0..work.files {
            let prefix = &route_prefixes[rng.usize(0..route_prefixes.len())];
            let partition = day(rng.u64(0..partitions));
            let events = match (work.lose_events, work.duplicate_events, rng.u32(0..10)) {
                (true, _, 0) => 0,
                (_, true, 1 | 2) => 2,
                _ => 1,
            };
            files.push(FileSpec {
                key: format!("{prefix}order_date={partition}/f{k}.parquet"),
                corrupt: false,
                events,
                via_sqs: work.sqs && rng.u32(0..3) == 0,
                marker: false,
            });
        }
        if work.corrupt {
            let at = rng.usize(0..=files.len());
            files.insert(
                at,
                FileSpec {
                    key: format!("{}order_date={}/bad.parquet", route_prefixes[0], day(2)),
                    corrupt: true,
                    events: 1,
                    via_sqs: false,
                    marker: false,
                },
            );
            // A good file beside it: the bad one must not hold it hostage.
            files.insert(
                at,
                FileSpec {
                    key: format!(
                        "{}order_date={}/beside-bad.parquet",
                        route_prefixes[0],
                        day(2)
                    ),
                    corrupt: false,
                    events: 1,
                    via_sqs: false,
                    marker: false,
                },
            );
        }
        if work.ready_markers {
            let mut partitions: Vec<String> = Vec::new();
            for f in &files {
                let dir = f.key[..f.key.rfind('/').unwrap_or(0) + 1].to_string();
                if !partitions.contains(&dir) {
                    partitions.push(dir);
                }
            }
            for dir in partitions {
                let at = rng.usize(0..=files.len());
                let events = match (work.lose_events, work.duplicate_events, rng.u32(0..10)) {
                    (true, _, 0) => 0,
                    (_, true, 1 | 2) => 2,
                    _ => 1,
                };
                files.insert(
                    at,
                    FileSpec {
                        key: format!("{dir}{MARKER}"),
                        corrupt: false,
                        events,
                        via_sqs: work.sqs && rng.u32(0..3) == 0,
                        marker: true,
                    },
                );
            }
        }
        let world = World {
            db: {
                let mut db = Db::new(work.isolation, targets);
                db.ready_marker = work.ready_markers.then_some(MARKER);
                db
            },
            s3: Objects::default(),
            invs: Vec::new(),
            t0: Instant::now(),
            left_behind: BTreeMap::new(),
            violation: None,
            commits: 0,
            left_running: 0,
            killed: Default::default(),
            wakeup_writers: BTreeMap::new(),
            gate_holders: Default::default(),
        };
        Runner {
            world: Arc::new(Mutex::new(world)),
            futs: Vec::new(),
            config,
            work,
            chooser,
            rng,
            exhaustive,
            files,
            next_file: 0,
            pool: Vec::new(),
            dlq: Vec::new(),
            next_id: 0,
            kills: work.kills,
            faults: work.transient_faults,
            jumps: work.clock_jumps,
            sweeps: work.sweeps,
            backfills: work.backfills,
            steps: 0,
            route_prefixes,
        }
    }

    fn stopped(&self) -> bool {
        let mut w = lock(&self.world);
        if w.violation.is_none() {
            if let Some(f) = w.db.fatal.clone() {
                w.violation = Some(Violation {
                    invariant: invariants::MODEL,
                    detail: f,
                });
            }
        }
        w.violation.is_some()
    }

    async fn run(&mut self) {
        // The workload, with faults.
        loop {
            if self.stopped() {
                return;
            }
            let inject = self.steps < self.work.max_steps;
            let actions = self.enabled(inject);
            if actions.is_empty() {
                break;
            }
            self.step(actions).await;
        }
        // The final phase: no more faults; everything still running ends.
        self.drain().await;
        if self.stopped() {
            return;
        }
        {
            let mut w = lock(&self.world);
            let found = invariants::no_wakeup_stranded(
                &w.s3,
                GATES_BUCKET,
                GATES_PREFIX,
                &w.wakeup_writers,
                &w.gate_holders,
                &w.killed,
            );
            if found.is_some() {
                w.violation = found;
                self.chooser
                    .trail
                    .push("       quiescence before the final sweep".into());
                return;
            }
        }
        tokio::time::advance(Duration::from_secs(TTL_SECONDS as u64 + 60)).await;
        self.spawn(Job::Sweep, "final-sweep".into(), 900);
        self.drain().await;
        let dlq = std::mem::take(&mut self.dlq);
        for (k, event) in dlq.into_iter().enumerate() {
            self.spawn(Job::Redrive(event), format!("redrive-{k}"), 900);
            self.drain().await;
        }
        if self.stopped() {
            return;
        }
        let mut w = lock(&self.world);
        let now = w.now_ms();
        // With ready markers, nothing is lost once the marker exists: the files of a
        // partition whose marker was never written are not expected (the commit check
        // says none of them was loaded).
        let written = &self.files[..self.next_file];
        let marked = |key: &str| {
            let dir = &key[..key.rfind('/').unwrap_or(0) + 1];
            written
                .iter()
                .any(|m| m.marker && m.key == format!("{dir}{MARKER}"))
        };
        let files: Vec<(String, bool)> = written
            .iter()
            .filter(|f| !f.marker && (!self.work.ready_markers || marked(&f.key)))
            .map(|f| (format!("s3://{BUCKET}/{}", f.key), f.corrupt))
            .collect();
        w.violation =
            invariants::every_file_loaded_once(&w.db.state, &files, &w.db.failed_permanently)
                .or_else(|| invariants::bad_files_quarantined(&w.db.state, &files))
                .or_else(|| invariants::no_wakeup_left(&w.db.state))
                .or_else(|| invariants::no_gate_object_left(&w.s3, GATES_BUCKET, GATES_PREFIX))
                .or_else(|| invariants::no_lease_held(&w.db.state, now));
        if w.violation.is_some() {
            self.chooser
                .trail
                .push(format!("t={:.1}s final check", now as f64 / 1000.0));
        }
    }

    /// Runs what is left without faults until nothing is.
    async fn drain(&mut self) {
        loop {
            if self.stopped() {
                return;
            }
            if self.steps > self.work.max_steps + 5_000 {
                lock(&self.world)
                    .db
                    .fatal
                    .get_or_insert("the run does not end (a livelock?)".into());
                continue;
            }
            let actions = self.enabled(false);
            if actions.is_empty() {
                return;
            }
            self.step(actions).await;
        }
    }

    fn enabled(&self, inject: bool) -> Vec<(u32, Action)> {
        let w = lock(&self.world);
        let mut out = Vec::new();
        for (n, s) in w.db.statements.iter().enumerate() {
            match &s.phase {
                // A statement whose caller is gone waits in the queue longer (WLM
                // queueing, a busy cluster): weighted low, still always possible.
                Phase::Submitted if w.db.startable(n) => {
                    out.push((if s.waited_for { 10 } else { 1 }, Action::Start(n)))
                }
                Phase::Started(txn) => {
                    let copying = self.work.slow_copies
                        && txn.copies
                        && w.now_ms() - txn.now_ms < SLOW_COPY_MS;
                    if copying {
                        if !out.iter().any(|(_, a)| matches!(a, Action::Wait)) {
                            out.push((10, Action::Wait));
                        }
                    } else {
                        out.push((10, Action::Commit(n)));
                    }
                    if inject && self.faults > 0 {
                        out.push((1, Action::Fault(n, txn.copies)));
                    }
                }
                _ => {}
            }
        }
        for (i, slot) in w.invs.iter().enumerate() {
            if slot.alive && matches!(slot.waiting, Waiting::List(..)) {
                out.push((10, Action::List(i)));
            }
            if slot.alive && matches!(slot.waiting, Waiting::S3(..)) {
                out.push((10, Action::S3(i)));
                if inject && self.faults > 0 {
                    out.push((1, Action::S3Fault(i)));
                }
            }
        }
        if !inject {
            return out;
        }
        if self.next_file < self.files.len() {
            out.push((3, Action::Write));
        }
        for (i, p) in self.pool.iter().enumerate() {
            if p.sqs.is_none() {
                out.push((2, Action::Deliver(i)));
            }
        }
        if self.pool.iter().any(|p| p.sqs.is_some()) {
            out.push((3, Action::SqsBatch));
        }
        let live = w.invs.iter().any(|s| s.alive);
        // Not when nothing else is left: they would only prolong the run.
        let busy = live || !out.is_empty();
        if self.sweeps > 0 && busy {
            out.push((1, Action::Sweep));
        }
        if self.backfills > 0 && busy {
            out.push((1, Action::Backfill));
        }
        if self.kills > 0 {
            for (i, s) in w.invs.iter().enumerate() {
                if s.alive {
                    out.push((1, Action::Kill(i)));
                }
            }
        }
        if self.jumps > 0 && busy {
            out.push((1, Action::Jump));
        }
        out
    }

    fn describe(&self, action: &Action) -> String {
        let w = lock(&self.world);
        let stmt = |n: usize| {
            let s = &w.db.statements[n];
            let first = s
                .sqls
                .iter()
                .find(|q| !q.starts_with("LOCK"))
                .or(s.sqls.first())
                .map(|q| q.chars().take(70).collect::<String>())
                .unwrap_or_default();
            format!("{} of {} (inv {}): {first}", s.id, s.holder_hint, s.inv)
        };
        let inv = |i: usize| format!("inv {i} {} [{}]", w.invs[i].holder, w.invs[i].label);
        match action {
            Action::Start(n) => format!("start {}", stmt(*n)),
            Action::Commit(n) => format!("commit {}", stmt(*n)),
            Action::List(i) => format!("answer the listing of {}", inv(*i)),
            Action::Write => format!(
                "write s3://{BUCKET}/{} ({} event(s){}{})",
                self.files[self.next_file].key,
                self.files[self.next_file].events,
                if self.files[self.next_file].via_sqs {
                    ", via SQS"
                } else {
                    ""
                },
                if self.files[self.next_file].corrupt {
                    ", CORRUPT"
                } else {
                    ""
                }
            ),
            Action::Deliver(i) => {
                let p = &self.pool[*i];
                format!(
                    "deliver event for {}{}",
                    p.event["detail"]["object"]["key"]
                        .as_str()
                        .or(p.event["detail"]["statementName"].as_str())
                        .unwrap_or("?"),
                    match &p.retry {
                        Some((id, a)) => format!(" (retry {a} of {id})"),
                        None => String::new(),
                    }
                )
            }
            Action::SqsBatch => "deliver an SQS batch".into(),
            Action::Sweep => "run a sweep".into(),
            Action::Backfill => "run loaderctl backfill".into(),
            Action::Kill(i) => format!("KILL {}", inv(*i)),
            Action::Fault(n, true) => format!("FAULT SlowDown in {}", stmt(*n)),
            Action::Fault(n, false) => format!("FAULT ABORTED {}", stmt(*n)),
            Action::Jump => "CLOCK past every lease's TTL".into(),
            Action::Wait => "time passes (5 s of COPY)".into(),
            Action::S3(i) | Action::S3Fault(i) => {
                let op = match &w.invs[*i].waiting {
                    Waiting::S3(S3Op::Put { key, .. }) => format!("PUT {key}"),
                    Waiting::S3(S3Op::PutIf { key, expected, .. }) => {
                        format!("PUT {key} if {}", expected.as_deref().unwrap_or("none"))
                    }
                    Waiting::S3(S3Op::Get { key, .. }) => format!("GET {key}"),
                    Waiting::S3(S3Op::Delete { key, .. }) => format!("DELETE {key}"),
                    _ => "?".into(),
                };
                let what = if matches!(action, Action::S3Fault(_)) {
                    "FAULT 503 on"
                } else {
                    "answer"
                };
                format!("{what} {op} of {}", inv(*i))
            }
        }
    }

    async fn step(&mut self, actions: Vec<(u32, Action)>) {
        self.steps += 1;
        let weights: Vec<u32> = actions.iter().map(|(w, _)| *w).collect();
        let i = self.chooser.pick(&weights);
        let action = actions[i].1.clone();
        let now = lock(&self.world).now_ms();
        let line = format!(
            "{:>4} t={:>7.1}s {}",
            self.steps,
            now as f64 / 1000.0,
            self.describe(&action)
        );
        self.chooser.trail.push(line);
        self.apply(action).await;
        self.send_completions();
        let tick = if self.exhaustive {
            1000
        } else {
            [0, 250, 1000, 2000][self.rng.usize(0..4)]
        };
        tokio::time::advance(Duration::from_millis(tick)).await;
        self.settle();
    }

    async fn apply(&mut self, action: Action) {
        match action {
            Action::Start(n) => {
                let mut g = lock(&self.world);
                let now = g.now_ms();
                let w = &mut *g;
                let running: Vec<String> =
                    w.db.statements
                        .iter()
                        .filter(|s| matches!(s.phase, Phase::Started(_)))
                        .filter_map(|s| s.name.clone())
                        .collect();
                let found = w.db.statements[n]
                    .name
                    .as_deref()
                    .and_then(|name| invariants::one_load_at_a_time(name, &running));
                if w.violation.is_none() {
                    w.violation = found;
                }
                w.db.start(n, now, &w.s3);
            }
            Action::Commit(n) => self.commit(n),
            Action::List(i) => {
                let reply = {
                    let mut w = lock(&self.world);
                    let Waiting::List(b, p) = w.invs[i].waiting.clone() else {
                        return;
                    };
                    w.invs[i].waiting = Waiting::Idle;
                    Reply::Listed(w.s3.list(&b, &p))
                };
                self.reply(i, reply);
            }
            Action::Write => {
                let f = self.files[self.next_file].clone();
                self.next_file += 1;
                let k = self.next_file;
                lock(&self.world).s3.insert(
                    BUCKET,
                    &f.key,
                    Object {
                        size: if f.marker { 0 } else { 100 },
                        etag: format!("etag{k}"),
                        corrupt: f.corrupt,
                        body: None,
                    },
                );
                for _ in 0..f.events {
                    let event = object_created(&f.key, &format!("etag{k}"));
                    let sqs = f.via_sqs.then(|| (format!("m{}", self.id()), 0));
                    self.pool.push(Pending {
                        event,
                        retry: None,
                        sqs,
                    });
                }
            }
            Action::Deliver(i) => {
                let p = self.pool.remove(i);
                let (request_id, attempt) = match p.retry {
                    Some(r) => r,
                    None => (format!("req-{}", self.id()), 1),
                };
                let timeout = self.timeout();
                self.spawn(
                    Job::Event {
                        event: p.event,
                        request_id: request_id.clone(),
                        attempt,
                    },
                    request_id,
                    timeout,
                );
            }
            Action::SqsBatch => {
                let mut messages = Vec::new();
                let mut k = 0;
                while k < self.pool.len() && messages.len() < 3 {
                    if self.pool[k].sqs.is_some() {
                        let p = self.pool.remove(k);
                        let (id, receives) = p.sqs.unwrap_or_default();
                        messages.push(Message {
                            id,
                            event: p.event,
                            receives: receives + 1,
                        });
                    } else {
                        k += 1;
                    }
                }
                let holder = format!("req-{}", self.id());
                let timeout = self.timeout();
                self.spawn(Job::Sqs(messages), holder, timeout);
            }
            Action::Sweep => {
                self.sweeps -= 1;
                let holder = format!("sweep-{}", self.id());
                self.spawn(Job::Sweep, holder, 900);
            }
            Action::Backfill => {
                self.backfills -= 1;
                let prefix = self.route_prefixes[0].clone();
                let holder = format!("backfill-{}", self.id());
                self.spawn(Job::Backfill(prefix), holder, 3600);
            }
            Action::Kill(i) => {
                self.kills -= 1;
                self.kill(i);
            }
            Action::Fault(n, slow_down) => {
                self.faults -= 1;
                lock(&self.world).db.fail(
                    n,
                    if slow_down {
                        warehouse::SLOW_DOWN
                    } else {
                        warehouse::ABORTED
                    },
                );
            }
            Action::Wait => {
                tokio::time::advance(Duration::from_secs(5)).await;
            }
            Action::S3(i) | Action::S3Fault(i) => {
                let fault = matches!(action, Action::S3Fault(_));
                // A failed call may have been applied (the answer was lost).
                let applied = !fault || self.chooser.coin();
                if fault {
                    self.faults -= 1;
                }
                let reply = {
                    let mut w = lock(&self.world);
                    let Waiting::S3(op) = w.invs[i].waiting.clone() else {
                        return;
                    };
                    w.invs[i].waiting = Waiting::Idle;
                    let answer = if applied { Some(w.s3.apply(&op)) } else { None };
                    if fault {
                        self.chooser.trail.push(format!(
                            "       (applied: {})",
                            if applied { "yes" } else { "no" }
                        ));
                        Reply::S3(Err(LoaderError::Storage {
                            message: "simulation: 503 SlowDown".into(),
                            retryable: true,
                        }))
                    } else {
                        Reply::S3(Ok(answer.unwrap_or(S3Answer::Done)))
                    }
                };
                self.reply(i, reply);
            }
            Action::Jump => {
                self.jumps -= 1;
                tokio::time::advance(Duration::from_secs(TTL_SECONDS as u64 + 60)).await;
            }
        }
    }

    fn id(&mut self) -> usize {
        self.next_id += 1;
        self.next_id
    }

    /// Redshift's "Redshift Data Statement Status Change" of every load batch that
    /// ended (they are submitted `WithEvent`), into the pool of events to deliver: late
    /// and reordered like every event, some lost, some twice (AWS's pages call the
    /// delivery both "guaranteed" and "best effort").
    fn send_completions(&mut self) {
        if !self.work.completion_events {
            return;
        }
        let ended: Vec<(String, String, String)> = {
            let mut w = lock(&self.world);
            let mut out = Vec::new();
            for n in 0..w.db.statements.len() {
                let s = &w.db.statements[n];
                let (Some(name), Phase::Done(_), false) = (&s.name, &s.phase, s.evented) else {
                    continue;
                };
                let (name, id) = (name.clone(), s.id.clone());
                let (state, _) = w.db.status(&id);
                w.db.statements[n].evented = true;
                out.push((name, id, state));
            }
            out
        };
        for (name, id, state) in ended {
            let copies = match (
                self.work.lose_events,
                self.work.duplicate_events,
                self.rng.u32(0..10),
            ) {
                (true, _, 0) => 0,
                (_, true, 1) => 2,
                _ => 1,
            };
            for _ in 0..copies {
                let sqs = (self.work.sqs && self.rng.u32(0..3) == 0)
                    .then(|| (format!("m{}", self.id()), 0));
                self.pool.push(Pending {
                    event: status_change(&name, &id, &state),
                    retry: None,
                    sqs,
                });
            }
        }
    }

    fn timeout(&mut self) -> u64 {
        let t = self.work.timeouts;
        t[self.rng.usize(0..t.len())]
    }

    fn commit(&mut self, n: usize) {
        let mut w = lock(&self.world);
        let Some(c) = w.db.commit(n) else {
            let what = match &w.db.statements[n].phase {
                Phase::Submitted => "write conflict (1023): the adapter resubmits it",
                _ => "write conflict (1023): failed",
            };
            drop(w);
            self.chooser.trail.push(format!("       stmt-{n}: {what}"));
            return;
        };
        w.commits += 1;
        let now = w.now_ms();
        let mut found = invariants::no_file_loaded_twice(&w.db.state, &c.new_loads)
            .or_else(|| {
                self.work
                    .ready_markers
                    .then(|| invariants::loaded_only_after_marker(&w.s3, &c.new_loads, MARKER))
                    .flatten()
            })
            .or_else(|| {
                invariants::wakeups_deleted_only_when_done(
                    &w.db.state,
                    &w.db.failed_permanently,
                    &c.deleted_wakeups,
                )
            });
        for (_, lease) in &c.lease_writes {
            found = found.or_else(|| {
                invariants::lease_write_within_ttl(now, TTL_SECONDS * 1000, lease.expires_ms)
            });
        }
        if let Some(h) = &c.released_by {
            let targets: Vec<usize> = c
                .lease_writes
                .iter()
                .filter(|(_, l)| l.holder.is_none())
                .map(|(t, _)| *t)
                .collect();
            let left =
                w.db.state
                    .wakeups
                    .values()
                    .filter(|x| targets.contains(&x.target) && x.queued_for.as_deref() == Some(h))
                    .count();
            if w.invs[c.inv].holder == *h && left > 0 {
                *w.left_behind.entry(c.inv).or_default() += left;
            }
        }
        if w.violation.is_none() {
            w.violation = found;
        }
    }

    fn reply(&mut self, inv: usize, reply: Reply) {
        lock(&self.world).invs[inv].reply = Some(reply);
        self.poll(inv);
    }

    /// Delivers what finished, times out callers past their deadline, ends functions
    /// past their timeout; repeats until nothing changes.
    fn settle(&mut self) {
        loop {
            let mut replies = Vec::new();
            let mut kills = Vec::new();
            let mut undecided = Vec::new();
            {
                let mut g = lock(&self.world);
                let w = &mut *g;
                let now = Instant::now();
                for (i, slot) in w.invs.iter_mut().enumerate() {
                    if !slot.alive {
                        continue;
                    }
                    if now >= slot.timeout_at {
                        kills.push(i);
                        continue;
                    }
                    let Waiting::Statement(n) = slot.waiting else {
                        continue;
                    };
                    let s = &mut w.db.statements[n];
                    if let Phase::Done(end) = &s.phase {
                        let r = match end {
                            End::Finished(_) => Ok(s.id.clone()),
                            End::Failed(m) if is_serialization_conflict(m) => {
                                Err(LoaderError::SerializationConflict(m.clone()))
                            }
                            End::Failed(m) => Err(LoaderError::StatementFailed {
                                statement_id: s.id.clone(),
                                message: m.clone(),
                            }),
                        };
                        s.waited_for = false;
                        slot.waiting = Waiting::Idle;
                        replies.push((i, Reply::Statement(r)));
                    } else if slot.call_deadline.is_some_and(|d| now >= d) && slot.leaves {
                        // Left running, never cancelled: it holds the lease.
                        self.chooser
                            .trail
                            .push(format!("       inv {i} leaves {} running", s.id));
                        w.left_running += 1;
                        s.waited_for = false;
                        slot.waiting = Waiting::Idle;
                        replies.push((i, Reply::Left(s.id.clone())));
                    } else if slot.call_deadline.is_some_and(|d| now >= d) {
                        let status = match s.phase {
                            Phase::Started(_) => "STARTED",
                            _ => "SUBMITTED",
                        };
                        s.waited_for = false;
                        slot.waiting = Waiting::Idle;
                        undecided.push(n);
                        replies.push((
                            i,
                            Reply::Statement(Err(LoaderError::Timeout {
                                statement_id: s.id.clone(),
                                status: status.into(),
                            })),
                        ));
                    }
                }
            }
            // The adapter cancels a statement it stops waiting for; the cancel may not
            // take (the statement runs on, up to 24 h).
            for n in undecided {
                let takes = !self.work.cancels_may_fail || self.chooser.coin();
                self.chooser.trail.push(format!(
                    "       caller of stmt-{n} timed out; cancel {}",
                    if takes { "takes" } else { "does NOT take" }
                ));
                if takes {
                    lock(&self.world)
                        .db
                        .fail(n, "Query cancelled on user's request");
                }
            }
            if replies.is_empty() && kills.is_empty() {
                return;
            }
            for i in kills {
                self.chooser
                    .trail
                    .push(format!("       inv {i} reached its function timeout"));
                self.kill(i);
            }
            for (i, r) in replies {
                self.reply(i, r);
            }
        }
    }

    fn spawn(&mut self, job: Job, request_id: String, timeout_s: u64) {
        let timeout = Duration::from_secs(timeout_s);
        let deadline = Instant::now() + timeout - Duration::from_secs(5).min(timeout / 5);
        // Each attempt's own lease token, as main.rs makes it (`lease::attempt_token`),
        // with a suffix from the run instead of the process's randomness: the
        // invocation's index.
        let holder = format!(
            "{request_id}{}{:08x}",
            partition_loader::sql::ATTEMPT_SEPARATOR,
            lock(&self.world).invs.len()
        );
        let inv = {
            let mut w = lock(&self.world);
            w.invs.push(Slot {
                holder: holder.clone(),
                label: format!("{} {timeout_s}s", job_label(&job)),
                alive: true,
                waiting: Waiting::Idle,
                reply: None,
                call_deadline: None,
                leaves: false,
                timeout_at: Instant::now() + timeout,
                deadline,
                started: Instant::now(),
                job: job.clone(),
            });
            w.invs.len() - 1
        };
        let loader = Loader::new(
            self.config.clone(),
            SimWarehouse {
                world: self.world.clone(),
                inv,
            },
            SimStorage {
                world: self.world.clone(),
                inv,
            },
        )
        .with_gate_mode(if !self.work.gate {
            partition_loader::run::gate::GateMode::Off
        } else if self.work.gate_reads_first {
            partition_loader::run::gate::GateMode::ReadsFirst
        } else {
            partition_loader::run::gate::GateMode::On
        });
        let fut: Pin<Box<dyn Future<Output = Finished>>> =
            match job {
                Job::Event { event, .. } | Job::Redrive(event) => Box::pin(async move {
                    Finished::Event(loader.handle(&event, &holder, deadline).await)
                }),
                Job::Sqs(messages) => {
                    let records: Vec<Value> = messages
                        .iter()
                        .map(|m| {
                            json!({"messageId": m.id, "receiptHandle": format!("rh-{}", m.id),
                           "body": m.event.to_string(),
                           "attributes": {"ApproximateReceiveCount": m.receives.to_string()},
                           "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                           "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events",
                           "awsRegion": "us-east-1"})
                        })
                        .collect();
                    let sqs = match batch::classify(json!({ "Records": records })) {
                        Ok(Invocation::SqsBatch(b)) => Some(b),
                        _ => None,
                    };
                    Box::pin(async move {
                        let Some(sqs) = sqs else {
                            return Finished::Sqs {
                                failed: Vec::new(),
                                ok: false,
                            };
                        };
                        let r = loader.handle_batch(&sqs, &holder, deadline).await;
                        let v = serde_json::to_value(&r.response).unwrap_or_default();
                        let failed = v["batchItemFailures"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|f| f["itemIdentifier"].as_str().map(String::from))
                            .collect();
                        Finished::Sqs {
                            failed,
                            ok: r.errors.is_empty(),
                        }
                    })
                }
                Job::Sweep => Box::pin(async move {
                    Finished::Many(loader.sweep(&holder, SWEEP_LOOK_BACK_DAYS, deadline).await)
                }),
                Job::Backfill(prefix) => Box::pin(async move {
                    match loader
                        .backfill(BUCKET, &prefix, &holder, BACKFILL_PER_PARTITION)
                        .await
                    {
                        Ok(v) => Finished::Many(v),
                        Err(e) => Finished::Many(vec![Err(e)]),
                    }
                }),
            };
        self.futs.push(Some(fut));
        self.poll(inv);
    }

    fn poll(&mut self, inv: usize) {
        let Some(fut) = self.futs[inv].as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Pending => {
                let mut w = lock(&self.world);
                if w.invs[inv].waiting == Waiting::Idle {
                    w.db.fatal.get_or_insert(format!(
                        "invocation {inv} waits on something other than a gate (a sleep?)"
                    ));
                }
            }
            Poll::Ready(out) => {
                self.futs[inv] = None;
                self.finished(inv, Some(out));
            }
        }
    }

    fn kill(&mut self, inv: usize) {
        lock(&self.world).killed.insert(inv);
        self.futs[inv] = None;
        self.finished(inv, None);
    }

    /// An invocation ended (`None`: killed): the invariant on success, then Lambda's
    /// retry policy or the queue's redelivery.
    fn finished(&mut self, inv: usize, out: Option<Finished>) {
        let (job, holder, left, forced) = {
            let mut w = lock(&self.world);
            let slot = &mut w.invs[inv];
            slot.alive = false;
            if let Waiting::Statement(n) = slot.waiting {
                w.db.statements[n].waited_for = false;
            }
            w.invs[inv].waiting = Waiting::Idle;
            let (deadline, started) = (w.invs[inv].deadline, w.invs[inv].started);
            // Less than the drain's reserve left at its end: its release may have been
            // the deadline's, which leaves wake-ups to the next holder by design.
            let reserve = partition_loader::protocol::lease::reserve(deadline - started);
            // A backfill gives each partition its own deadline (BACKFILL_PER_PARTITION
            // from its start, not the function's): a clock jump past it forces the
            // release as the function's deadline would.
            let per_partition = matches!(w.invs[inv].job, Job::Backfill(_))
                && Instant::now()
                    >= started + BACKFILL_PER_PARTITION
                        - partition_loader::protocol::lease::reserve(BACKFILL_PER_PARTITION);
            (
                w.invs[inv].job.clone(),
                w.invs[inv].holder.clone(),
                w.left_behind.get(&inv).copied().unwrap_or(0),
                Instant::now() + reserve >= deadline || per_partition,
            )
        };
        let success = match &out {
            Some(Finished::Event(r)) => r.is_ok(),
            Some(Finished::Sqs { ok, .. }) => *ok,
            Some(Finished::Many(v)) => v.iter().all(|r| r.is_ok()),
            None => false,
        };
        let verdict = match &out {
            None => "killed".to_string(),
            Some(Finished::Event(Ok(o))) => format!("ok {}", o.to_json()),
            Some(Finished::Event(Err(e))) => format!("error {}: {e}", e.error_type()),
            Some(Finished::Sqs { failed, .. }) => format!("batch, failed messages {failed:?}"),
            Some(Finished::Many(v)) => format!(
                "{} results, errors: {:?}",
                v.len(),
                v.iter()
                    .filter_map(|r| r.as_ref().err().map(|e| e.error_type()))
                    .collect::<Vec<_>>()
            ),
        };
        self.chooser
            .trail
            .push(format!("       inv {inv} {holder} ended: {verdict}"));
        if success {
            if let Some(v) = invariants::holder_drained(&holder, left, forced) {
                let mut w = lock(&self.world);
                if w.violation.is_none() {
                    w.violation = Some(v);
                }
            }
        }
        match job {
            Job::Event {
                event,
                request_id,
                attempt,
            } if !success => {
                if attempt < ASYNC_ATTEMPTS {
                    self.pool.push(Pending {
                        event,
                        retry: Some((request_id, attempt + 1)),
                        sqs: None,
                    });
                } else {
                    self.dlq.push(event);
                }
            }
            Job::Sqs(messages) => {
                let failed: Vec<String> = match &out {
                    Some(Finished::Sqs { failed, .. }) => failed.clone(),
                    _ => messages.iter().map(|m| m.id.clone()).collect(),
                };
                for m in messages.into_iter().filter(|m| failed.contains(&m.id)) {
                    if m.receives >= SQS_RECEIVES {
                        self.dlq.push(m.event);
                    } else {
                        self.pool.push(Pending {
                            event: m.event,
                            retry: None,
                            sqs: Some((m.id, m.receives)),
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

fn job_label(job: &Job) -> String {
    match job {
        Job::Event { attempt, .. } => format!("event attempt {attempt}"),
        Job::Sqs(m) => format!("SQS batch of {}", m.len()),
        Job::Sweep => "sweep".into(),
        Job::Backfill(p) => format!("backfill {p}"),
        Job::Redrive(_) => "redrive".into(),
    }
}

/// A Data API status change as EventBridge delivers it
/// (<https://docs.aws.amazon.com/redshift/latest/mgmt/data-api-monitoring-events.html>).
fn status_change(name: &str, id: &str, state: &str) -> Value {
    json!({
        "version": "0", "id": "sim", "detail-type": "Redshift Data Statement Status Change",
        "source": "aws.redshift-data", "account": "123456789012",
        "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:redshift-serverless:us-east-1:123456789012:workgroup/sim"],
        "detail": {"principal": "arn:aws:iam::123456789012:role/loader",
            "statementName": name, "statementId": id, "redshiftQueryId": -1,
            "state": state, "rows": 0, "expireAt": 1767312000}
    })
}

/// An EventBridge "Object Created" event.
fn object_created(key: &str, etag: &str) -> Value {
    json!({
        "version": "0", "id": "sim", "detail-type": "Object Created", "source": "aws.s3",
        "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
        "resources": [],
        "detail": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": 100, "etag": etag}}
    })
}
