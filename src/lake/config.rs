//! Configuration: environment variables plus the routes TOML, validated once at
//! start-up. Every error names the variable or route key that is wrong.

use std::time::Duration;

use serde::Deserialize;

use crate::error::LoaderError;
use crate::lake::copy_options::{self, CopyOption};
use crate::sql::{FileFormat, Ident, PartitionType, TableName};

/// Where the Data API runs statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedshiftTarget {
    Serverless {
        workgroup: String,
    },
    Cluster {
        cluster_id: String,
        auth: ClusterAuth,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAuth {
    DbUser(String),
    SecretArn(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Append,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumn {
    pub name: Ident,
    pub ty: PartitionType,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// `None` = any bucket.
    pub bucket: Option<String>,
    /// Empty, or ends with `/`.
    pub prefix: String,
    pub table: TableName,
    pub format: FileFormat,
    pub partition_columns: Vec<PartitionColumn>,
    pub file_columns: Option<Vec<Ident>>,
    pub mode: Mode,
    /// A partition value that means NULL besides `__HIVE_DEFAULT_PARTITION__`.
    pub null_value: Option<String>,
    /// COPY data-conversion parameters, checked against `format`.
    pub copy_options: Vec<CopyOption>,
    /// `STATUPDATE ON` for direct COPYs (never for staging tables). Redshift lets only
    /// the table's owner (or a superuser) update statistics, so the loader's user must
    /// own the table.
    pub statupdate: bool,
    /// Parquet only, columns read from footers: a file column the table lacks is added
    /// (`ALTER TABLE … ADD COLUMN`, [`crate::lake::schema_match::added_type`]) instead of
    /// refused.
    pub add_new_columns: bool,
    /// ANALYZE/VACUUM after loads (`analyze`, `vacuum` and their thresholds).
    pub upkeep: crate::ops::upkeep::Options,
    /// `ready_marker = "_SUCCESS"`: a partition's files load only once this file exists
    /// in the partition, or at the route's root and newer than them
    /// ([`crate::lake::markers`]). `None`: files load on their own events.
    pub ready_marker: Option<String>,
}

impl Route {
    pub fn claims(&self, bucket: &str, key: &str) -> bool {
        self.bucket.as_deref().is_none_or(|b| b == bucket) && key.starts_with(&self.prefix)
    }
}

/// An `s3://bucket/prefix` location; `prefix` is empty or ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<S3Location, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} has no bucket"));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: normalise_prefix(prefix),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub redshift: RedshiftTarget,
    pub database: String,
    pub copy_iam_role: String,
    pub loader_schema: Ident,
    pub manifest: S3Location,
    pub lease_ttl: Duration,
    /// The sweep's look-back window in days (`SWEEP_LOOK_BACK_DAYS`, default 3), when
    /// neither the sweep event nor `loaderctl sweep --days` says otherwise.
    pub sweep_look_back_days: u32,
    /// The bucket the sweep lists for routes that name none (`SWEEP_BUCKET`; the
    /// template sets it to the stack's data bucket). Events still match any bucket for
    /// such a route: the EventBridge rule already passes only that bucket's events.
    pub sweep_bucket: Option<String>,
    /// How long a clean sweep watermark is trusted (`SWEEP_WATERMARK_MAX_AGE_HOURS`,
    /// default 6; 0 turns the idle gate off): the bound on how long work whose dirty
    /// mark could not be written waits ([`crate::lake::watermark`]).
    pub sweep_watermark_max_age: Duration,
    pub routes: Vec<Route>,
}

/// Variables earlier versions read that no longer have an effect, with why: accepted
/// (a deployment that still sets one keeps working) and warned about once at start-up.
pub const RETIRED_VARIABLES: [(&str, &str); 1] = [(
    "LOCK_WAIT_SECONDS",
    "an invocation that finds the lease busy hands its object to the holder (outcome \
     queued) instead of waiting",
)];

/// The retired variables that are set (see [`RETIRED_VARIABLES`]).
pub fn retired_set(lookup: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, &'static str)> {
    RETIRED_VARIABLES
        .into_iter()
        .filter(|(name, _)| lookup(name).is_some())
        .collect()
}

/// The longest Lambda timeout; a lease must outlive any invocation holding it.
const MAX_FUNCTION_TIMEOUT_SECONDS: u64 = 900;

impl Config {
    /// The first route of each target table, in configuration order: for work done once
    /// per table (bootstrap, the sweep, `loaderctl locks`).
    pub fn table_routes(&self) -> Vec<&Route> {
        let mut out: Vec<&Route> = Vec::new();
        for route in &self.routes {
            if !out.iter().any(|r| r.table == route.table) {
                out.push(route);
            }
        }
        out
    }

    /// The position of `route` (a reference into `routes`, as [`crate::lake::route::route`]
    /// returns it) in the configuration: a stable, ordered key for work by route.
    pub fn route_index(&self, route: &Route) -> usize {
        self.routes
            .iter()
            .position(|r| std::ptr::eq(r, route))
            .unwrap_or_default()
    }

    /// The bucket the sweep lists for `route`: its own, else `SWEEP_BUCKET`; `None` when
    /// the sweep cannot list it (only the wake-ups left behind are drained then).
    pub fn sweep_bucket_of<'a>(&'a self, route: &'a Route) -> Option<&'a str> {
        route.bucket.as_deref().or(self.sweep_bucket.as_deref())
    }

    pub fn from_env() -> Result<Config, LoaderError> {
        Config::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// `lookup` returns a variable's value (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, LoaderError> {
        let bad = |name: &str, why: &str| LoaderError::Config(format!("{name}: {why}"));
        let required = |name: &str| lookup(name).ok_or_else(|| bad(name, "is required"));

        let redshift = match (lookup("REDSHIFT_WORKGROUP"), lookup("REDSHIFT_CLUSTER_ID")) {
            (Some(workgroup), None) => RedshiftTarget::Serverless { workgroup },
            (None, Some(cluster_id)) => {
                let auth = match (lookup("REDSHIFT_DB_USER"), lookup("REDSHIFT_SECRET_ARN")) {
                    (Some(u), None) => ClusterAuth::DbUser(u),
                    (None, Some(s)) => {
                        check_secret_arn(&s).map_err(|e| bad("REDSHIFT_SECRET_ARN", &e))?;
                        ClusterAuth::SecretArn(s)
                    }
                    _ => {
                        return Err(bad(
                            "REDSHIFT_DB_USER",
                            "with REDSHIFT_CLUSTER_ID set exactly one of REDSHIFT_DB_USER or \
                             REDSHIFT_SECRET_ARN",
                        ))
                    }
                };
                RedshiftTarget::Cluster { cluster_id, auth }
            }
            _ => {
                return Err(bad(
                    "REDSHIFT_WORKGROUP",
                    "set exactly one of REDSHIFT_WORKGROUP (Serverless) or REDSHIFT_CLUSTER_ID",
                ))
            }
        };
        let database = required("REDSHIFT_DATABASE")?;
        let copy_iam_role = required("COPY_IAM_ROLE")?;
        if !copy_iam_role.starts_with("arn:") {
            return Err(bad(
                "COPY_IAM_ROLE",
                "must be an IAM role ARN (arn:aws:iam::…)",
            ));
        }
        let loader_schema = Ident::parse(
            &lookup("LOADER_SCHEMA").unwrap_or_else(|| "partition_loader".to_string()),
        )
        .map_err(|e| bad("LOADER_SCHEMA", &e))?;
        let manifest = S3Location::parse(&required("MANIFEST_PREFIX")?)
            .map_err(|e| bad("MANIFEST_PREFIX", &e))?;
        let seconds = |name: &str, default: u64| -> Result<Duration, LoaderError> {
            match lookup(name) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| bad(name, "must be a whole number of seconds")),
            }
        };
        let lease_ttl = seconds("LEASE_TTL_SECONDS", 960)?;
        if lease_ttl.as_secs() <= MAX_FUNCTION_TIMEOUT_SECONDS {
            return Err(bad(
                "LEASE_TTL_SECONDS",
                "must exceed 900 (the longest Lambda timeout) so a live invocation never loses \
                 its lease",
            ));
        }
        let sweep_look_back_days = match lookup("SWEEP_LOOK_BACK_DAYS") {
            None => 3,
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| bad("SWEEP_LOOK_BACK_DAYS", "must be a whole number of days"))?,
        };
        if sweep_look_back_days > crate::run::sweep::MAX_LOOK_BACK_DAYS {
            return Err(bad(
                "SWEEP_LOOK_BACK_DAYS",
                "must be at most 31 days (the sweep's cap, sweep::MAX_LOOK_BACK_DAYS)",
            ));
        }
        let sweep_bucket = lookup("SWEEP_BUCKET");
        let sweep_watermark_max_age = match lookup("SWEEP_WATERMARK_MAX_AGE_HOURS") {
            None => crate::lake::watermark::DEFAULT_MAX_AGE,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|h| *h <= 24 * 7)
                .map(|h| Duration::from_secs(h * 3600))
                .ok_or_else(|| {
                    bad(
                        "SWEEP_WATERMARK_MAX_AGE_HOURS",
                        "must be a whole number of hours, 0 to 168 (0: every sweep queries)",
                    )
                })?,
        };
        if let Some(b) = &sweep_bucket {
            if b.contains('/') {
                return Err(bad("SWEEP_BUCKET", &format!("{b:?} is not a bucket name")));
            }
        }
        for (variable, why) in retired_set(&lookup) {
            tracing::warn!(
                variable,
                "{variable} no longer has an effect ({why}); remove it"
            );
        }

        let toml_text = match (lookup("LOADER_CONFIG"), lookup("LOADER_CONFIG_FILE")) {
            (Some(text), None) => text,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| bad("LOADER_CONFIG_FILE", &format!("cannot read {path}: {e}")))?,
            _ => {
                return Err(bad(
                    "LOADER_CONFIG",
                    "set exactly one of LOADER_CONFIG (inline TOML) or LOADER_CONFIG_FILE",
                ))
            }
        };
        let routes = parse_routes(&toml_text)?;
        check_manifest_prefix(&manifest, &routes)?;
        Ok(Config {
            redshift,
            database,
            copy_iam_role,
            loader_schema,
            manifest,
            lease_ttl,
            sweep_look_back_days,
            sweep_bucket,
            sweep_watermark_max_age,
            routes,
        })
    }
}

