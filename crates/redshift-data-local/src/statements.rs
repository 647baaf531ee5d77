//! The statement registry: every submitted statement, its status as it moves
//! SUBMITTED → PICKED → STARTED → FINISHED | FAILED | ABORTED, and the reads the
//! API serves from it (describe, results, list).

use crate::api::{
    ApiError, DescribeStatementResponse, GetStatementResultResponse, ListStatementsRequest,
    ListStatementsResponse, SqlParameter, StatementData, SubStatementData, Target,
};
use crate::identity::Identity;
use crate::results::ResultSet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio_postgres::CancelToken;

/// Rows per GetStatementResult page.
pub const PAGE_ROWS: usize = 1000;
/// The service keeps statements and their results for 24 hours.
const RETENTION_SECONDS: f64 = 24.0 * 3600.0;
/// ListStatements' default and maximum page size, as the service's.
const LIST_MAX: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Submitted,
    Picked,
    Started,
    Finished,
    Failed,
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "SUBMITTED",
            Status::Picked => "PICKED",
            Status::Started => "STARTED",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Aborted => "ABORTED",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Status::Submitted | Status::Picked | Status::Started)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ExecuteStatement: one statement, autocommitted.
    Single,
    /// BatchExecuteStatement, the default: one transaction.
    Transaction,
    /// BatchExecuteStatement with ExecutionMode AUTO_COMMIT.
    AutoCommit,
}

pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}

#[derive(Debug, Clone)]
pub struct SubStatement {
    /// As the caller sent it (QueryString).
    pub sql: String,
    /// After parameter binding: what is executed.
    pub bound_sql: String,
    pub status: Status,
    pub error: Option<String>,
    pub updated_at: f64,
    pub started: Option<Instant>,
    pub duration_ns: i64,
    pub query_id: i64,
    pub result_rows: i64,
    pub result: Option<Arc<ResultSet>>,
}

#[derive(Clone)]
pub struct Statement {
    pub id: String,
    pub mode: Mode,
    pub target: Target,
    pub statement_name: Option<String>,
    pub parameters: Option<Vec<SqlParameter>>,
    pub status: Status,
    pub error: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    pub started: Option<Instant>,
    pub duration_ns: i64,
    pub redshift_pid: i64,
    pub subs: Vec<SubStatement>,
    pub cancel_requested: bool,
    pub cancel_token: Option<CancelToken>,
    /// Who runs it (see [`crate::identity`]).
    pub identity: Identity,
}

impl Statement {
    pub fn new(
        mode: Mode,
        target: Target,
        statement_name: Option<String>,
        parameters: Option<Vec<SqlParameter>>,
        sqls: Vec<(String, String)>,
    ) -> Statement {
        let now = now_epoch();
        Statement {
            id: uuid::Uuid::new_v4().to_string(),
            mode,
            target,
            statement_name,
            parameters,
            status: Status::Submitted,
            error: None,
            created_at: now,
            updated_at: now,
            started: None,
            duration_ns: 0,
            redshift_pid: 0,
            subs: sqls
                .into_iter()
                .map(|(sql, bound_sql)| SubStatement {
                    sql,
                    bound_sql,
                    status: Status::Submitted,
                    error: None,
                    updated_at: now,
                    started: None,
                    duration_ns: 0,
                    query_id: 0,
                    result_rows: -1,
                    result: None,
                })
                .collect(),
            cancel_requested: false,
            cancel_token: None,
            identity: Identity::Admin,
        }
    }

    pub fn is_batch(&self) -> bool {
        self.mode != Mode::Single
    }

    /// WorkgroupName or ClusterIdentifier: what fault sets are scoped by.
    pub fn scope(&self) -> Option<&str> {
        self.target
            .workgroup_name
            .as_deref()
            .or(self.target.cluster_identifier.as_deref())
    }

    pub fn set_status(&mut self, status: Status) {
        let now = now_epoch();
        if status == Status::Started && self.started.is_none() {
            self.started = Some(Instant::now());
        }
        if !status.is_active() {
            self.duration_ns = elapsed_ns(self.started);
        }
        self.status = status;
        self.updated_at = now;
    }

