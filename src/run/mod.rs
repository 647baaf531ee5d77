//! The entry shapes: the Lambda handler (one SQS batch, one invocation), the sweep, the
//! backfill, redrive, and the metrics and outcome they report. Each drives protocol steps
//! through the `io` traits. Invariant: decisions stay in `protocol`; this folder sequences
//! them and reports. Arrows: `run` → `protocol`, `sql`, `lake`, `io`, `ops::upkeep`.

pub mod backfill;
pub mod batch;
pub mod completion;
pub mod gate;
pub mod handler;
pub mod invocation;
pub mod job;
pub mod metrics;
mod new_columns;
pub mod outcome;
pub mod quarantine;
pub mod redrive;
pub mod sweep;
pub mod sweep_gate;
