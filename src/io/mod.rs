//! The adapters: the `Warehouse` trait and its Redshift Data API implementation, the
//! `Storage` trait and its S3 implementation. Invariant: every AWS call of the loader goes
//! through these two traits (except `lake::routes_source`'s cold-start read), so tests and
//! the simulation can stand in for them. Arrows: `io` → `protocol::{failure, backoff}`,
//! `error`.

pub mod storage;
pub mod warehouse;
