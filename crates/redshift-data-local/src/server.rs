//! HTTP routing: `POST /` with `X-Amz-Target: RedshiftData.<Operation>` (awsJson1_1,
//! any SigV4 signature accepted), and the fault-injection admin routes.

use crate::api::{
    ApiError, BatchExecuteStatementRequest, CancelStatementResponse, ExecuteStatementRequest,
    IdRequest, ListStatementsRequest, SqlParameter, SubmitOptions, SubmitResponse, Target,
};
use crate::executor::Executor;
use crate::faults::{FaultSet, Faults};
use crate::identity::{self, Identities};
use crate::statements::{Mode, Registry, Statement, Submitted};
use crate::translate;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// BatchExecuteStatement's limit on Sqls, as the service's.
const MAX_BATCH_SQLS: usize = 40;
/// Redshift's maximum statement size (100 KB).
const MAX_SQL_BYTES: usize = 100 * 1024;
/// WaitTimeSeconds' maximum, as the service's.
const MAX_WAIT_SECONDS: i64 = 30;

pub struct AppState {
    pub registry: Arc<Registry>,
    pub executor: Arc<Executor>,
    pub faults: Arc<Faults>,
    pub identities: Identities,
    /// Where `WithEvent` statements' status changes go (`None`: nowhere).
    pub events: Option<Arc<crate::events::Events>>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(api))
        .route(
            "/_admin/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_admin/faults/injected", get(injected_faults))
        .with_state(state)
}

async fn api(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("RedshiftData."))
        .unwrap_or_default()
        .to_string();
    let result = match parse_body(&body) {
        Ok(value) => {
            let scope = scope_of(&value, &state.registry);
            let latency = state.faults.latency(scope.as_deref());
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if state.faults.throttle(scope.as_deref())
                || state.faults.rate_limited(scope.as_deref(), &operation)
            {
                Err(ApiError::Throttling)
            } else {
                let access_key = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(identity::access_key_id);
                dispatch(&state, &operation, value, access_key).await
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(value) => {
            tracing::debug!(%operation, "ok");
            respond(StatusCode::OK, None, &value)
        }
        Err(error) => {
            tracing::debug!(%operation, code = error.code(), message = %error, "refused");
            let status =
                StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            respond(status, Some(error.code()), &error.body())
        }
    }
}

fn respond(status: StatusCode, error_type: Option<&str>, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", id);
    }
    if let Some(Ok(code)) = error_type.map(HeaderValue::from_str) {
        headers.insert("x-amzn-errortype", code);
    }
    response
}

fn parse_body(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Validation(format!("Malformed request body: {e}")))
}

/// The WorkgroupName/ClusterIdentifier a call is about, for scoping faults.
fn scope_of(body: &serde_json::Value, registry: &Registry) -> Option<String> {
    ["WorkgroupName", "ClusterIdentifier"]
        .iter()
        .find_map(|k| body.get(k).and_then(|v| v.as_str()).map(str::to_string))
        .or_else(|| {
            body.get("Id")
                .and_then(|v| v.as_str())
                .and_then(|id| registry.scope_of(id))
        })
}

fn request<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::Validation(format!("Invalid request: {e}")))
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.to_string()))
}

async fn dispatch(
    state: &Arc<AppState>,
    operation: &str,
    body: serde_json::Value,
    access_key: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
    match operation {
        "ExecuteStatement" => json(&execute_statement(state, request(body)?, access_key).await?),
        "BatchExecuteStatement" => {
            json(&batch_execute_statement(state, request(body)?, access_key).await?)
        }
        "DescribeStatement" => {
            let req: IdRequest = request(body)?;
            let id = required_id(&req)?;
            wait_as_asked(state, &id, req.wait_time_seconds).await?;
            json(&state.registry.describe(&id)?)
        }
        "GetStatementResult" => {
            let req: IdRequest = request(body)?;
            wait_as_asked(state, &required_id(&req)?, req.wait_time_seconds).await?;
            json(
                &state
                    .registry
                    .result(&required_id(&req)?, req.next_token.as_deref())?,
            )
        }
        "CancelStatement" => {
            let req: IdRequest = request(body)?;
            json(&cancel_statement(state, &required_id(&req)?)?)
        }
        "ListStatements" => {
            let req: ListStatementsRequest = request(body)?;
            json(&state.registry.list(&req)?)
        }
        "" => Err(ApiError::UnknownOperation(
            "Missing or malformed X-Amz-Target header (expected RedshiftData.<Operation>)".into(),
        )),
        other => Err(ApiError::UnknownOperation(format!(
            "Operation {other} is not supported by redshift-data-local"
        ))),
    }
}

