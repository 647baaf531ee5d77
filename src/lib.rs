//! partition-loader: loads new S3 partitions into Amazon Redshift exactly once, with a
//! lease and a ledger that live in Redshift. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod backfill;
pub mod backoff;
pub mod batch;
pub mod config;
pub mod copy_options;
pub mod doctor;
pub mod error;
pub mod event;
pub mod failure;
pub mod file_sizes;
pub mod handler;
pub mod invocation;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod outcome;
pub mod partition;
pub mod plan;
pub mod redrive;
pub mod route;
pub mod routes_source;
pub mod schema_match;
pub mod sql;
pub mod storage;
pub mod sweep;
pub mod upkeep;
pub mod warehouse;

pub use config::Config;
pub use error::{ErrorKind, LoaderError};
pub use handler::Loader;
pub use outcome::Outcome;

/// JSON logs on stderr (Lambda sends both streams to CloudWatch; stdout stays free for
/// loaderctl's JSON lines); `RUST_LOG` filters, default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
