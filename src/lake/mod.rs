//! What the user's data and settings mean: S3 events, routes, partitions, the loader's
//! configuration, COPY options, manifests, column matching and file sizes. Invariant: no
//! Redshift I/O here (only `routes_source` reads the routes from SSM or S3,
//! through the AWS SDK, at cold start). Arrows: `lake` → `sql` (identifiers and
//! literals), `protocol::plan` (ETags, listed objects), `error`; `config` also names `ops::upkeep` and `run::sweep` settings.

pub mod config;
pub mod copy_options;
pub mod csv_header;
pub mod event;
pub mod file_sizes;
pub mod manifest;
pub mod markers;
pub mod partition;
pub mod route;
pub mod routes_source;
pub mod schema_match;
pub mod watermark;
