//! `redshift-data-local`: the Amazon Redshift Data API, served locally and executed
//! on PostgreSQL, so the loader can be tested against real SQL and real
//! transactions without an AWS account.
//!
//! Start it with [`serve`]; point an SDK's `endpoint_url` at [`Server::endpoint_url`].

pub mod api;
pub mod events;
pub mod executor;
pub mod faults;
pub mod identity;
pub mod rbac;
pub mod results;
pub mod serializable;
pub mod server;
pub mod statements;
pub mod translate;
pub mod upkeep;
pub mod varchar;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

pub use executor::Isolation;
pub use faults::{FailCopies, FaultSet};
pub use identity::{Identities, Identity};

/// Command line and environment of the server.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "redshift-data-local", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "RDL_LISTEN", default_value = "127.0.0.1:45001")]
    pub listen: SocketAddr,
    /// PostgreSQL server; each request's Database replaces the database name.
    #[arg(long, env = "RDL_POSTGRES_URL")]
    pub postgres_url: String,
    /// S3 endpoint for COPY (path-style); defaults to AWS_ENDPOINT_URL_S3.
    #[arg(long, env = "RDL_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Isolation of a database created without ISOLATION LEVEL (Redshift's default is
    /// snapshot); `CREATE/ALTER DATABASE ... ISOLATION LEVEL` sets it per database.
    #[arg(long, env = "RDL_ISOLATION", value_enum, default_value_t = Isolation::Snapshot)]
    pub isolation: Isolation,
    /// `ACCESS_KEY_ID=USER` (repeatable; env comma-separated): calls signed with that key
    /// run as that database user (e.g. `IAMR:loader`), created on first use. Other keys
    /// run as the admin.
    #[arg(long = "identity", env = "RDL_IDENTITIES", value_delimiter = ',')]
    pub identities: Vec<String>,
    /// `SECRET_ARN=USER` (repeatable; env comma-separated): the user a secret holds.
    /// Unmapped secrets name their user (see the README).
    #[arg(long = "secret", env = "RDL_SECRETS", value_delimiter = ',')]
    pub secrets: Vec<String>,
    /// Active statements allowed at once (ActiveStatementsExceededException beyond).
    #[arg(long, env = "RDL_MAX_ACTIVE_STATEMENTS", default_value_t = 200)]
    pub max_active_statements: usize,
    /// Statements executing on PostgreSQL at once; the others wait, SUBMITTED, in a
    /// queue, as Redshift's workload management queues queries beyond its slots (a
    /// manual WLM configuration has at most 50 slots in all user queues:
    /// <https://docs.aws.amazon.com/redshift/latest/dg/cm-c-defining-query-queues.html>).
    /// Keep it well under PostgreSQL's max_connections: each running statement holds
    /// a connection (and a failed COPY briefly a second one).
    #[arg(long, env = "RDL_CONCURRENCY", default_value_t = executor::DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Fault sets to start with: one JSON object or an array (see /_admin/faults).
    #[arg(long, env = "RDL_FAULTS")]
    pub faults: Option<String>,
    /// Count `LOCK` as a write in the table-level SERIALIZABLE check. Redshift's
    /// documentation leaves it open; the default is the stricter reading (a write), so
    /// that a protocol that passes here passes under both (see ARCHITECTURE.md).
    /// `--lock-is-write false` applies the other reading.
    #[arg(long, env = "RDL_LOCK_IS_WRITE", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub lock_is_write: bool,
    /// `WithEvent`: the SQS queue URL that receives each such statement's "Redshift
    /// Data Statement Status Change" event, as an EventBridge rule targeting the queue
    /// would deliver it (see `events.rs`); unset: no events are sent.
    #[arg(long, env = "RDL_EVENT_QUEUE_URL")]
    pub event_queue_url: Option<String>,
}

impl Config {
    /// Defaults for everything but the PostgreSQL URL; listens on an ephemeral port.
    pub fn new(postgres_url: impl Into<String>) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            postgres_url: postgres_url.into(),
            s3_endpoint: None,
            isolation: Isolation::Snapshot,
            identities: Vec::new(),
            secrets: Vec::new(),
            max_active_statements: 200,
            concurrency: executor::DEFAULT_CONCURRENCY,
            faults: None,
            lock_is_write: true,
            event_queue_url: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid --postgres-url: {0}")]
    PostgresUrl(String),
    #[error("invalid RDL_FAULTS: {0}")]
    Faults(String),
    #[error("invalid --identity / --secret: {0}")]
    Identities(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs until the server stops on its own (it does not, unless it fails).
    pub async fn wait(self) -> std::io::Result<()> {
        let Server { task, shutdown, .. } = self;
        let result = task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        drop(shutdown);
        result
    }

    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(());
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

fn parse_faults(text: &str) -> Result<Vec<FaultSet>, StartError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| StartError::Faults(e.to_string()))?;
    let sets: Vec<FaultSet> = match value {
        serde_json::Value::Array(_) => serde_json::from_value(value),
        other => serde_json::from_value(other).map(|s| vec![s]),
    }
    .map_err(|e| StartError::Faults(e.to_string()))?;
    for set in &sets {
        set.validate().map_err(StartError::Faults)?;
    }
    Ok(sets)
}

async fn s3_client(endpoint: Option<String>) -> aws_sdk_s3::Client {
    use aws_config::meta::region::RegionProviderChain;
    let region = RegionProviderChain::default_provider().or_else("us-east-1");
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
    // A local S3 accepts any key; without one in the environment the default
    // chain would wait for instance metadata that is not there.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "redshift-data-local",
        ));
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared).force_path_style(true);
    if let Some(endpoint) = endpoint.or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok()) {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Binds the listener and serves in a background task.
pub async fn serve(config: Config) -> Result<Server, StartError> {
    let postgres = tokio_postgres::Config::from_str(&config.postgres_url)
        .map_err(|e| StartError::PostgresUrl(e.to_string()))?;
    let faults = Arc::new(faults::Faults::default());
    if let Some(text) = &config.faults {
        for set in parse_faults(text)? {
            faults.add(set);
        }
    }
    let identities = Identities {
        access_keys: Identities::parse_pairs(&config.identities.join(","))
            .map_err(StartError::Identities)?,
        secrets: Identities::parse_pairs(&config.secrets.join(","))
            .map_err(StartError::Identities)?,
    };
    let registry = Arc::new(statements::Registry::new(config.max_active_statements));
    let s3 = s3_client(config.s3_endpoint.clone()).await;
    let executor = Arc::new(
        executor::Executor::new(
            postgres,
            config.isolation,
            s3,
            Arc::clone(&faults),
            Arc::clone(&registry),
            config.concurrency as usize,
        )
        .lock_is_write(config.lock_is_write),
    );
    let events = match config.event_queue_url.clone() {
        Some(url) => Some(Arc::new(events::Events::new(url).await)),
        None => None,
    };
    let state = Arc::new(server::AppState {
        registry,
        executor,
        faults,
        identities,
        events,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = server::router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(
        %addr,
        isolation = ?config.isolation,
        concurrency = config.concurrency,
        "redshift-data-local listening"
    );
    Ok(Server {
        addr,
        shutdown,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_env_takes_one_set_or_a_list() {
        assert_eq!(
            parse_faults(r#"{"latency_ms": 5}"#).unwrap()[0].latency_ms,
            5
        );
        assert_eq!(
            parse_faults(r#"[{"workgroup": "a"}, {}]"#).unwrap().len(),
            2
        );
        assert!(parse_faults(r#"{"latency": 5}"#).is_err());
        assert!(parse_faults(r#"{"throttle_fraction": 3}"#).is_err());
    }
}
