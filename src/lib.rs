//! partition-loader: loads new S3 partitions into Amazon Redshift exactly once, with a
//! lease and a ledger that live in Redshift. See ARCHITECTURE.md for the map.

pub mod error;
pub mod io;
pub mod lake;
pub mod ops;
pub mod protocol;
pub mod run;
pub mod sql;

pub use error::{ErrorKind, LoaderError};
pub use lake::config::Config;
pub use run::handler::Loader;
pub use run::outcome::Outcome;

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