/// WaitTimeSeconds of DescribeStatement and GetStatementResult: "The number of seconds
/// to wait for the SQL statement to complete execution before returning the
/// description/result. The maximum value is 30 seconds." (the SDK's documentation of
/// the members). A sub-statement id waits for its own sub-statement (an AUTO_COMMIT
/// batch ends its subs one by one); an unknown id answers at once (the operation then
/// says ResourceNotFound).
async fn wait_as_asked(
    state: &Arc<AppState>,
    id: &str,
    wait_time_seconds: Option<i64>,
) -> Result<(), ApiError> {
    check_wait(wait_time_seconds)?;
    if let Some(seconds) = wait_time_seconds.filter(|s| *s > 0) {
        wait_until_done(
            &state.registry,
            id,
            Duration::from_secs(seconds.unsigned_abs()),
        )
        .await;
    }
    Ok(())
}

fn check_wait(wait_time_seconds: Option<i64>) -> Result<(), ApiError> {
    if wait_time_seconds.is_some_and(|w| !(0..=MAX_WAIT_SECONDS).contains(&w)) {
        return Err(ApiError::Validation(format!(
            "1 validation error detected: Value at 'waitTimeSeconds' failed to satisfy \
             constraint: Member must be between 0 and {MAX_WAIT_SECONDS}"
        )));
    }
    Ok(())
}

fn required_id(req: &IdRequest) -> Result<String, ApiError> {
    req.id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::Validation("1 validation error detected: Value null at 'id' failed to satisfy constraint: Member must not be null".into()))
}

/// Exactly one of WorkgroupName and ClusterIdentifier; Database is required.
fn validate_target(target: &Target) -> Result<(), ApiError> {
    match (&target.workgroup_name, &target.cluster_identifier) {
        (Some(_), Some(_)) => {
            return Err(ApiError::Validation(
                "Either ClusterIdentifier or WorkgroupName must be specified, but not both".into(),
            ))
        }
        (None, None) => {
            return Err(ApiError::Validation(
                "Either ClusterIdentifier or WorkgroupName must be specified".into(),
            ))
        }
        _ => {}
    }
    if target.database.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::Validation(
            "1 validation error detected: Value null at 'database' failed to satisfy constraint: Member must not be null".into(),
        ));
    }
    Ok(())
}

fn validate_options(options: &SubmitOptions) -> Result<(), ApiError> {
    if options.session_id.is_some() || options.session_keep_alive_seconds.is_some() {
        return Err(ApiError::Validation(
            "Sessions (SessionId, SessionKeepAliveSeconds) are not supported by redshift-data-local".into(),
        ));
    }
    match options.result_format.as_deref() {
        None | Some("JSON") => {}
        Some(other) => {
            return Err(ApiError::Validation(format!(
                "ResultFormat {other} is not supported by redshift-data-local (only JSON)"
            )))
        }
    }
    check_wait(options.wait_time_seconds)
}

fn validate_sql(sql: &str) -> Result<(), ApiError> {
    if sql.trim().is_empty() {
        return Err(ApiError::Validation(
            "SQL statement must not be empty".into(),
        ));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::Validation(format!(
            "SQL statement is {} bytes; the maximum query statement size is 100 KB",
            sql.len()
        )));
    }
    Ok(())
}

/// Binds `:name` parameters in every statement; each parameter must be used
/// somewhere, each reference must have a value.
fn bind(sqls: &[String], parameters: Option<&[SqlParameter]>) -> Result<Vec<String>, ApiError> {
    let Some(parameters) = parameters.filter(|p| !p.is_empty()) else {
        return Ok(sqls.to_vec());
    };
    // SqlParameter.value: "Length Constraints: Minimum length of 1."
    // https://docs.aws.amazon.com/redshift-data/latest/APIReference/API_SqlParameter.html
    if let Some(index) = parameters.iter().position(|p| p.value.is_empty()) {
        return Err(ApiError::Validation(format!(
            "1 validation error detected: Value '' at 'parameters.{}.member.value' failed to \
             satisfy constraint: Member must have length greater than or equal to 1",
            index + 1
        )));
    }
    let pairs: Vec<(String, String)> = parameters
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    let invalid = |e: translate::ParameterError| ApiError::Validation(e.to_string());
    let map = translate::parameter_map(&pairs).map_err(invalid)?;
    let mut used = BTreeSet::new();
    let bound = sqls
        .iter()
        .map(|sql| translate::bind_parameters(sql, &map, &mut used))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    if let Some(unused) = map.keys().find(|name| !used.contains(*name)) {
        return Err(invalid(translate::ParameterError::Unused(
            unused.to_string(),
        )));
    }
    Ok(bound)
}