/// A secret must be given by its full ARN: `arn:PARTITION:secretsmanager:REGION:ACCOUNT:
/// secret:NAME-XXXXXX`, the six random characters included. IAM matches a policy's
/// Resource against that full ARN, so a partial one (without the suffix) in the
/// template's grant would deny GetSecretValue at the first event.
/// <https://docs.aws.amazon.com/secretsmanager/latest/userguide/auth-and-access_iam-policies.html>
pub fn check_secret_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    let ok = match parts.as_slice() {
        ["arn", partition, "secretsmanager", region, account, "secret", name] => {
            partition.starts_with("aws")
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && name.rsplit_once('-').is_some_and(|(base, suffix)| {
                    !base.is_empty()
                        && suffix.len() == 6
                        && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
                })
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{arn:?} is not a secret's full ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX); \
             copy it from `aws secretsmanager describe-secret --secret-id NAME --query ARN`"
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    bucket: Option<String>,
    prefix: String,
    table: String,
    format: RawFormat,
    #[serde(default)]
    header: bool,
    #[serde(default)]
    partition_columns: Vec<RawPartitionColumn>,
    file_columns: Option<Vec<String>>,
    #[serde(default = "default_mode")]
    mode: Mode,
    null_value: Option<String>,
    #[serde(default)]
    copy_options: Vec<String>,
    #[serde(default)]
    statupdate: bool,
    #[serde(default)]
    add_new_columns: bool,
    #[serde(default)]
    analyze: crate::ops::upkeep::Setting,
    #[serde(default)]
    vacuum: crate::ops::upkeep::Setting,
    analyze_threshold: Option<f64>,
    vacuum_unsorted_threshold: Option<f64>,
    vacuum_deleted_threshold: Option<f64>,
    vacuum_to_percent: Option<u32>,
    ready_marker: Option<String>,
}

fn default_mode() -> Mode {
    Mode::Append
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawFormat {
    Parquet,
    Csv,
    Json,
}

/// `"order_date"` (a string column) or `{ name = "order_date", type = "date" }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPartitionColumn {
    Name(String),
    Typed {
        name: String,
        #[serde(rename = "type")]
        ty: PartitionType,
    },
}

fn normalise_prefix(prefix: &str) -> String {
    let p = prefix.trim_start_matches('/');
    if p.is_empty() || p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    }
}

