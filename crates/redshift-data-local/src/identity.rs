//! Which database user a Data API call runs as, derived from the request the way
//! Redshift derives it (pure; the executor creates and switches to the user).
//!
//! Redshift (<https://docs.aws.amazon.com/redshift/latest/mgmt/data-api-access.html>):
//! - `ClusterIdentifier` + `DbUser`: that database user (temporary credentials).
//! - `SecretArn` (cluster or workgroup): the user stored in the secret.
//! - `WorkgroupName` (or a cluster) with IAM credentials only: `IAMR:<role>` for a role
//!   session, `IAM:<user>` for an IAM user, created on first use.
//!
//! The emulator cannot read Secrets Manager nor verify SigV4, so it uses conventions:
//! - a secret maps to a user through `--secret ARN=USER`; an unmapped secret's user is
//!   its name: the part after `secret:`, without AWS's random `-XXXXXX` suffix, after
//!   the last `/` (`arn:aws:secretsmanager:us-east-1:1:secret:rdl/loader_1-AbCdEf` →
//!   `loader_1`). The user must exist (`CREATE USER loader_1 PASSWORD DISABLE`).
//! - an access key id maps to an IAM identity through `--identity KEY=IAMR:name` (the
//!   user is created on first use, as Redshift Serverless does); any other access key
//!   (the local stack's `testing`) is the admin: PostgreSQL's own (super)user, which
//!   owns what it creates, as Redshift's admin user does.

use std::collections::HashMap;

use crate::api::{ApiError, Target};

/// Who runs a statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Identity {
    /// The emulator's PostgreSQL user (a superuser): the cluster's admin user.
    #[default]
    Admin,
    /// An existing database user (DbUser, a secret's user).
    User(String),
    /// An IAM identity (`IAMR:role`, `IAM:user`), created on first use.
    Iam(String),
}

impl Identity {
    /// The database user name, `None` for the admin.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Admin => None,
            Identity::User(u) | Identity::Iam(u) => Some(u),
        }
    }
}

/// The emulator's identity conventions (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// Access key id → database user (`IAMR:name`, `IAM:name`, or any name).
    pub access_keys: HashMap<String, String>,
    /// Secret ARN (or name) → database user.
    pub secrets: HashMap<String, String>,
}

impl Identities {
    /// Parses `KEY=USER` pairs separated by commas (both option forms).
    pub fn parse_pairs(text: &str) -> Result<HashMap<String, String>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| match pair.rsplit_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(format!("{pair:?} is not KEY=USER")),
            })
            .collect()
    }

    /// The identity of a request with `target` signed with `access_key`.
    pub fn derive(&self, target: &Target, access_key: Option<&str>) -> Result<Identity, ApiError> {
        if let Some(secret) = target.secret_arn.as_deref() {
            if target.db_user.is_some() {
                return Err(ApiError::Validation(
                    "You can't specify both DbUser and SecretArn".into(),
                ));
            }
            let user = match self.secrets.get(secret) {
                Some(user) => user.clone(),
                None => secret_user(secret).ok_or_else(|| {
                    ApiError::Validation(format!(
                        "redshift-data-local cannot tell the user of secret {secret:?}: map it \
                         with --secret ARN=USER or name the secret after the user"
                    ))
                })?,
            };
            return Ok(Identity::User(user));
        }
        if let Some(user) = target.db_user.as_deref() {
            if target.workgroup_name.is_some() {
                // Serverless takes no DbUser: temporary credentials name the IAM identity.
                return Err(ApiError::Validation(
                    "DbUser is not supported with WorkgroupName: use SecretArn or IAM credentials"
                        .into(),
                ));
            }
            return Ok(Identity::User(user.to_string()));
        }
        Ok(match access_key.and_then(|k| self.access_keys.get(k)) {
            Some(user) => Identity::Iam(user.clone()),
            None => Identity::Admin,
        })
    }
}

/// The user a secret names by the emulator's rule (see the module doc).
pub fn secret_user(secret: &str) -> Option<String> {
    let name = secret.rsplit_once(":secret:").map_or(secret, |(_, n)| n);
    let name = match name.rsplit_once('-') {
        Some((base, suffix))
            if suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            base
        }
        _ => name,
    };
    let user = name.rsplit('/').next().unwrap_or(name);
    (!user.is_empty()).then(|| user.to_string())
}

/// The access key id of a SigV4 `Authorization` header
/// (`AWS4-HMAC-SHA256 Credential=AKID/20240528/us-east-1/redshift-data/aws4_request, ...`).
pub fn access_key_id(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    let key = credential.split('/').next()?.trim();
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(wg: bool, user: Option<&str>, secret: Option<&str>) -> Target {
        Target {
            database: Some("dev".into()),
            workgroup_name: wg.then(|| "wg".to_string()),
            cluster_identifier: (!wg).then(|| "c".to_string()),
            db_user: user.map(str::to_string),
            secret_arn: secret.map(str::to_string),
        }
    }

    #[test]
    fn secrets_name_their_user() {
        assert_eq!(
            secret_user("arn:aws:secretsmanager:us-east-1:1:secret:rdl/loader_1-AbCdEf").as_deref(),
            Some("loader_1")
        );
        assert_eq!(secret_user("loader").as_deref(), Some("loader"));
        assert_eq!(
            secret_user("arn:aws:secretsmanager:us-east-1:1:secret:etl-user").as_deref(),
            Some("etl-user")
        );
        assert_eq!(secret_user("arn:aws:secretsmanager:r:1:secret:a/"), None);
    }

    #[test]
    fn identities_follow_redshift_rules() {
        let mut ids = Identities::default();
        ids.access_keys
            .insert("AKIALOADER".into(), "IAMR:loader".into());
        ids.secrets.insert("arn:x".into(), "mapped".into());
        assert_eq!(
            ids.derive(&target(false, Some("etl"), None), Some("testing"))
                .unwrap(),
            Identity::User("etl".into())
        );
        assert_eq!(
            ids.derive(&target(true, None, Some("arn:x")), None)
                .unwrap(),
            Identity::User("mapped".into())
        );
        assert_eq!(
            ids.derive(&target(true, None, None), Some("AKIALOADER"))
                .unwrap(),
            Identity::Iam("IAMR:loader".into())
        );
        assert_eq!(
            ids.derive(&target(true, None, None), Some("testing"))
                .unwrap(),
            Identity::Admin
        );
        assert!(ids.derive(&target(true, Some("u"), None), None).is_err());
        assert!(ids
            .derive(&target(false, Some("u"), Some("arn:x")), None)
            .is_err());
    }

    #[test]
    fn access_key_from_sigv4_header() {
        let h = "AWS4-HMAC-SHA256 Credential=AKID123/20240528/us-east-1/redshift-data/aws4_request, SignedHeaders=host, Signature=abc";
        assert_eq!(access_key_id(h), Some("AKID123"));
        assert_eq!(access_key_id("Bearer x"), None);
        assert_eq!(
            Identities::parse_pairs("a=IAMR:x, b=y")
                .unwrap()
                .get("a")
                .map(String::as_str),
            Some("IAMR:x")
        );
        assert!(Identities::parse_pairs("nothing").is_err());
    }
}