async fn execute_statement(
    state: &Arc<AppState>,
    req: ExecuteStatementRequest,
    access_key: Option<&str>,
) -> Result<SubmitResponse, ApiError> {
    validate_target(&req.target)?;
    validate_options(&req.options)?;
    let sql = req.sql.clone().unwrap_or_default();
    validate_sql(&sql)?;
    let fingerprint = json(&req)?.to_string();
    submit(
        state,
        Mode::Single,
        req.target,
        req.options,
        vec![sql],
        fingerprint,
        access_key,
    )
    .await
}

async fn batch_execute_statement(
    state: &Arc<AppState>,
    req: BatchExecuteStatementRequest,
    access_key: Option<&str>,
) -> Result<SubmitResponse, ApiError> {
    validate_target(&req.target)?;
    validate_options(&req.options)?;
    let sqls = req.sqls.clone().unwrap_or_default();
    if sqls.is_empty() || sqls.len() > MAX_BATCH_SQLS {
        return Err(ApiError::Validation(format!(
            "1 validation error detected: Value at 'sqls' failed to satisfy constraint: Member must have length between 1 and {MAX_BATCH_SQLS} (got {})",
            sqls.len()
        )));
    }
    sqls.iter().try_for_each(|s| validate_sql(s))?;
    // Parameters are bound in every statement of the batch ([`bind`]): "The parameters
    // are available to all SQL statements in the batch. Each statement can reference any
    // subset of the provided parameters. Each provided parameter must be referenced by
    // at least one SQL statement in the batch." (BatchExecuteStatement's Parameters
    // member, aws-sdk-redshiftdata 1.126 and the API reference); values need length >= 1
    // as on ExecuteStatement (SqlParameter).
    let mode = match req.execution_mode.as_deref() {
        None | Some("TRANSACTION") => Mode::Transaction,
        Some("AUTO_COMMIT") => Mode::AutoCommit,
        Some(other) => {
            return Err(ApiError::Validation(format!(
                "Invalid ExecutionMode '{other}': must be TRANSACTION or AUTO_COMMIT"
            )))
        }
    };
    let fingerprint = json(&req)?.to_string();
    submit(
        state,
        mode,
        req.target,
        req.options,
        sqls,
        fingerprint,
        access_key,
    )
    .await
}

/// Binds the parameters, registers the statement (once per client token: `fingerprint`
/// tells a retry from a different request under the same token) and starts it.
async fn submit(
    state: &Arc<AppState>,
    mode: Mode,
    target: Target,
    options: SubmitOptions,
    sqls: Vec<String>,
    fingerprint: String,
    access_key: Option<&str>,
) -> Result<SubmitResponse, ApiError> {
    let identity = state.identities.derive(&target, access_key)?;
    let bound = bind(&sqls, options.parameters.as_deref())?;
    let mut statement = Statement::new(
        mode,
        target,
        options.statement_name,
        options.parameters,
        sqls.into_iter().zip(bound).collect(),
    );
    statement.identity = identity;
    let client_token = options.client_token;
    let wait_seconds = options.wait_time_seconds;
    let with_event = options.with_event == Some(true);
    let id = match state
        .registry
        .submit(statement, client_token.map(|t| (t, fingerprint)))?
    {
        Submitted::New(id) => {
            tracing::info!(statement = %id, "submitted");
            tokio::spawn(Arc::clone(&state.executor).run(id.clone()));
            if let (true, Some(events)) = (with_event, state.events.clone()) {
                // Sent when it ends, whoever waits for it (or nobody: the caller may be
                // gone; the Data API keeps a statement up to 24 hours).
                let registry = Arc::clone(&state.registry);
                let id = id.clone();
                tokio::spawn(async move {
                    wait_until_done(&registry, &id, Duration::from_secs(24 * 3600)).await;
                    if let Some(statement) = registry.get(&id) {
                        events.send(&statement).await;
                    }
                });
            }
            id
        }
        Submitted::Existing(id) => id,
    };
    if let Some(seconds) = wait_seconds.filter(|s| *s > 0) {
        wait_until_done(
            &state.registry,
            &id,
            Duration::from_secs(seconds.unsigned_abs()),
        )
        .await;
    }
    let statement = state
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::Internal(format!("statement {id} vanished")))?;
    Ok(SubmitResponse {
        id,
        created_at: statement.created_at,
        database: statement.target.database.clone().unwrap_or_default(),
        workgroup_name: statement.target.workgroup_name.clone(),
        cluster_identifier: statement.target.cluster_identifier.clone(),
        db_user: statement.target.db_user.clone(),
        secret_arn: statement.target.secret_arn.clone(),
    })
}

