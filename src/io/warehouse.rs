//! The Redshift Data API adapter: submit, poll until done, read results.

use std::future::Future;
use std::time::Duration;

use aws_sdk_redshiftdata::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_redshiftdata::types::{Field, SqlParameter, StatusString};
use aws_sdk_redshiftdata::Client;
use tokio::time::Instant;

use crate::error::LoaderError;
use crate::lake::config::{ClusterAuth, RedshiftTarget};
use crate::protocol::backoff::Backoff;

/// One result row; `None` is SQL NULL. Numbers come back as their decimal text.
pub type Row = Vec<Option<String>>;

/// What the loader needs from Redshift. Implemented by [`DataApi`]; small so the
/// handler's flow reads without the SDK's detail.
pub trait Warehouse: Send + Sync {
    /// Runs the statements as one transaction and waits for the end; returns the batch
    /// id. Serialization conflicts (1023) and throttling are retried here.
    fn run_batch(
        &self,
        sqls: Vec<String>,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, LoaderError>> + Send;

    /// Runs one statement with named `:parameters` and waits for the end.
    fn run(
        &self,
        sql: String,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, LoaderError>> + Send;

    /// All rows of a finished statement (`<batch id>:<n>` for a batch's n-th statement).
    fn rows(
        &self,
        statement_id: String,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Row>, LoaderError>> + Send;

    /// Runs a load batch under `name` (the Data API's StatementName, [`crate::protocol::lease::
    /// statement_name`]) with a completion event, and waits for its end until
    /// `leave_at`; then leaves it running (never cancels: the statement holds the lease,
    /// issue 21.1). Conflicts are resubmitted as by [`Warehouse::run_batch`]. The
    /// default waits for the end (a warehouse without statements to leave).
    fn run_load_batch(
        &self,
        sqls: Vec<String>,
        name: String,
        leave_at: Instant,
    ) -> impl Future<Output = Result<LoadEnd, LoaderError>> + Send {
        let _ = name;
        let run = self.run_batch(sqls, leave_at);
        async move { run.await.map(LoadEnd::Committed) }
    }

    /// The id of a statement named `name` that has not ended (SUBMITTED, PICKED or
    /// STARTED), if any. Consistent with [`Warehouse::run_load_batch`]'s default, which
    /// never leaves one: `None`.
    fn running_statement(
        &self,
        name: String,
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<String>, LoaderError>> + Send {
        let _ = (name, deadline);
        async { Ok(None) }
    }

    /// How a statement ended: `(status, error)` as DescribeStatement says
    /// (`FINISHED` / `FAILED` / `ABORTED`, or a status of one still running).
    fn statement_status(
        &self,
        statement_id: String,
        deadline: Instant,
    ) -> impl Future<Output = Result<(String, Option<String>), LoaderError>> + Send {
        let _ = (statement_id, deadline);
        async { Ok(("FINISHED".to_string(), None)) }
    }

    /// Submits one statement and leaves it running (upkeep's VACUUM: the Data API keeps
    /// a statement up to 24 hours): waits at most `settle` for an early end, such as a
    /// refusal, and never cancels. `Ok(true)`: finished; `Ok(false)`: still running.
    /// The default waits for the end (for warehouses without statements to leave).
    fn submit_and_leave(
        &self,
        sql: String,
        settle: Duration,
        deadline: Instant,
    ) -> impl Future<Output = Result<bool, LoaderError>> + Send {
        let _ = settle;
        let run = self.run(sql, Vec::new(), deadline);
        async move { run.await.map(|_| true) }
    }
}

/// How a load batch left the invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadEnd {
    /// Committed (its id).
    Committed(String),
    /// Still running in Redshift when the invocation had to go (its id).
    Running(String),
}

/// The Data API's StatementName limit: "Length Constraints: Minimum length of 0.
/// Maximum length of 500." (ExecuteStatement / BatchExecuteStatement request syntax,
/// https://docs.aws.amazon.com/redshift-data/latest/APIReference/API_BatchExecuteStatement.html).
pub const MAX_STATEMENT_NAME: usize = 500;

/// The longest WaitTimeSeconds the Data API takes ("The maximum value is 30 seconds",
/// DescribeStatement's WaitTimeSeconds in aws-sdk-redshiftdata 1.126).
const MAX_WAIT_SECONDS: u64 = 30;

/// The poll schedule of DescribeStatement: pauses grow from `POLL_FIRST` (short
/// statements, such as the acquire batch, end within the first polls) to `POLL_CAP`. The
/// time from a statement's end to the invocation noticing it is at most one pause, so
/// the cap bounds it: measured with 2 s, 0.5-1.8 s passed after a load batch ended
/// (BENCHMARKS.md, cost_bench); 1 s halves that bound for one DescribeStatement per
/// second per waiting invocation, far below the Data API's request quotas.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_CAP: Duration = Duration::from_secs(1);
/// How often a statement that failed with a serialization conflict is resubmitted.
const CONFLICT_ATTEMPTS: u32 = 4;
/// How often a throttled or network-failed API call is repeated (on top of the SDK's own
/// retries).
const CALL_ATTEMPTS: u32 = 8;

pub struct DataApi {
    client: Client,
    target: RedshiftTarget,
    database: String,
    /// DescribeStatement waits with WaitTimeSeconds (false: polls only, as before
    /// issue 21.3; `examples/cost_bench.rs` compares the two).
    wait_time: bool,
}

enum Submit {
    Batch(Vec<String>),
    One(String, Vec<(&'static str, String)>),
    /// A load batch: named, with a completion event to EventBridge (issue 21.2).
    Load(Vec<String>, String),
}

/// Sets the database and the workgroup, or the cluster with its credentials, on a
/// BatchExecuteStatement or ExecuteStatement builder. A macro because the two SDK
/// builders have these setters in common but share no trait.
macro_rules! addressed {
    ($req:expr, $api:expr) => {{
        let req = $req.database(&$api.database);
        match &$api.target {
            RedshiftTarget::Serverless { workgroup } => req.workgroup_name(workgroup),
            RedshiftTarget::Cluster { cluster_id, auth } => {
                let req = req.cluster_identifier(cluster_id);
                match auth {
                    ClusterAuth::DbUser(u) => req.db_user(u),
                    ClusterAuth::SecretArn(s) => req.secret_arn(s),
                }
            }
        }
    }};
}

impl DataApi {
    pub fn new(client: Client, target: RedshiftTarget, database: String) -> DataApi {
        DataApi {
            client,
            target,
            database,
            wait_time: true,
        }
    }

    /// Polls DescribeStatement without WaitTimeSeconds (the schedule before issue
    /// 21.3), for comparing call counts.
    pub fn polling_only(mut self) -> DataApi {
        self.wait_time = false;
        self
    }

    /// Submits `sqls` as one transaction without waiting for it; the logical submission
    /// is named by `client_token` (see `submit`). [`DataApi::wait`] waits for the end.
    pub async fn submit_batch(
        &self,
        sqls: Vec<String>,
        client_token: &str,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        self.submit(&Submit::Batch(sqls), client_token, deadline)
            .await
    }

    /// Sends one logical submission and returns its statement id. A dispatch failure,
    /// timeout or 5xx may hide a request that did reach the service, so every transport
    /// retry repeats the same `client_token`: the service then answers with the first
    /// request's statement id instead of running the SQL a second time.
    async fn submit(
        &self,
        what: &Submit,
        client_token: &str,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        let id = match what {
            Submit::Batch(sqls) => {
                let out = retrying(deadline, || {
                    let req = self
                        .client
                        .batch_execute_statement()
                        .set_sqls(Some(sqls.clone()))
                        .client_token(client_token);
                    addressed!(req, self).send()
                })
                .await?;
                out.id().map(str::to_string)
            }
            Submit::Load(sqls, name) => {
                let out = retrying(deadline, || {
                    let req = self
                        .client
                        .batch_execute_statement()
                        .set_sqls(Some(sqls.clone()))
                        .statement_name(name)
                        .with_event(true)
                        .client_token(client_token);
                    addressed!(req, self).send()
                })
                .await?;
                out.id().map(str::to_string)
            }
            Submit::One(sql, params) => {
                let params = params
                    .iter()
                    .map(|(name, value)| {
                        SqlParameter::builder()
                            .name(*name)
                            .value(value)
                            .build()
                            .map_err(|e| LoaderError::Warehouse {
                                message: format!("parameter {name}: {e}"),
                                retryable: false,
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let out = retrying(deadline, || {
                    let req = self
                        .client
                        .execute_statement()
                        .sql(sql)
                        // No Parameters member at all without parameters: the API
                        // reference gives the array a minimum of one item (stricter
                        // reading where an empty array's fate is not documented).
                        .set_parameters((!params.is_empty()).then(|| params.clone()))
                        .client_token(client_token);
                    addressed!(req, self).send()
                })
                .await?;
                out.id().map(str::to_string)
            }
        };
        id.ok_or_else(|| LoaderError::Warehouse {
            message: "submit returned no statement id".into(),
            retryable: true,
        })
    }

    /// Waits for the statement's end until the deadline passes (then cancels it).
    pub async fn wait(&self, id: &str, deadline: Instant) -> Result<(), LoaderError> {
        self.wait_or_leave(id, deadline, false).await.map(|_| ())
    }

    /// Waits for the statement's end with DescribeStatement's WaitTimeSeconds (one call
    /// answers when the statement ends or after up to 30 s, instead of a poll every
    /// 50 ms-1 s; issue 21.3), until `deadline`. Then cancels it (`Timeout`), or with
    /// `leave` returns `Ok(false)` and leaves it running. `Ok(true)`: finished.
    async fn wait_or_leave(
        &self,
        id: &str,
        deadline: Instant,
        leave: bool,
    ) -> Result<bool, LoaderError> {
        let mut backoff = Backoff::new(POLL_FIRST, POLL_CAP);
        loop {
            // Whole seconds that still fit before the deadline; 0 asks without waiting.
            let wait = if self.wait_time {
                deadline
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .saturating_sub(1)
                    .min(MAX_WAIT_SECONDS)
            } else {
                0
            };
            let asked = Instant::now();
            let out = retrying(deadline + Duration::from_secs(wait), || {
                self.client
                    .describe_statement()
                    .id(id)
                    .wait_time_seconds(wait as i32)
                    .send()
            })
            .await?;
            let status = out.status().cloned().unwrap_or(StatusString::Submitted);
            match status {
                StatusString::Finished => {
                    record_copy_query_ids(&out);
                    return Ok(true);
                }
                StatusString::Failed => {
                    return Err(LoaderError::StatementFailed {
                        statement_id: id.to_string(),
                        message: out.error().unwrap_or(status.as_str()).to_string(),
                    })
                }
                // Not our cancel (that one ends below, as Timeout): someone else's, WLM's
                // or a restart's. Transient whatever its words (`crate::protocol::failure`).
                StatusString::Aborted => {
                    return Err(LoaderError::StatementAborted {
                        statement_id: id.to_string(),
                        message: out.error().unwrap_or(status.as_str()).to_string(),
                    })
                }
                _ => {}
            }
            // A call that waited its WaitTimeSeconds out asks again at once; one that
            // answered early without an end (no time for a whole second, or a service
            // that ignores the member) pauses as the poll schedule says.
            let pause = if wait > 0 && asked.elapsed() >= Duration::from_secs(wait) {
                Duration::ZERO
            } else {
                backoff.next_pause()
            };
            if Instant::now() + pause >= deadline {
                if leave {
                    return Ok(false);
                }
                // Best effort: if the cancel fails, the lease still expires by its TTL.
                let _ = self.client.cancel_statement().id(id).send().await;
                return Err(LoaderError::Timeout {
                    statement_id: id.to_string(),
                    status: status.as_str().to_string(),
                });
            }
            tokio::time::sleep(pause).await;
        }
    }

    async fn execute(&self, what: Submit, deadline: Instant) -> Result<String, LoaderError> {
        match self.execute_or_leave(what, deadline, false).await? {
            LoadEnd::Committed(id) | LoadEnd::Running(id) => Ok(id),
        }
    }

    async fn execute_or_leave(
        &self,
        what: Submit,
        deadline: Instant,
        leave: bool,
    ) -> Result<LoadEnd, LoaderError> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut attempt = 1;
        loop {
            // A resubmit after a conflict is a new logical submission: the old token
            // would only bring back the failed statement.
            let client_token = uuid::Uuid::new_v4().to_string();
            let id = self.submit(&what, &client_token, deadline).await?;
            match self.wait_or_leave(&id, deadline, leave).await {
                Err(LoaderError::StatementFailed { message, .. })
                    if is_serialization_conflict(&message) =>
                {
                    // The whole transaction rolled back; running it again is safe.
                    if attempt >= CONFLICT_ATTEMPTS || Instant::now() >= deadline {
                        return Err(LoaderError::SerializationConflict(message));
                    }
                    tracing::warn!(statement_id = %id, attempt, "serialization conflict, resubmitting");
                    attempt += 1;
                    tokio::time::sleep(backoff.next_pause()).await;
                }
                Err(e) => return Err(e),
                Ok(true) => return Ok(LoadEnd::Committed(id)),
                Ok(false) => return Ok(LoadEnd::Running(id)),
            }
        }
    }
}

/// Adds the Redshift query ids of a finished batch's COPY statements to the metrics
/// (their rows are then read from `SYS_LOAD_HISTORY`, see `invocation.rs`).
fn record_copy_query_ids(
    out: &aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput,
) {
    let ids: Vec<i64> = out
        .sub_statements()
        .iter()
        .filter(|s| {
            s.query_string().is_some_and(|q| {
                q.trim_start()
                    .get(..5)
                    .is_some_and(|w| w.eq_ignore_ascii_case("COPY "))
            })
        })
        .map(|s| s.redshift_query_id())
        .filter(|id| *id > 0)
        .collect();
    if !ids.is_empty() {
        crate::run::metrics::add(|m| m.copy_query_ids.extend(ids));
    }
}

/// Redshift reports a serialization conflict as `ERROR: 1023 DETAIL: Serializable
/// isolation violation on table …`. Only that form counts: a bare "1023" may be a line
/// number or a file name in a COPY error, which must not be resubmitted. A deadlock
/// (`ERROR: deadlock detected`) aborts the transaction the same way and is resubmitted
/// too.
pub fn is_serialization_conflict(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("serializable isolation violation")
        || message.starts_with("error: deadlock detected")
        || message.match_indices("error:").any(|(at, prefix)| {
            let code = message[at + prefix.len()..].trim_start();
            code.strip_prefix("1023")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
        })
}

impl Warehouse for DataApi {
    async fn run_batch(&self, sqls: Vec<String>, deadline: Instant) -> Result<String, LoaderError> {
        self.execute(Submit::Batch(sqls), deadline).await
    }

    async fn run(
        &self,
        sql: String,
        params: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<String, LoaderError> {
        self.execute(Submit::One(sql, params), deadline).await
    }

    async fn run_load_batch(
        &self,
        sqls: Vec<String>,
        name: String,
        leave_at: Instant,
    ) -> Result<LoadEnd, LoaderError> {
        self.execute_or_leave(Submit::Load(sqls, name), leave_at, true)
            .await
    }

    async fn running_statement(
        &self,
        name: String,
        deadline: Instant,
    ) -> Result<Option<String>, LoaderError> {
        // ListStatements' StatementName matches a prefix ("You can list multiple
        // statements by providing a prefix that matches the beginning of the statement
        // name", API_ListStatements.html): the exact name is checked here. RoleLevel
        // (the default, true) lists every statement of the function's IAM role, so one
        // invocation sees another's; Status ALL, since a status filter takes one value.
        let mut token: Option<String> = None;
        loop {
            let out = retrying(deadline, || {
                self.client
                    .list_statements()
                    .statement_name(&name)
                    .role_level(true)
                    .status(StatusString::All)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
            if let Some(running) = out.statements().iter().find(|s| {
                s.statement_name() == Some(name.as_str())
                    && matches!(
                        s.status(),
                        Some(
                            StatusString::Submitted | StatusString::Picked | StatusString::Started
                        )
                    )
            }) {
                return Ok(Some(running.id().to_string()));
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(None),
            }
        }
    }

    async fn statement_status(
        &self,
        statement_id: String,
        deadline: Instant,
    ) -> Result<(String, Option<String>), LoaderError> {
        let out = retrying(deadline, || {
            self.client.describe_statement().id(&statement_id).send()
        })
        .await?;
        let status = out.status().cloned().unwrap_or(StatusString::Submitted);
        Ok((status.as_str().to_string(), out.error().map(str::to_string)))
    }

    async fn submit_and_leave(
        &self,
        sql: String,
        settle: Duration,
        deadline: Instant,
    ) -> Result<bool, LoaderError> {
        let token = uuid::Uuid::new_v4().to_string();
        let id = self
            .submit(&Submit::One(sql, Vec::new()), &token, deadline)
            .await?;
        let until = (Instant::now() + settle).min(deadline);
        let mut backoff = Backoff::new(POLL_FIRST, POLL_CAP);
        loop {
            let out =
                retrying(deadline, || self.client.describe_statement().id(&id).send()).await?;
            match out.status().cloned().unwrap_or(StatusString::Submitted) {
                StatusString::Finished => return Ok(true),
                status @ (StatusString::Failed | StatusString::Aborted) => {
                    return Err(LoaderError::StatementFailed {
                        statement_id: id,
                        message: out.error().unwrap_or(status.as_str()).to_string(),
                    })
                }
                _ => {}
            }
            let pause = backoff.next_pause();
            if Instant::now() + pause >= until {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
        }
    }

    async fn rows(&self, statement_id: String, deadline: Instant) -> Result<Vec<Row>, LoaderError> {
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = retrying(deadline, || {
                self.client
                    .get_statement_result()
                    .id(&statement_id)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
            rows.extend(
                out.records()
                    .iter()
                    .map(|r| r.iter().map(field_text).collect()),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(rows),
            }
        }
    }
}

fn field_text(f: &Field) -> Option<String> {
    match f {
        Field::StringValue(s) => Some(s.clone()),
        Field::LongValue(n) => Some(n.to_string()),
        Field::DoubleValue(d) => Some(d.to_string()),
        Field::BooleanValue(b) => Some(b.to_string()),
        Field::IsNull(_) => None,
        _ => None,
    }
}

/// Calls `f` until it succeeds, fails permanently, runs out of attempts or the deadline.
/// Throttling, too many active statements, server errors and network failures are
/// retried with jittered backoff.
pub(crate) async fn retrying<T, E, R, F, Fut>(deadline: Instant, mut f: F) -> Result<T, LoaderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
    let mut attempt = 1;
    loop {
        crate::run::metrics::add(|m| m.data_api_calls += 1);
        let err = match f().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let throttled = matches!(
            err.code(),
            Some(
                "ThrottlingException"
                    | "Throttling"
                    | "SlowDown"
                    | "ActiveStatementsExceededException"
            )
        );
        let retryable = throttled
            || matches!(
                err,
                SdkError::DispatchFailure(_)
                    | SdkError::TimeoutError(_)
                    | SdkError::ResponseError(_)
            )
            || matches!(
                err.code(),
                Some("InternalServerException" | "InternalError")
            )
            // "An SQL statement encountered an environmental error while running" (the
            // API's description of both): transient, `crate::protocol::failure`.
            || err
                .code()
                .is_some_and(|c| crate::protocol::failure::classify(c).kind == crate::ErrorKind::Retryable);
        let message = match (err.code(), err.message()) {
            (Some(code), Some(text)) => format!("{code}: {text}"),
            _ => DisplayErrorContext(&err).to_string(),
        };
        let pause = backoff.next_pause();
        // Throttling is retried until the deadline, not for a number of attempts: a
        // burst over the Data API's request-rate quotas slows down instead of failing
        // (issue 21 item 5). At the deadline the invocation fails Retryable
        // (`Throttled`) and its event is retried with its work kept.
        let out_of_attempts = attempt >= CALL_ATTEMPTS && !throttled;
        if !retryable || out_of_attempts || Instant::now() + pause >= deadline {
            return Err(if throttled {
                LoaderError::Throttled(message)
            } else {
                LoaderError::Warehouse { message, retryable }
            });
        }
        tracing::warn!(attempt, error = %message, "retrying AWS call");
        attempt += 1;
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_redshift_serialization_errors() {
        for message in [
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - 1234",
            "error:1023 detail: something else",
            "ERROR:  1023",
            "ERROR: 1023\n  DETAIL: the cycle is 17 (pid:17)",
            "serializable isolation violation",
            "SERIALIZABLE ISOLATION VIOLATION on table - 5",
            "ERROR: deadlock detected DETAIL: Process 1 waits for ShareLock on transaction 2",
        ] {
            assert!(is_serialization_conflict(message), "{message}");
        }
    }

    #[test]
    fn a_1023_elsewhere_in_a_message_is_not_a_conflict() {
        for message in [
            "Unmatched number of columns",
            "ERROR: Load into table 'orders' failed. Check 'stl_load_errors'. line 1023",
            "ERROR: Spectrum Scan Error: s3://lake/orders/part-1023.parquet is corrupt",
            "ERROR: 10230 unknown",
            "ERROR: 1023x",
            "error code 1023",
            "ERROR: Invalid input at line 1023, column 4",
        ] {
            assert!(!is_serialization_conflict(message), "{message}");
        }
    }
}
