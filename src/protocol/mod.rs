//! The protocol: the lease steps (take, queue, drain, fence, release), the plan of a
//! load, and the failure classes. Invariant: no AWS types here; the only I/O is through
//! the [`crate::io::warehouse::Warehouse`] trait, so the simulation (`tests/sim/`) runs
//! this same code against its model of Redshift. Arrows: `protocol` → `sql`, `lake`,
//! `io` (the trait and its `Row` only), `error`.

pub mod backoff;
pub mod failure;
pub mod gate;
pub mod isolate;
pub mod lease;
pub mod plan;