/// Parses and validates the routes TOML.
pub fn parse_routes(text: &str) -> Result<Vec<Route>, LoaderError> {
    let file: RoutesFile =
        toml::from_str(text).map_err(|e| LoaderError::Config(format!("routes TOML: {e}")))?;
    if file.routes.is_empty() {
        return Err(LoaderError::Config(
            "routes: at least one [[routes]] is required".into(),
        ));
    }
    let mut routes = Vec::new();
    for (i, raw) in file.routes.into_iter().enumerate() {
        let bad = |key: &str, why: String| LoaderError::Config(format!("routes[{i}].{key}: {why}"));
        let table = TableName::parse(&raw.table).map_err(|e| bad("table", e))?;
        let format = match (raw.format, raw.header) {
            (RawFormat::Csv, header) => FileFormat::Csv { header },
            (_, true) => return Err(bad("header", "only applies to format = \"csv\"".into())),
            (RawFormat::Parquet, false) => FileFormat::Parquet,
            (RawFormat::Json, false) => FileFormat::Json,
        };
        let mut partition_columns = Vec::new();
        for col in raw.partition_columns {
            let (name, ty) = match col {
                RawPartitionColumn::Name(n) => (n, PartitionType::String),
                RawPartitionColumn::Typed { name, ty } => (name, ty),
            };
            let name = Ident::parse(&name).map_err(|e| bad("partition_columns", e))?;
            if partition_columns
                .iter()
                .any(|c: &PartitionColumn| c.name == name)
            {
                return Err(bad("partition_columns", format!("{name} is listed twice")));
            }
            partition_columns.push(PartitionColumn { name, ty });
        }
        let file_columns = match raw.file_columns {
            None => None,
            Some(cols) if cols.is_empty() => {
                return Err(bad("file_columns", "must not be empty when given".into()))
            }
            Some(cols) => Some(
                cols.iter()
                    .map(|c| Ident::parse(c).map_err(|e| bad("file_columns", e)))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if let Some(b) = &raw.bucket {
            if b.is_empty() || b.contains('/') {
                return Err(bad("bucket", format!("{b:?} is not a bucket name")));
            }
        }
        if let Some(n) = &raw.null_value {
            if n.is_empty() {
                return Err(bad(
                    "null_value",
                    "must not be empty (an empty partition value is refused anyway)".into(),
                ));
            }
        }
        // The type of a new column comes from the Parquet footer: CSV and JSON have none,
        // and `file_columns` means the loader reads no footer.
        if raw.add_new_columns && format != FileFormat::Parquet {
            return Err(bad(
                "add_new_columns",
                "only applies to format = \"parquet\" (a CSV header or JSON has no types)".into(),
            ));
        }
        if raw.add_new_columns && file_columns.is_some() {
            return Err(bad(
                "add_new_columns",
                "does not go with file_columns (the loader then reads no footer)".into(),
            ));
        }
        let copy_options = copy_options::parse_for(format, &raw.copy_options)
            .map_err(|e| bad("copy_options", e))?;
        let defaults = crate::ops::upkeep::Options::default();
        let percent = |key: &str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(p) if (0.0..=100.0).contains(&p) => Ok(p),
            Some(p) => Err(bad(key, format!("{p} is not a percentage (0 to 100)"))),
        };
        let upkeep = crate::ops::upkeep::Options {
            analyze: raw.analyze,
            vacuum: raw.vacuum,
            analyze_threshold: percent(
                "analyze_threshold",
                raw.analyze_threshold,
                defaults.analyze_threshold,
            )?,
            unsorted_threshold: percent(
                "vacuum_unsorted_threshold",
                raw.vacuum_unsorted_threshold,
                defaults.unsorted_threshold,
            )?,
            deleted_threshold: percent(
                "vacuum_deleted_threshold",
                raw.vacuum_deleted_threshold,
                defaults.deleted_threshold,
            )?,
            vacuum_to_percent: match raw.vacuum_to_percent {
                None => defaults.vacuum_to_percent,
                Some(p) if p <= 100 => p,
                Some(p) => {
                    return Err(bad(
                        "vacuum_to_percent",
                        format!("{p} is not a percentage (0 to 100)"),
                    ))
                }
            },
        };
        if let Some(m) = &raw.ready_marker {
            crate::lake::markers::check_name(m).map_err(|e| bad("ready_marker", e))?;
        }
        routes.push(Route {
            bucket: raw.bucket,
            prefix: normalise_prefix(&raw.prefix),
            table,
            format,
            partition_columns,
            file_columns,
            mode: raw.mode,
            null_value: raw.null_value,
            copy_options,
            statupdate: raw.statupdate,
            add_new_columns: raw.add_new_columns,
            upkeep,
            ready_marker: raw.ready_marker,
        });
    }
    check_overlaps(&routes)?;
    Ok(routes)
}

fn buckets_may_meet(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Overlapping routes are refused rather than resolved by longest prefix: one key must
/// belong to one table, and a silent winner would hide a configuration mistake.
fn check_overlaps(routes: &[Route]) -> Result<(), LoaderError> {
    for (i, a) in routes.iter().enumerate() {
        for (j, b) in routes.iter().enumerate().skip(i + 1) {
            let overlap = buckets_may_meet(&a.bucket, &b.bucket)
                && (a.prefix.starts_with(&b.prefix) || b.prefix.starts_with(&a.prefix));
            if overlap {
                return Err(LoaderError::Config(format!(
                    "routes[{j}].prefix: {:?} overlaps routes[{i}].prefix {:?} (same bucket); \
                     a key must match exactly one route",
                    b.prefix, a.prefix
                )));
            }
            // A replace load deletes the partition's rows in the table; a second route
            // feeding the same table would have its rows deleted too.
            let replace = a.mode == Mode::Replace || b.mode == Mode::Replace;
            if replace && a.table == b.table {
                return Err(LoaderError::Config(format!(
                    "routes[{j}].table: {} is also the table of routes[{i}]; a table in replace \
                     mode must have exactly one route",
                    b.table
                )));
            }
        }
    }
    Ok(())
}

/// Our manifests must not wake us: refuse a manifest prefix a route watches.
fn check_manifest_prefix(manifest: &S3Location, routes: &[Route]) -> Result<(), LoaderError> {
    for (i, r) in routes.iter().enumerate() {
        let same_bucket = r.bucket.as_deref().is_none_or(|b| b == manifest.bucket);
        if same_bucket
            && (manifest.prefix.starts_with(&r.prefix) || r.prefix.starts_with(&manifest.prefix))
        {
            return Err(LoaderError::Config(format!(
                "MANIFEST_PREFIX: s3://{}/{} overlaps routes[{i}] (prefix {:?}); manifests would \
                 trigger the loader",
                manifest.bucket, manifest.prefix, r.prefix
            )));
        }
    }
    Ok(())
}

/// The variables every unit test's configuration shares (a Serverless workgroup,
/// manifests under `s3://lake/_loader/`); `LOADER_CONFIG` is the test's own.
#[cfg(test)]
const TEST_ENV: [(&str, &str); 4] = [
    ("REDSHIFT_WORKGROUP", "wg"),
    ("REDSHIFT_DATABASE", "dev"),
    ("COPY_IAM_ROLE", "arn:aws:iam::123456789012:role/copy"),
    ("MANIFEST_PREFIX", "s3://lake/_loader/"),
];

#[cfg(test)]
impl Config {
    /// A valid configuration with these routes (TOML), for unit tests.
    pub(crate) fn for_tests(routes: &str) -> Config {
        Config::from_lookup(|name| {
            if name == "LOADER_CONFIG" {
                return Some(routes.to_string());
            }
            TEST_ENV
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .expect("a valid test configuration")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ROUTES: &str = r#"
        [[routes]]
        bucket = "lake"
        prefix = "transformed/orders"
        table = "Sales.Orders"
        format = "parquet"
        partition_columns = [{ name = "order_date", type = "date" }]
        file_columns = ["order_id", "amount"]

        [[routes]]
        prefix = "raw/events/"
        table = "raw.events"
        format = "csv"
        header = true
        partition_columns = ["source", { name = "year", type = "integer" }]
        mode = "replace"
    "#;

    fn env(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = TEST_ENV
            .into_iter()
            .chain([("MANIFEST_PREFIX", "s3://lake/_manifests")])
            .chain([("LOADER_CONFIG", ROUTES)])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in extra {
            if v.is_empty() {
                m.remove(*k);
            } else {
                m.insert(k.to_string(), v.to_string());
            }
        }
        m
    }

    fn load(extra: &[(&str, &str)]) -> Result<Config, LoaderError> {
        let m = env(extra);
        Config::from_lookup(|k| m.get(k).cloned())
    }

    fn err(extra: &[(&str, &str)]) -> String {
        load(extra).unwrap_err().to_string()
    }

    #[test]
    fn valid_config_with_defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(
            c.redshift,
            RedshiftTarget::Serverless {
                workgroup: "wg".into()
            }
        );
        assert_eq!(c.loader_schema.as_str(), "partition_loader");
        assert_eq!(c.lease_ttl, Duration::from_secs(960));
        assert_eq!(c.sweep_look_back_days, 3);
        assert!(retired_set(|_| None).is_empty());
        let set = retired_set(|n| (n == "LOCK_WAIT_SECONDS").then(|| "x".to_string()));
        assert_eq!(
            set[0].0, "LOCK_WAIT_SECONDS",
            "set, even unparsable: warned, no error"
        );
        assert_eq!(c.manifest.prefix, "_manifests/");
        let r = &c.routes[0];
        assert_eq!(r.prefix, "transformed/orders/");
        assert_eq!(r.table.to_string(), "sales.orders");
        assert_eq!(r.mode, Mode::Append);
        assert_eq!(r.partition_columns[0].ty, PartitionType::Date);
        assert_eq!(r.file_columns.as_ref().unwrap().len(), 2);
        let r = &c.routes[1];
        assert_eq!(r.format, FileFormat::Csv { header: true });
        assert_eq!(r.partition_columns[0].ty, PartitionType::String);
        assert_eq!(r.partition_columns[1].ty, PartitionType::Integer);
        assert_eq!(r.mode, Mode::Replace);
        assert!(r.claims("any-bucket", "raw/events/source=x/year=1/f.csv"));
        assert!(!c.routes[0].claims("other", "transformed/orders/x"));
        assert!(!c.routes[0].claims("lake", "transformed/orders_v2/x"));
    }

    #[test]
    fn redshift_target_variables() {
        assert!(err(&[("REDSHIFT_WORKGROUP", "")]).contains("REDSHIFT_WORKGROUP"));
        assert!(err(&[("REDSHIFT_CLUSTER_ID", "c")]).contains("REDSHIFT_WORKGROUP"));
        let cluster = [("REDSHIFT_WORKGROUP", ""), ("REDSHIFT_CLUSTER_ID", "c")];
        assert!(err(&cluster).contains("REDSHIFT_DB_USER"));
        let full = "arn:aws:secretsmanager:us-east-1:123456789012:secret:loader-db-a1B2c3";
        let c = load(&[cluster[0], cluster[1], ("REDSHIFT_SECRET_ARN", full)]).unwrap();
        assert_eq!(
            c.redshift,
            RedshiftTarget::Cluster {
                cluster_id: "c".into(),
                auth: ClusterAuth::SecretArn(full.into())
            }
        );
    }

    #[test]
    fn secret_must_be_a_full_arn() {
        let cluster = [("REDSHIFT_WORKGROUP", ""), ("REDSHIFT_CLUSTER_ID", "c")];
        for partial in [
            "arn:s",
            "loader-db",
            // The name without the six random characters: IAM would not match it.
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:loader",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:loader-db",
            "arn:aws:secretsmanager:us-east-1:1234:secret:loader-db-a1B2c3",
            "arn:aws:ssm:us-east-1:123456789012:secret:loader-db-a1B2c3",
        ] {
            let e = err(&[cluster[0], cluster[1], ("REDSHIFT_SECRET_ARN", partial)]);
            assert!(
                e.contains("REDSHIFT_SECRET_ARN") && e.contains("full ARN"),
                "{partial}: {e}"
            );
        }
        assert!(check_secret_arn(
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:a/b-c_d-ZZZZZ9"
        )
        .is_ok());
    }

    #[test]
    fn sweep_bucket_covers_routes_that_name_none() {
        let c = load(&[("SWEEP_BUCKET", "stack-data")]).unwrap();
        assert_eq!(c.sweep_bucket_of(&c.routes[0]), Some("lake"));
        assert_eq!(c.sweep_bucket_of(&c.routes[1]), Some("stack-data"));
        // Events keep matching any bucket for that route.
        assert!(c.routes[1].claims("other", "raw/events/source=x/year=1/f.csv"));
        let c = load(&[]).unwrap();
        assert_eq!(c.sweep_bucket_of(&c.routes[1]), None);
    }

    #[test]
    fn the_watermark_age_is_hours_with_zero_turning_the_gate_off() {
        let c = load(&[]).unwrap();
        assert_eq!(c.sweep_watermark_max_age, Duration::from_secs(6 * 3600));
        let c = load(&[("SWEEP_WATERMARK_MAX_AGE_HOURS", "0")]).unwrap();
        assert_eq!(c.sweep_watermark_max_age, Duration::ZERO);
        assert!(err(&[("SWEEP_WATERMARK_MAX_AGE_HOURS", "6h")])
            .contains("SWEEP_WATERMARK_MAX_AGE_HOURS"));
        assert!(err(&[("SWEEP_WATERMARK_MAX_AGE_HOURS", "1000")])
            .contains("SWEEP_WATERMARK_MAX_AGE_HOURS"));
    }

    #[test]
    fn each_bad_variable_is_named() {
        assert!(err(&[("REDSHIFT_DATABASE", "")]).contains("REDSHIFT_DATABASE"));
        assert!(err(&[("COPY_IAM_ROLE", "role")]).contains("COPY_IAM_ROLE"));
        assert!(err(&[("LOADER_SCHEMA", "bad-name")]).contains("LOADER_SCHEMA"));
        assert!(err(&[("MANIFEST_PREFIX", "lake/m")]).contains("MANIFEST_PREFIX"));
        assert!(err(&[("LEASE_TTL_SECONDS", "900")]).contains("LEASE_TTL_SECONDS"));
        assert!(err(&[("LOADER_CONFIG", "")]).contains("LOADER_CONFIG"));
        assert!(err(&[("SWEEP_LOOK_BACK_DAYS", "-1")]).contains("SWEEP_LOOK_BACK_DAYS"));
        assert_eq!(
            load(&[("SWEEP_LOOK_BACK_DAYS", "7")])
                .unwrap()
                .sweep_look_back_days,
            7
        );
        assert!(err(&[("SWEEP_BUCKET", "lake/x")]).contains("SWEEP_BUCKET"));
        assert!(err(&[("LOADER_CONFIG_FILE", "/x")]).contains("exactly one"));
        let missing = [
            ("LOADER_CONFIG", ""),
            ("LOADER_CONFIG_FILE", "/nonexistent.toml"),
        ];
        assert!(err(&missing).contains("LOADER_CONFIG_FILE"));
    }

    #[test]
    fn manifest_prefix_must_not_be_watched() {
        let e = err(&[("MANIFEST_PREFIX", "s3://lake/transformed/orders/_m/")]);
        assert!(
            e.contains("MANIFEST_PREFIX") && e.contains("routes[0]"),
            "{e}"
        );
        // routes[1] watches any bucket
        let e = err(&[("MANIFEST_PREFIX", "s3://other/raw/events/m/")]);
        assert!(e.contains("routes[1]"), "{e}");
        assert!(load(&[("MANIFEST_PREFIX", "s3://other/manifests/")]).is_ok());
    }

    fn route_err(toml: &str) -> String {
        parse_routes(toml).unwrap_err().to_string()
    }

    #[test]
    fn bad_routes_name_the_key() {
        let base = |extra: &str| {
            format!("[[routes]]\nprefix = \"p/\"\ntable = \"s.t\"\nformat = \"parquet\"\n{extra}")
        };
        assert!(route_err(&base("mode = \"upsert\"")).contains("mode"));
        assert!(
            route_err(&base("add_new_columns = true\nfile_columns = [\"a\"]"))
                .contains("routes[0].add_new_columns")
        );
        assert!(parse_routes(&base("add_new_columns = true")).unwrap()[0].add_new_columns);
        let csv = "[[routes]]\nprefix = \"p/\"\ntable = \"s.t\"\nformat = \"csv\"\n";
        assert!(route_err(&format!("{csv}add_new_columns = true"))
            .contains("routes[0].add_new_columns"));
        assert!(route_err(&base("partition_columns = [\"a-b\"]"))
            .contains("routes[0].partition_columns"));
        assert!(route_err(&base("partition_columns = [\"a\", \"A\"]")).contains("twice"));
        assert!(route_err(&base(
            "partition_columns = [{ name = \"d\", type = \"time\" }]"
        ))
        .contains("partition_columns"));
        assert!(route_err(&base("file_columns = []")).contains("routes[0].file_columns"));
        assert!(route_err(&base("header = true")).contains("routes[0].header"));
        assert!(route_err(&base("colour = 1")).contains("colour"));
        assert!(
            route_err("[[routes]]\nprefix = \"p\"\ntable = \"t\"\nformat = \"csv\"")
                .contains("routes[0].table")
        );
        assert!(route_err("routes = []").contains("at least one"));
        assert!(route_err(&base("null_value = \"\"")).contains("routes[0].null_value"));
    }

    #[test]
    fn copy_options_are_checked_against_the_format() {
        let route = |format: &str, opts: &str| {
            format!(
                "[[routes]]\nprefix = \"p/\"\ntable = \"s.t\"\nformat = \"{format}\"\n\
                 copy_options = {opts}\n"
            )
        };
        let e = route_err(&route("parquet", r#"["EMPTYASNULL"]"#));
        assert!(
            e.contains("routes[0].copy_options") && e.contains("EMPTYASNULL"),
            "{e}"
        );
        let e = route_err(&route("csv", r#"["NULL AS x"]"#));
        assert!(e.contains("routes[0].copy_options"), "{e}");
        let r = parse_routes(&route(
            "csv",
            r#"["EMPTYASNULL", "NULL AS 'NA'", "TIMEFORMAT 'YYYY-MM-DD HH:MI:SS'"]"#,
        ))
        .unwrap();
        assert_eq!(r[0].copy_options.len(), 3);
        assert_eq!(r[0].copy_options[1], CopyOption::NullAs("NA".into()));
        assert!(parse_routes(&route("parquet", r#"["ACCEPTINVCHARS AS '?'"]"#)).is_ok());
    }

    #[test]
    fn overlapping_routes_are_refused() {
        let two = |b1: &str, p1: &str, b2: &str, p2: &str| {
            format!(
                "[[routes]]\n{b1}prefix = \"{p1}\"\ntable = \"s.a\"\nformat = \"json\"\n\
                 [[routes]]\n{b2}prefix = \"{p2}\"\ntable = \"s.b\"\nformat = \"json\"\n"
            )
        };
        let e = route_err(&two("bucket = \"l\"\n", "a/", "bucket = \"l\"\n", "a/b/"));
        assert!(
            e.contains("routes[1].prefix") && e.contains("overlaps"),
            "{e}"
        );
        assert!(route_err(&two("", "a/", "bucket = \"l\"\n", "a/b/")).contains("overlaps"));
        assert!(parse_routes(&two("bucket = \"l\"\n", "a/", "bucket = \"m\"\n", "a/")).is_ok());
        assert!(parse_routes(&two("", "a/", "", "ab/")).is_ok());
        let same_table = "[[routes]]\nprefix = \"a/\"\ntable = \"s.t\"\nformat = \"json\"\n\
             mode = \"replace\"\n[[routes]]\nprefix = \"b/\"\ntable = \"s.t\"\nformat = \"json\"\n";
        assert!(route_err(same_table).contains("replace"));
    }
}
