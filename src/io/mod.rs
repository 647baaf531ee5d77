//! The adapters: the `Warehouse` trait and its Redshift Data API implementation, the
//! `Storage` trait and its S3 implementation. Invariant: every Redshift and S3 call of a load
//! goes through these two traits (SSM/S3 for the routes at cold start are
//! `lake::routes_source`'s, SQS for redrive `run::redrive`'s), so tests and the
//! simulation can stand in for them. Arrows: `io` → `protocol::{plan, backoff, failure}`,
//! `lake::config`, `error`, and `run::metrics` (the task-local figures it adds to).

pub mod sdk;
pub mod storage;
pub mod warehouse;
