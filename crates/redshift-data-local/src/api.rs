//! Wire types of the Redshift Data API (awsJson1_1), as the AWS SDKs send and parse
//! them. Member names are the service's (PascalCase), except inside
//! `ColumnMetadata` and `Field`, which the service spells in camelCase.
//! Timestamps are epoch seconds as JSON numbers.

use serde::{Deserialize, Serialize};

/// The one request shape the service spells in lower case (`name`, `value`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqlParameter {
    pub name: String,
    pub value: String,
}

/// Fields shared by ExecuteStatement and BatchExecuteStatement.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Target {
    pub database: Option<String>,
    pub workgroup_name: Option<String>,
    pub cluster_identifier: Option<String>,
    pub db_user: Option<String>,
    pub secret_arn: Option<String>,
}

/// The other members ExecuteStatement and BatchExecuteStatement share.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SubmitOptions {
    pub statement_name: Option<String>,
    pub with_event: Option<bool>,
    pub parameters: Option<Vec<SqlParameter>>,
    pub client_token: Option<String>,
    pub result_format: Option<String>,
    pub session_keep_alive_seconds: Option<i64>,
    pub session_id: Option<String>,
    pub wait_time_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ExecuteStatementRequest {
    pub sql: Option<String>,
    #[serde(flatten)]
    pub target: Target,
    #[serde(flatten)]
    pub options: SubmitOptions,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct BatchExecuteStatementRequest {
    pub sqls: Option<Vec<String>>,
    #[serde(flatten)]
    pub target: Target,
    #[serde(flatten)]
    pub options: SubmitOptions,
    pub execution_mode: Option<String>,
}

/// ExecuteStatement and BatchExecuteStatement answer with the same shape.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubmitResponse {
    pub id: String,
    pub created_at: f64,
    pub database: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workgroup_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdRequest {
    pub id: Option<String>,
    pub next_token: Option<String>,
    /// DescribeStatement and GetStatementResult: wait up to this long (0–30 s) for the
    /// statement to end before answering.
    pub wait_time_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct SubStatementData {
    pub id: String,
    pub status: String,
    pub created_at: f64,
    pub updated_at: f64,
    pub duration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub has_result_set: bool,
    pub query_string: String,
    pub redshift_query_id: i64,
    pub result_rows: i64,
    pub result_size: i64,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeStatementResponse {
    pub id: String,
    pub status: String,
    pub created_at: f64,
    pub updated_at: f64,
    pub duration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub database: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workgroup_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    pub has_result_set: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_string: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_parameters: Option<Vec<SqlParameter>>,
    pub redshift_pid: i64,
    pub redshift_query_id: i64,
    pub result_rows: i64,
    pub result_size: i64,
    pub result_format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_statements: Option<Vec<SubStatementData>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMetadata {
    pub name: String,
    pub label: String,
    pub type_name: String,
    /// JDBC's convention: 0 no nulls, 1 nullable, 2 unknown.
    pub nullable: i32,
    pub length: i32,
    pub precision: i32,
    pub scale: i32,
    pub is_signed: bool,
    pub is_case_sensitive: bool,
    pub is_currency: bool,
    pub schema_name: String,
    pub table_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column_default: Option<String>,
}

/// A tagged union on the wire: exactly one member is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Field {
    IsNull(bool),
    BooleanValue(bool),
    LongValue(i64),
    DoubleValue(f64),
    StringValue(String),
    /// Base64, as the JSON protocol carries blobs.
    BlobValue(String),
}

impl Field {
    pub fn approximate_size(&self) -> i64 {
        match self {
            Field::IsNull(_) => 0,
            Field::BooleanValue(_) => 1,
            Field::LongValue(_) | Field::DoubleValue(_) => 8,
            Field::StringValue(s) | Field::BlobValue(s) => s.len() as i64,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetStatementResultResponse {
    pub records: Vec<Vec<Field>>,
    pub column_metadata: Vec<ColumnMetadata>,
    pub total_num_rows: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CancelStatementResponse {
    pub status: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListStatementsRequest {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
    pub statement_name: Option<String>,
    pub status: Option<String>,
    pub role_level: Option<bool>,
    pub database: Option<String>,
    pub cluster_identifier: Option<String>,
    pub workgroup_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct StatementData {
    pub id: String,
    pub status: String,
    pub created_at: f64,
    pub updated_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_string: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_strings: Option<Vec<String>>,
    pub is_batch_statement: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_parameters: Option<Vec<SqlParameter>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    pub result_format: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListStatementsResponse {
    pub statements: Vec<StatementData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// An API call refused with one of the service's exceptions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("{message}")]
    ResourceNotFound {
        message: String,
        resource_id: String,
    },
    #[error("Rate exceeded")]
    Throttling,
    #[error("{0}")]
    ActiveStatementsExceeded(String),
    #[error("{0}")]
    Internal(String),
    /// An `X-Amz-Target` this endpoint does not implement.
    #[error("{0}")]
    UnknownOperation(String),
}

impl ApiError {
    /// The exception name, sent as `__type` and `x-amzn-ErrorType`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "ValidationException",
            ApiError::ResourceNotFound { .. } => "ResourceNotFoundException",
            ApiError::Throttling => "ThrottlingException",
            ApiError::ActiveStatementsExceeded(_) => "ActiveStatementsExceededException",
            ApiError::Internal(_) => "InternalServerException",
            ApiError::UnknownOperation(_) => "UnknownOperationException",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::Internal(_) => 500,
            _ => 400,
        }
    }

    /// The JSON body; the SDK reads `__type` and `Message` plus the shape's members.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "__type": self.code(),
            "Message": self.to_string(),
        });
        if let ApiError::ResourceNotFound { resource_id, .. } = self {
            body["ResourceId"] = serde_json::Value::String(resource_id.clone());
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_tagged_unions_in_camel_case() {
        let json = serde_json::to_string(&vec![
            Field::StringValue("a".into()),
            Field::LongValue(1),
            Field::IsNull(true),
        ])
        .unwrap();
        assert_eq!(
            json,
            r#"[{"stringValue":"a"},{"longValue":1},{"isNull":true}]"#
        );
    }

    #[test]
    fn requests_read_pascal_case_members() {
        let req: ExecuteStatementRequest = serde_json::from_str(
            r#"{"Sql":"select 1","Database":"dev","WorkgroupName":"wg","Parameters":[{"name":"a","value":"1"}]}"#,
        )
        .unwrap();
        assert_eq!(req.sql.as_deref(), Some("select 1"));
        assert_eq!(req.target.workgroup_name.as_deref(), Some("wg"));
        assert_eq!(req.options.parameters.unwrap()[0].name, "a");
    }
}