async fn wait_until_done(registry: &Registry, id: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let (base, sub) = match id.split_once(':') {
        Some((base, n)) => (base, n.parse::<usize>().ok()),
        None => (id, None),
    };
    while Instant::now() < deadline {
        let active = registry.get(base).is_some_and(|s| match sub {
            Some(n) => s
                .subs
                .get(n.wrapping_sub(1))
                .is_some_and(|sub| sub.status.is_active()),
            None => s.status.is_active(),
        });
        if !active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cancel_statement(state: &Arc<AppState>, id: &str) -> Result<CancelStatementResponse, ApiError> {
    state.registry.request_cancel(id)?;
    let registry = Arc::clone(&state.registry);
    let id = id.to_string();
    // The statement may not have reached PostgreSQL yet, or may be between two
    // sub-statements: keep interrupting until it has ended.
    tokio::spawn(async move {
        for _ in 0..50 {
            let Some(statement) = registry.get(&id) else {
                return;
            };
            if !statement.status.is_active() {
                return;
            }
            if let Some(token) = statement.cancel_token {
                if let Err(e) = token.cancel_query(NoTls).await {
                    tracing::debug!(statement = %id, error = %e, "cancel request failed");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Ok(CancelStatementResponse { status: true })
}

async fn list_faults(State(state): State<Arc<AppState>>) -> Json<Vec<FaultSet>> {
    Json(state.faults.list())
}

async fn add_fault(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let set: FaultSet = match serde_json::from_slice(&body) {
        Ok(set) => set,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("invalid fault set: {e}")).into_response()
        }
    };
    if let Err(e) = set.validate() {
        return (StatusCode::BAD_REQUEST, format!("invalid fault set: {e}")).into_response();
    }
    tracing::info!(?set, "fault set added");
    state.faults.add(set);
    (StatusCode::OK, Json(state.faults.list())).into_response()
}

/// `DELETE /_admin/faults` clears every set; `?workgroup=W` only the sets scoped to W,
/// so a test clears its own faults while others run.
async fn clear_faults(
    State(state): State<Arc<AppState>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> StatusCode {
    match query.get("workgroup") {
        Some(wg) => state.faults.clear_scope(wg),
        None => state.faults.clear(),
    }
    tracing::info!(workgroup = ?query.get("workgroup"), "faults cleared");
    StatusCode::NO_CONTENT
}

/// Injected faults so far, per workgroup and kind.
async fn injected_faults(State(state): State<Arc<AppState>>) -> Response {
    Json(state.faults.injected()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(wg: Option<&str>, cluster: Option<&str>) -> Target {
        Target {
            database: Some("dev".into()),
            workgroup_name: wg.map(str::to_string),
            cluster_identifier: cluster.map(str::to_string),
            ..Target::default()
        }
    }

    #[test]
    fn exactly_one_of_workgroup_and_cluster() {
        assert!(validate_target(&target(Some("wg"), None)).is_ok());
        assert!(validate_target(&target(None, Some("c"))).is_ok());
        assert!(validate_target(&target(None, None)).is_err());
        assert!(validate_target(&target(Some("wg"), Some("c"))).is_err());
        let mut no_db = target(Some("wg"), None);
        no_db.database = None;
        assert!(validate_target(&no_db).is_err());
    }

    #[test]
    fn parameters_must_all_be_used() {
        let params = [SqlParameter {
            name: "a".into(),
            value: "1".into(),
        }];
        let sqls = ["select :a".to_string(), "select 2".to_string()];
        assert_eq!(bind(&sqls, Some(&params)).unwrap()[0], "select '1'");
        let unused = bind(&["select 1".to_string()], Some(&params));
        assert!(matches!(unused, Err(ApiError::Validation(m)) if m.contains("not referenced")));
        assert_eq!(
            bind(&["select :a".to_string()], None).unwrap()[0],
            "select :a"
        );
    }

    #[test]
    fn sql_size_is_limited() {
        assert!(validate_sql(&"x".repeat(MAX_SQL_BYTES + 1)).is_err());
        assert!(validate_sql("  ").is_err());
        assert!(validate_sql("select 1").is_ok());
    }
}