    pub fn set_sub_status(&mut self, index: usize, status: Status) {
        let now = now_epoch();
        if let Some(sub) = self.subs.get_mut(index) {
            if status == Status::Started {
                sub.started = Some(Instant::now());
            }
            if !status.is_active() && sub.started.is_some() {
                sub.duration_ns = elapsed_ns(sub.started);
            }
            sub.status = status;
            sub.updated_at = now;
        }
        self.updated_at = now;
    }

    fn describe_sub(&self, index: usize) -> SubStatementData {
        let sub = &self.subs[index];
        SubStatementData {
            id: format!("{}:{}", self.id, index + 1),
            status: sub.status.as_str().into(),
            created_at: self.created_at,
            updated_at: sub.updated_at,
            duration: sub.duration_ns,
            error: sub.error.clone(),
            has_result_set: sub.result.is_some(),
            query_string: sub.sql.clone(),
            redshift_query_id: sub.query_id,
            result_rows: sub.result_rows,
            result_size: sub.result.as_ref().map_or(-1, |r| r.size),
        }
    }

    fn describe(&self) -> DescribeStatementResponse {
        let mut out = DescribeStatementResponse {
            id: self.id.clone(),
            status: self.status.as_str().into(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            duration: self.duration_ns,
            error: self.error.clone(),
            database: self.target.database.clone().unwrap_or_default(),
            workgroup_name: self.target.workgroup_name.clone(),
            cluster_identifier: self.target.cluster_identifier.clone(),
            db_user: self.target.db_user.clone(),
            secret_arn: self.target.secret_arn.clone(),
            query_parameters: self.parameters.clone(),
            redshift_pid: self.redshift_pid,
            result_format: "JSON".into(),
            ..DescribeStatementResponse::default()
        };
        if self.is_batch() {
            let subs: Vec<_> = (0..self.subs.len()).map(|i| self.describe_sub(i)).collect();
            out.has_result_set = subs.iter().any(|s| s.has_result_set);
            // The service reports -1 ("no value") for a batch's own counters.
            out.result_rows = -1;
            out.result_size = -1;
            out.redshift_query_id = subs.last().map_or(0, |s| s.redshift_query_id);
            out.execution_mode = Some(
                if self.mode == Mode::AutoCommit {
                    "AUTO_COMMIT"
                } else {
                    "TRANSACTION"
                }
                .into(),
            );
            out.sub_statements = Some(subs);
        } else if let Some(sub) = self.subs.first() {
            let data = self.describe_sub(0);
            out.has_result_set = data.has_result_set;
            out.query_string = Some(sub.sql.clone());
            out.redshift_query_id = data.redshift_query_id;
            out.result_rows = data.result_rows;
            out.result_size = data.result_size;
        }
        out
    }

    fn list_entry(&self) -> StatementData {
        let sqls: Vec<String> = self.subs.iter().map(|s| s.sql.clone()).collect();
        StatementData {
            id: self.id.clone(),
            status: self.status.as_str().into(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            statement_name: self.statement_name.clone(),
            query_string: (!self.is_batch()).then(|| sqls.first().cloned().unwrap_or_default()),
            query_strings: self.is_batch().then_some(sqls),
            is_batch_statement: self.is_batch(),
            query_parameters: self.parameters.clone(),
            secret_arn: self.target.secret_arn.clone(),
            result_format: "JSON".into(),
        }
    }
}

fn elapsed_ns(started: Option<Instant>) -> i64 {
    started.map_or(0, |s| {
        i64::try_from(s.elapsed().as_nanos()).unwrap_or(i64::MAX)
    })
}

#[derive(Default)]
struct Inner {
    statements: HashMap<String, Statement>,
    /// Ids in submission order, for ListStatements.
    order: Vec<String>,
    /// ClientToken → (request fingerprint, statement id).
    tokens: HashMap<String, (String, String)>,
}

impl Inner {
    /// Drops ended statements created before `cutoff` (epoch seconds), their
    /// results and client tokens, so a long-running emulator does not grow forever.
    fn forget_expired(&mut self, cutoff: f64) {
        let before = self.statements.len();
        self.statements
            .retain(|_, s| s.status.is_active() || s.created_at >= cutoff);
        if self.statements.len() != before {
            let statements = &self.statements;
            self.order.retain(|id| statements.contains_key(id));
            self.tokens.retain(|_, (_, id)| statements.contains_key(id));
        }
    }
}

/// What a submit did: a new statement to run, or an earlier one with the same ClientToken.
pub enum Submitted {
    New(String),
    Existing(String),
}

pub struct Registry {
    inner: Mutex<Inner>,
    max_active: usize,
}

/// `<uuid>` or `<uuid>:<n>`, as the service validates ids.
fn parse_id(id: &str) -> Result<(&str, Option<usize>), ApiError> {
    let (base, sub) = match id.split_once(':') {
        Some((base, n)) => (base, Some(n)),
        None => (id, None),
    };
    let uuid_ok = uuid::Uuid::parse_str(base).is_ok() && base.len() == 36;
    let sub = match sub {
        None => None,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n >= 1 => Some(n),
            _ => return Err(bad_id(id)),
        },
    };
    if !uuid_ok {
        return Err(bad_id(id));
    }
    Ok((base, sub))
}

fn bad_id(id: &str) -> ApiError {
    ApiError::Validation(format!(
        "id must satisfy regex pattern: ^[a-z0-9]{{8}}(-[a-z0-9]{{4}}){{3}}-[a-z0-9]{{12}}(:\\d+)?$ (got '{id}')"
    ))
}

fn not_found(id: &str) -> ApiError {
    ApiError::ResourceNotFound {
        message: "Query does not exist.".into(),
        resource_id: id.into(),
    }
}

fn page_offset(token: Option<&str>) -> Result<usize, ApiError> {
    match token {
        None | Some("") => Ok(0),
        Some(t) => t
            .strip_prefix("rdl-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::Validation("Invalid NextToken".into())),
    }
}

impl Registry {
    pub fn new(max_active: usize) -> Registry {
        Registry {
            inner: Mutex::new(Inner::default()),
            max_active,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a statement, honouring ClientToken idempotency and the quota of
    /// active statements.
    pub fn submit(
        &self,
        statement: Statement,
        client_token: Option<(String, String)>,
    ) -> Result<Submitted, ApiError> {
        let mut inner = self.lock();
        if let Some((token, fingerprint)) = &client_token {
            if let Some((seen, id)) = inner.tokens.get(token) {
                return if seen == fingerprint {
                    Ok(Submitted::Existing(id.clone()))
                } else {
                    Err(ApiError::Validation(format!(
                        "ClientToken '{token}' was already used with a different request"
                    )))
                };
            }
        }
        inner.forget_expired(now_epoch() - RETENTION_SECONDS);
        let active = inner
            .statements
            .values()
            .filter(|s| s.status.is_active())
            .count();
        if active >= self.max_active {
            return Err(ApiError::ActiveStatementsExceeded(format!(
                "Active statements exceeded the allowed quota ({}).",
                self.max_active
            )));
        }
        let id = statement.id.clone();
        if let Some((token, fingerprint)) = client_token {
            inner.tokens.insert(token, (fingerprint, id.clone()));
        }
        inner.order.push(id.clone());
        inner.statements.insert(id.clone(), statement);
        Ok(Submitted::New(id))
    }

    /// Every statement still retained, in submission order (for SYS_QUERY_HISTORY).
    pub fn snapshot(&self) -> Vec<Statement> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .filter_map(|id| inner.statements.get(id).cloned())
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Statement> {
        self.lock().statements.get(id).cloned()
    }

    /// Applies `change` to a statement, if it exists.
    pub fn update<R>(&self, id: &str, change: impl FnOnce(&mut Statement) -> R) -> Option<R> {
        self.lock().statements.get_mut(id).map(change)
    }

    /// The fault scope of the statement an `Id` names.
    pub fn scope_of(&self, id: &str) -> Option<String> {
        let base = id.split(':').next().unwrap_or(id);
        self.lock()
            .statements
            .get(base)
            .and_then(|s| s.scope().map(str::to_string))
    }

    pub fn describe(&self, id: &str) -> Result<DescribeStatementResponse, ApiError> {
        let (base, sub) = parse_id(id)?;
        let inner = self.lock();
        let statement = inner.statements.get(base).ok_or_else(|| not_found(id))?;
        match sub {
            None => Ok(statement.describe()),
            Some(n) => {
                if !statement.is_batch() || n > statement.subs.len() {
                    return Err(not_found(id));
                }
                // A sub-statement described on its own looks like a single statement.
                let data = statement.describe_sub(n - 1);
                let mut out = statement.describe();
                out.id = data.id;
                out.status = data.status;
                out.updated_at = data.updated_at;
                out.duration = data.duration;
                out.error = data.error;
                out.has_result_set = data.has_result_set;
                out.query_string = Some(data.query_string);
                out.redshift_query_id = data.redshift_query_id;
                out.result_rows = data.result_rows;
                out.result_size = data.result_size;
                out.sub_statements = None;
                out.execution_mode = None;
                Ok(out)
            }
        }
    }

    pub fn result(
        &self,
        id: &str,
        next_token: Option<&str>,
    ) -> Result<GetStatementResultResponse, ApiError> {
        let (base, sub) = parse_id(id)?;
        let offset = page_offset(next_token)?;
        let result = {
            let inner = self.lock();
            let statement = inner.statements.get(base).ok_or_else(|| not_found(id))?;
            let index = match (statement.is_batch(), sub) {
                (false, None) => 0,
                (true, Some(n)) if n <= statement.subs.len() => n - 1,
                (true, None) => {
                    return Err(ApiError::Validation(
                        "Result is not available for a batch statement id; use a sub-statement id (<id>:<n>)".into(),
                    ))
                }
                _ => return Err(not_found(id)),
            };
            let sub = &statement.subs[index];
            match (&sub.result, sub.status) {
                (Some(result), Status::Finished) => Arc::clone(result),
                _ => {
                    return Err(ApiError::ResourceNotFound {
                        message: "Query does not have result. Please check query status with DescribeStatement.".into(),
                        resource_id: id.into(),
                    })
                }
            }
        };
        let total = result.records.len();
        if offset > total {
            return Err(ApiError::Validation("Invalid NextToken".into()));
        }
        let end = (offset + PAGE_ROWS).min(total);
        Ok(GetStatementResultResponse {
            records: result.records[offset..end].to_vec(),
            column_metadata: result.columns.clone(),
            total_num_rows: total as i64,
            next_token: (end < total).then(|| format!("rdl-{end}")),
        })
    }

    pub fn list(&self, req: &ListStatementsRequest) -> Result<ListStatementsResponse, ApiError> {
        let max = match req.max_results {
            None | Some(0) => LIST_MAX,
            Some(n) if (1..=LIST_MAX as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::Validation(format!(
                    "MaxResults must be between 0 and {LIST_MAX} (got {n})"
                )))
            }
        };
        let status = match req.status.as_deref() {
            None | Some("ALL") => None,
            Some(s) => Some(
                [
                    Status::Submitted,
                    Status::Picked,
                    Status::Started,
                    Status::Finished,
                    Status::Failed,
                    Status::Aborted,
                ]
                .into_iter()
                .find(|st| st.as_str() == s)
                .ok_or_else(|| ApiError::Validation(format!("Invalid Status '{s}'")))?,
            ),
        };
        let offset = page_offset(req.next_token.as_deref())?;
        let inner = self.lock();
        let matching: Vec<&Statement> = inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.statements.get(id))
            .filter(|s| status.is_none_or(|st| s.status == st))
            .filter(|s| {
                // The service matches StatementName as a prefix.
                req.statement_name.as_deref().is_none_or(|prefix| {
                    s.statement_name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(prefix))
                })
            })
            .filter(|s| {
                req.database
                    .as_deref()
                    .is_none_or(|d| s.target.database.as_deref() == Some(d))
            })
            .filter(|s| {
                req.workgroup_name
                    .as_deref()
                    .is_none_or(|w| s.target.workgroup_name.as_deref() == Some(w))
            })
            .filter(|s| {
                req.cluster_identifier
                    .as_deref()
                    .is_none_or(|c| s.target.cluster_identifier.as_deref() == Some(c))
            })
            .collect();
        let end = (offset + max).min(matching.len());
        let statements = matching
            .get(offset..end)
            .unwrap_or_default()
            .iter()
            .map(|s| s.list_entry())
            .collect();
        Ok(ListStatementsResponse {
            statements,
            next_token: (end < matching.len()).then(|| format!("rdl-{end}")),
        })
    }

    /// Marks a running statement for cancellation and hands back what is needed
    /// to interrupt PostgreSQL.
    pub fn request_cancel(&self, id: &str) -> Result<Option<CancelToken>, ApiError> {
        let (base, sub) = parse_id(id)?;
        if sub.is_some() {
            return Err(ApiError::Validation(
                "CancelStatement takes a statement id, not a sub-statement id".into(),
            ));
        }
        let mut inner = self.lock();
        let statement = inner
            .statements
            .get_mut(base)
            .ok_or_else(|| not_found(id))?;
        if !statement.status.is_active() {
            return Err(ApiError::Validation(format!(
                "Could not cancel a query that is already in {} state with ID: {id}",
                statement.status.as_str()
            )));
        }
        statement.cancel_requested = true;
        Ok(statement.cancel_token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(name: &str, sqls: &[&str]) -> Statement {
        let mode = if sqls.len() > 1 {
            Mode::Transaction
        } else {
            Mode::Single
        };
        Statement::new(
            mode,
            Target::default(),
            Some(name.into()),
            None,
            sqls.iter()
                .map(|s| (s.to_string(), s.to_string()))
                .collect(),
        )
    }

    fn id_of(s: Submitted) -> String {
        match s {
            Submitted::New(id) | Submitted::Existing(id) => id,
        }
    }

    #[test]
    fn client_tokens_are_idempotent() {
        let registry = Registry::new(10);
        let token = || Some(("tok".to_string(), "fp".to_string()));
        let first = registry
            .submit(statement("a", &["select 1"]), token())
            .unwrap();
        let Submitted::New(id) = first else {
            panic!("expected new")
        };
        let again = registry
            .submit(statement("a", &["select 1"]), token())
            .unwrap();
        assert!(matches!(again, Submitted::Existing(ref other) if *other == id));
        let other = registry.submit(
            statement("a", &["select 1"]),
            Some(("tok".into(), "fp2".into())),
        );
        assert!(matches!(other, Err(ApiError::Validation(_))));
    }

    #[test]
    fn ended_statements_expire() {
        let registry = Registry::new(10);
        let token = Some(("tok".to_string(), "fp".to_string()));
        let id = id_of(
            registry
                .submit(statement("a", &["select 1"]), token)
                .unwrap(),
        );
        registry.update(&id, |s| s.set_status(Status::Finished));
        registry.lock().forget_expired(now_epoch() - 1.0);
        assert!(registry.get(&id).is_some());
        registry.lock().forget_expired(now_epoch() + 1.0);
        assert!(registry.get(&id).is_none());
        assert!(registry.lock().tokens.is_empty() && registry.lock().order.is_empty());
    }

    #[test]
    fn active_quota_is_enforced() {
        let registry = Registry::new(1);
        registry
            .submit(statement("a", &["select 1"]), None)
            .unwrap();
        assert!(matches!(
            registry.submit(statement("b", &["select 1"]), None),
            Err(ApiError::ActiveStatementsExceeded(_))
        ));
    }

    #[test]
    fn ids_are_validated_and_subs_resolved() {
        let registry = Registry::new(10);
        let id = id_of(
            registry
                .submit(statement("b", &["select 1", "select 2"]), None)
                .unwrap(),
        );
        assert!(matches!(
            registry.describe("nope"),
            Err(ApiError::Validation(_))
        ));
        assert!(matches!(
            registry.describe(&format!("{id}:3")),
            Err(ApiError::ResourceNotFound { .. })
        ));
        let sub = registry.describe(&format!("{id}:2")).unwrap();
        assert_eq!(sub.query_string.as_deref(), Some("select 2"));
        let batch = registry.describe(&id).unwrap();
        assert_eq!(batch.sub_statements.unwrap().len(), 2);
        assert!(matches!(
            registry.result(&id, None),
            Err(ApiError::Validation(_))
        ));
    }

    #[test]
    fn list_is_newest_first_with_prefix_filter_and_paging() {
        let registry = Registry::new(10);
        for name in ["job-1", "job-2", "other"] {
            registry
                .submit(statement(name, &["select 1"]), None)
                .unwrap();
        }
        let req = ListStatementsRequest {
            statement_name: Some("job-".into()),
            max_results: Some(1),
            ..ListStatementsRequest::default()
        };
        let page = registry.list(&req).unwrap();
        assert_eq!(page.statements[0].statement_name.as_deref(), Some("job-2"));
        let req = ListStatementsRequest {
            next_token: page.next_token,
            ..req
        };
        let page = registry.list(&req).unwrap();
        assert_eq!(page.statements[0].statement_name.as_deref(), Some("job-1"));
        assert!(page.next_token.is_none());
    }
}
