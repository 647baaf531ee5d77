//! `loaderctl doctor`: everything that can be checked before the first event, with the
//! function's own configuration and database identity. Each check is one line with
//! the fix for a failure. The SQL is in [`crate::sql`] (`doctor_*`); reading the rows
//! into [`Check`]s is pure and unit-tested here.
//!
//! Only catalog tables and leader-node functions (`has_table_privilege` …) are used,
//! never together with user tables, which Redshift refuses
//! (<https://docs.aws.amazon.com/redshift/latest/dg/c_SQL_functions_leader_node_only.html>).

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::LoaderError;
use crate::io::storage::{Storage, S3};
use crate::io::warehouse::{DataApi, Row};
use crate::lake::config::{Mode, Route};
use crate::run::handler::Loader;
use crate::sql::{self, DbUser, Ident, LeaseTables, TableName};

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Something the first event would trip over.
    Finding,
    /// Shown, not judged (the identity, the isolation level).
    Info,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do about a finding.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn info(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            status: Status::Info,
            ..Check::ok(name, detail)
        }
    }

    fn finding(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Finding,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// The JSON line loaderctl prints.
    pub fn to_json(&self) -> Value {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Finding => "finding",
            Status::Info => "info",
        };
        let mut line = json!({"check": self.name, "status": status, "detail": self.detail});
        if let Some(fix) = &self.fix {
            line["fix"] = json!(fix);
        }
        line
    }
}

/// The process exit code: 0 healthy, 1 findings (2, could not check, is the caller's).
pub fn exit_code(checks: &[Check]) -> u8 {
    u8::from(checks.iter().any(|c| c.status == Status::Finding))
}

/// Runs every check. `Err` only when the warehouse cannot be asked at all (exit 2).
pub async fn run(
    loader: &Loader<DataApi, S3>,
    deadline: Instant,
) -> Result<Vec<Check>, LoaderError> {
    let config = loader.config();
    let schema = &config.loader_schema;
    let who = loader
        .query(sql::doctor_identity().into(), vec![], deadline)
        .await?;
    let user = cell(&who, 0, 0).unwrap_or("?").to_string();
    let database = cell(&who, 0, 1).unwrap_or("?").to_string();
    let grantee = DbUser::parse(&user)
        .map(|u| u.quoted())
        .unwrap_or_else(|_| format!("\"{user}\""));
    let mut checks = vec![Check::info(
        "identity",
        format!("running as database user {user} in database {database}"),
    )];

    checks.push(
        match loader
            .query(sql::doctor_isolation().into(), vec![], deadline)
            .await
        {
            Ok(rows) => isolation_check(&rows),
            Err(e) => Check::info(
                "isolation level",
                format!("not readable here (STV_DB_ISOLATION_LEVEL: {e}); the loader is correct under SNAPSHOT and SERIALIZABLE"),
            ),
        },
    );

    let schema_rows = loader
        .query(
            sql::doctor_schema().into(),
            vec![("schema", schema.as_str().to_string())],
            deadline,
        )
        .await;
    let schema_usable = match &schema_rows {
        Ok(rows) => {
            let check = schema_check(schema, rows, &grantee);
            let usable = check.status == Status::Ok;
            checks.push(check);
            usable
        }
        Err(e) => {
            checks.push(failed_query("loader schema", e));
            false
        }
    };
    if schema_usable {
        match loader
            .query(
                sql::doctor_loader_tables().into(),
                vec![("schema", schema.as_str().to_string())],
                deadline,
            )
            .await
        {
            Ok(rows) => checks.extend(loader_table_checks(
                schema,
                &rows,
                &grantee,
                &route_lease_tables(&config.routes),
            )),
            Err(e) => checks.push(failed_query("loader tables", &e)),
        }
        for t in route_lease_tables(&config.routes) {
            for (name, batch) in sql::doctor_procedure_probes(schema, &t) {
                let result = loader.execute_batch(batch, deadline).await;
                checks.push(procedure_check(schema, &name, result, &grantee));
            }
        }
    }

    for route in &config.routes {
        checks.extend(route_checks(loader, route, &database, &grantee, deadline).await);
    }

    // Upkeep after loads (upkeep.rs) decides from SVV_TABLE_INFO, superusers' only
    // unless granted. Loads do not need it: info, not a finding.
    if config.routes.iter().any(|r| !r.upkeep.is_off()) {
        let probe = crate::ops::upkeep::SVV_PROBE_SQL.to_string();
        checks.push(match loader.query(probe, vec![], deadline).await {
            Ok(_) => Check::ok("upkeep: svv_table_info", "readable"),
            Err(e) => Check::info(
                "upkeep: svv_table_info",
                format!(
                    "not readable, so upkeep after loads skips every table ({e}); for \
                     upkeep: GRANT SELECT ON svv_table_info TO {grantee}"
                ),
            ),
        });
    }
    checks.extend(upkeep_rights_checks(loader, &grantee, deadline).await);
    checks.extend(add_columns_checks(loader, &grantee, deadline).await);
    for route in config.table_routes() {
        checks.push(sweep_check(route, config.sweep_bucket_of(route)));
    }
    checks.extend(region_checks(loader).await);
    let manifest = manifest_check(loader).await;
    let writable = manifest.status == Status::Ok;
    checks.push(manifest);
    let role = copy_role_check(&config.copy_iam_role);
    let role_ok = role.status == Status::Ok;
    checks.push(role);
    checks.push(if writable && role_ok {
        copy_role_reads_manifests(loader, deadline).await
    } else {
        Check::info(
            COPY_PROBE,
            "not checked: the manifest prefix is not writable or COPY_IAM_ROLE is not a role ARN",
        )
    });
    Ok(checks)
}

fn cell(rows: &[Row], row: usize, col: usize) -> Option<&str> {
    rows.get(row)?.get(col)?.as_deref()
}

fn is_true(value: Option<&str>) -> bool {
    matches!(value, Some("true" | "t" | "1"))
}

fn failed_query(name: &str, e: &LoaderError) -> Check {
    Check::finding(
        name,
        format!("could not be read: {e}"),
        "check the user's privileges and that the loader schema was bootstrapped \
         (loaderctl bootstrap --grant-to USER, as the schema's owner)",
    )
}

fn isolation_check(rows: &[Row]) -> Check {
    match cell(rows, 0, 0) {
        Some(level) => Check::info(
            "isolation level",
            format!("{level} (the loader is correct under SNAPSHOT and SERIALIZABLE)"),
        ),
        None => Check::info("isolation level", "not shown to this user"),
    }
}

/// Rows of [`sql::doctor_schema`]: `(exists, usage)`.
/// Whether the loader's user may ANALYZE and VACUUM each upkept table (owner, superuser,
/// or a role with the system permission): info, not a finding (loads do not need it;
/// upkeep skips such a table and says so), naming the grant.
async fn upkeep_rights_checks(
    loader: &Loader<DataApi, S3>,
    grantee: &str,
    deadline: Instant,
) -> Vec<Check> {
    let routes: Vec<&Route> = loader
        .config()
        .table_routes()
        .into_iter()
        .filter(|r| !r.upkeep.is_off())
        .collect();
    if routes.is_empty() {
        return Vec::new();
    }
    let tables: Vec<&TableName> = routes.iter().map(|r| &r.table).collect();
    let rows = match crate::ops::upkeep::rights_sql(&tables) {
        Ok(sql) => loader.query(sql, vec![], deadline).await,
        Err(e) => Err(e),
    };
    match rows {
        Ok(rows) => upkeep_rights_of(&tables, &rows, grantee),
        Err(e) => vec![Check::info(
            "upkeep: rights",
            format!("cannot tell whether {grantee} may ANALYZE/VACUUM the route tables: {e}"),
        )],
    }
}

/// Whether the loader's user may add columns to the table of each route with
/// `add_new_columns`: Redshift runs ALTER TABLE for the owner, a superuser or a holder of
/// the ALTER TABLE system permission
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_roles-system-privileges.html>);
/// there is no table privilege ALTER to grant. A finding: the first file with a new
/// column would be refused.
async fn add_columns_checks(
    loader: &Loader<DataApi, S3>,
    grantee: &str,
    deadline: Instant,
) -> Vec<Check> {
    let tables: Vec<&TableName> = loader
        .config()
        .table_routes()
        .into_iter()
        .filter(|r| r.add_new_columns)
        .map(|r| &r.table)
        .collect();
    if tables.is_empty() {
        return Vec::new();
    }
    let rows = match add_columns_sql(&tables) {
        Ok(sql) => loader.query(sql, vec![], deadline).await,
        Err(e) => Err(e),
    };
    match rows {
        Ok(rows) => add_columns_of(&tables, &rows, grantee),
        Err(e) => vec![Check::info(
            "add_new_columns: rights",
            format!("cannot tell whether {grantee} may add columns to the route tables: {e}"),
        )],
    }
}

/// Per table: `(schema, table, may ALTER TABLE)`.
fn add_columns_sql(tables: &[&TableName]) -> Result<String, LoaderError> {
    let filter = crate::ops::upkeep::tables_filter(tables)?;
    Ok(format!(
        "SELECT p.schemaname, p.tablename, {} FROM pg_tables p WHERE {}",
        crate::ops::upkeep::may_sql("ALTER TABLE"),
        filter
    ))
}

/// Rows of [`add_columns_sql`] → one check per table (pure).
fn add_columns_of(tables: &[&TableName], rows: &[Row], grantee: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    for table in tables {
        let name = format!("add_new_columns: {table}");
        let Some(row) = table_row(rows, table) else {
            // A missing table is the route check's finding.
            continue;
        };
        let may = row.get(2).cloned().flatten().as_deref().map(str::trim) == Some("1");
        checks.push(if may {
            Check::ok(name, "may add columns")
        } else {
            let user = DbUser::parse(grantee.trim_matches('"'));
            let fix = match user {
                Ok(user) => format!(
                    "as the table's owner: {}; or, as a superuser (lets it alter every \
                     table): {}",
                    sql::add_columns_right(table, &user),
                    sql::add_columns_role(&user)
                ),
                Err(_) => format!("make {grantee} the owner of {table}"),
            };
            Check::finding(
                name,
                format!(
                    "{grantee} may not ALTER TABLE {table} (it is not the owner, a superuser \
                     or a holder of the ALTER TABLE system permission): a file with a new \
                     column would be refused"
                ),
                fix,
            )
        });
    }
    checks
}

/// The row of `table` among rows that start with its schema and name.
fn table_row<'r>(rows: &'r [Row], table: &TableName) -> Option<&'r Row> {
    rows.iter().find(|r| {
        r.first().cloned().flatten().as_deref() == Some(table.schema.as_str())
            && r.get(1).cloned().flatten().as_deref() == Some(table.name.as_str())
    })
}

/// Rows of [`crate::ops::upkeep::rights_sql`] → one check per table (pure).
fn upkeep_rights_of(tables: &[&TableName], rows: &[Row], grantee: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    for table in tables {
        let name = format!("upkeep: {table}");
        let Some(row) = table_row(rows, table) else {
            // A missing table is the route check's finding.
            continue;
        };
        let yes = |i: usize| row.get(i).cloned().flatten().as_deref().map(str::trim) == Some("1");
        let mut missing = Vec::new();
        if !yes(2) {
            missing.push("ANALYZE");
        }
        if !yes(3) {
            missing.push("VACUUM");
        }
        checks.push(if missing.is_empty() {
            Check::ok(name, "may ANALYZE and VACUUM")
        } else {
            let user = grantee.trim_matches('"');
            let perms = missing.join(", ");
            Check {
                fix: Some(format!(
                    "as a superuser: CREATE ROLE loader_upkeep; GRANT {perms} TO ROLE \
                     loader_upkeep; GRANT ROLE loader_upkeep TO {grantee}"
                )),
                ..Check::info(
                    name,
                    crate::ops::upkeep::missing_right(table, user, &missing),
                )
            }
        });
    }
    checks
}

fn schema_check(schema: &Ident, rows: &[Row], grantee: &str) -> Check {
    let name = "loader schema";
    if !is_true(cell(rows, 0, 0)) {
        return Check::finding(
            name,
            format!("schema {schema} does not exist"),
            format!("loaderctl bootstrap --grant-to {grantee} (as a user who may create schemas)"),
        );
    }
    if !is_true(cell(rows, 0, 1)) {
        return Check::finding(
            name,
            format!("no USAGE on schema {schema}"),
            format!("GRANT USAGE ON SCHEMA {} TO {grantee}", schema.quoted()),
        );
    }
    Check::ok(name, format!("{schema} exists and is usable"))
}

/// The lease tables of every configured route's target, each target once.
fn route_lease_tables(routes: &[Route]) -> Vec<LeaseTables> {
    let mut out: Vec<LeaseTables> = Vec::new();
    for route in routes {
        if !out.iter().any(|t| t.target == route.table) {
            out.push(LeaseTables::for_target(&route.table));
        }
    }
    out
}

/// Rows of [`sql::doctor_loader_tables`]: `(table, select, insert, update, delete)`;
/// every route's lease, ledger, wake-up and quarantine table ([`sql::bootstrap_table`]) must be
/// there with all four.
fn loader_table_checks(
    schema: &Ident,
    rows: &[Row],
    grantee: &str,
    routes: &[LeaseTables],
) -> Vec<Check> {
    routes
        .iter()
        .flat_map(sql::loader_tables)
        .map(|table| {
            let name = format!("loader table {schema}.{table}");
            let Some(row) = rows
                .iter()
                .find(|r| r.first().and_then(|c| c.as_deref()) == Some(&table))
            else {
                return Check::finding(
                    name,
                    "missing",
                    format!("loaderctl bootstrap --grant-to {grantee}"),
                );
            };
            let missing: Vec<&str> = ["SELECT", "INSERT", "UPDATE", "DELETE"]
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !is_true(row.get(i + 1).and_then(|c| c.as_deref())))
                .map(|(_, p)| p)
                .collect();
            if missing.is_empty() {
                Check::ok(name, "SELECT, INSERT, UPDATE, DELETE granted")
            } else {
                Check::finding(
                    name,
                    format!("missing {}", missing.join(", ")),
                    format!(
                        "GRANT {} ON {}.\"{table}\" TO {grantee}",
                        missing.join(", "),
                        schema.quoted()
                    ),
                )
            }
        })
        .collect()
}

/// A probe of a lease procedure ([`sql::doctor_procedure_probes`]): callable when its
/// batch raises the loader's own "lease ... not held" error (and so changed nothing).
fn procedure_check(
    schema: &Ident,
    procedure: &str,
    result: Result<String, LoaderError>,
    grantee: &str,
) -> Check {
    let name = format!("procedure {schema}.{procedure}");
    match result {
        Err(e) if e.to_string().contains(sql::LEASE_LOST_MARKER) => {
            Check::ok(name, "exists and is callable")
        }
        Err(e) if e.to_string().contains(sql::LEASE_ROWS_MARKER) => Check::finding(
            name,
            format!("the lease table does not hold exactly one row: {e}"),
            "loaderctl bootstrap, then loaderctl unlock TABLE",
        ),
        Err(e) if e.to_string().contains("does not exist") => Check::finding(
            name,
            format!("missing: {e}"),
            format!("loaderctl bootstrap --grant-to {grantee}"),
        ),
        Err(e) => Check::finding(
            name,
            format!("not callable: {e}"),
            format!(
                "GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA {} TO {grantee}",
                schema.quoted()
            ),
        ),
        Ok(_) => Check::finding(
            name,
            "a probe on a lease nobody holds did not raise: not the loader's procedure",
            "loaderctl bootstrap (it replaces the procedures)",
        ),
    }
}

/// Rows of [`sql::doctor_table`]: `(owner is us, usage, insert, select, delete, temp)`;
/// columns from [`sql::doctor_columns`].
fn route_table_checks(
    route: &Route,
    table_rows: &[Row],
    columns: &[String],
    database: &str,
    grantee: &str,
) -> Vec<Check> {
    let table = &route.table;
    let name = format!("route table {table}");
    let Some(row) = table_rows.first() else {
        return vec![Check::finding(
            name,
            "does not exist (or its schema is not visible)",
            format!("create {table}, then run as its owner: loaderctl bootstrap --grant-to {grantee} prints the GRANTs"),
        )];
    };
    let flag = |i: usize| is_true(row.get(i).and_then(|c| c.as_deref()));
    let mut checks = Vec::new();
    let needed: Vec<&str> = route
        .partition_columns
        .iter()
        .map(|c| c.name.as_str())
        .chain(route.file_columns.iter().flatten().map(Ident::as_str))
        .collect();
    let absent: Vec<&str> = needed
        .into_iter()
        .filter(|c| !columns.iter().any(|have| have == c))
        .collect();
    checks.push(if absent.is_empty() {
        Check::ok(
            format!("{name} columns"),
            format!("has the route's columns ({} in all)", columns.len()),
        )
    } else {
        Check::finding(
            format!("{name} columns"),
            format!("lacks column(s) {}", absent.join(", ")),
            format!(
                "ALTER TABLE {} ADD COLUMN ... for each, or fix the route",
                table.quoted()
            ),
        )
    });
    let may_stage = !route.partition_columns.is_empty() || route.file_columns.is_some();
    let replace = route.mode == Mode::Replace;
    let mut missing = Vec::new();
    // Without USAGE the table's name does not resolve, so its privileges were not read
    // (NULL): only USAGE is reported missing.
    let usage = flag(1);
    if !usage {
        missing.push(format!("USAGE on schema {}", table.schema));
    }
    if usage && !flag(2) {
        missing.push("INSERT".to_string());
    }
    if usage && (may_stage || replace) && !flag(3) {
        missing.push("SELECT".to_string());
    }
    if usage && replace && !flag(4) {
        missing.push("DELETE".to_string());
    }
    if may_stage && !flag(5) {
        missing.push(format!("TEMP on database {database}"));
    }
    let user = DbUser::parse(grantee.trim_matches('"'));
    let fix = |what: &str| match &user {
        Ok(u) => format!(
            "as the table's owner: {}",
            sql::route_grants(table, may_stage, replace, route.statupdate, database, u).join("; ")
        ),
        Err(_) => format!("grant {what} to {grantee}"),
    };
    checks.push(if missing.is_empty() {
        Check::ok(
            format!("{name} grants"),
            "the function's user has what the route needs",
        )
    } else {
        Check::finding(
            format!("{name} grants"),
            format!("missing {}", missing.join(", ")),
            fix(&missing.join(", ")),
        )
    });
    if route.statupdate {
        checks.push(if flag(0) {
            Check::ok(
                format!("{name} statupdate"),
                "the function's user owns the table",
            )
        } else {
            Check::finding(
                format!("{name} statupdate"),
                "statupdate = true, but only the table's owner may update statistics",
                format!(
                    "ALTER TABLE {} OWNER TO {grantee}, or set statupdate = false",
                    table.quoted()
                ),
            )
        });
    }
    checks
}

async fn route_checks(
    loader: &Loader<DataApi, S3>,
    route: &Route,
    database: &str,
    grantee: &str,
    deadline: Instant,
) -> Vec<Check> {
    let table = &route.table;
    let params = || {
        vec![
            ("schema", table.schema.as_str().to_string()),
            ("table", table.name.as_str().to_string()),
        ]
    };
    let exists = loader
        .query(sql::doctor_columns().into(), params(), deadline)
        .await;
    let columns: Vec<String> = match exists {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect(),
        Err(e) => return vec![failed_query(&format!("route table {table}"), &e)],
    };
    let table_rows = if columns.is_empty() {
        Vec::new()
    } else {
        let mut params = params();
        params.push(("qualified", table.quoted()));
        match loader
            .query(sql::doctor_table().into(), params, deadline)
            .await
        {
            Ok(rows) => rows,
            Err(e) => return vec![failed_query(&format!("route table {table}"), &e)],
        }
    };
    route_table_checks(route, &table_rows, &columns, database, grantee)
}

async fn manifest_check(loader: &Loader<DataApi, S3>) -> Check {
    let manifest = &loader.config().manifest;
    let key = format!(
        "{}_doctor/{:016x}.probe",
        manifest.prefix,
        fastrand::u64(..)
    );
    let url = format!("s3://{}/{key}", manifest.bucket);
    let name = "manifest prefix";
    let fix = format!(
        "allow s3:PutObject on arn:aws:s3:::{}/{}* for the function's role",
        manifest.bucket, manifest.prefix
    );
    if let Err(e) = loader
        .storage()
        .put(
            &manifest.bucket,
            &key,
            "partition-loader doctor probe".into(),
        )
        .await
    {
        return Check::finding(name, format!("cannot write {url}: {e}"), fix);
    }
    match loader.storage().delete(&manifest.bucket, &key).await {
        Ok(()) => Check::ok(
            name,
            format!("s3://{}/{} is writable", manifest.bucket, manifest.prefix),
        ),
        // The function's role may only put manifests (template.yaml grants no
        // s3:DeleteObject): a probe it cannot delete is left for the manifest prefix's
        // lifecycle rule, not a finding.
        Err(e) => Check::ok(
            name,
            format!(
                "s3://{}/{} is writable (the probe {url} stays, not deletable: {e})",
                manifest.bucket, manifest.prefix
            ),
        ),
    }
}

const COPY_PROBE: &str = "copy role reads manifests";

/// Whether Redshift, with `COPY_IAM_ROLE`, can read what the loader puts under the
/// manifest prefix (a manifest bucket of its own needs its own grant, README step 8): a
/// probe COPY of a one-row file through a manifest, both written there, into a
/// temporary table. Only a real COPY answers this: IAM and the role's association with
/// the namespace or cluster are Redshift's side.
async fn copy_role_reads_manifests(loader: &Loader<DataApi, S3>, deadline: Instant) -> Check {
    let config = loader.config();
    let (bucket, prefix) = (&config.manifest.bucket, &config.manifest.prefix);
    let base = format!("{prefix}_doctor/{:016x}", fastrand::u64(..));
    let (data_key, manifest_key) = (format!("{base}.csv"), format!("{base}.manifest"));
    let data = "1\n";
    let manifest = json!({"entries": [{
        "url": format!("s3://{bucket}/{data_key}"),
        "mandatory": true,
        "meta": {"content_length": data.len()},
    }]})
    .to_string();
    let fix = format!(
        "let the COPY role read the manifests: s3:GetObject on arn:aws:s3:::{bucket}/{prefix}* \
         and s3:ListBucket on arn:aws:s3:::{bucket} with s3:prefix {prefix}* (README, First \
         deploy, step 8); and associate it with the namespace or cluster (step 4)"
    );
    let mut written = Vec::new();
    for (key, body) in [(&data_key, data.to_string()), (&manifest_key, manifest)] {
        if let Err(e) = loader.storage().put(bucket, key, body).await {
            return Check::info(
                COPY_PROBE,
                format!("not checked: cannot write the probe: {e}"),
            );
        }
        written.push(key);
    }
    let result = match sql::doctor_copy_probe(
        &format!("s3://{bucket}/{manifest_key}"),
        &config.copy_iam_role,
    ) {
        Ok(batch) => loader.execute_batch(batch, deadline).await.map(|_| ()),
        Err(e) => Err(e),
    };
    for key in written {
        // Best effort, as for the manifest probe: the lifecycle rule expires leftovers.
        let _ = loader.storage().delete(bucket, key).await;
    }
    match result {
        Ok(()) => Check::ok(
            COPY_PROBE,
            format!(
                "a probe COPY with {} read s3://{bucket}/{prefix}",
                config.copy_iam_role
            ),
        ),
        Err(e) => Check::finding(
            COPY_PROBE,
            format!(
                "a probe COPY with {} from s3://{bucket}/{prefix} failed: {e}",
                config.copy_iam_role
            ),
            fix,
        ),
    }
}

/// The buckets doctor checks the Region of: every route's bucket (`None`: a route that
/// takes any bucket) and the manifest bucket, each once, in configuration order.
fn region_buckets(routes: &[Route], manifest_bucket: &str) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = Vec::new();
    let all = routes
        .iter()
        .map(|r| r.bucket.clone())
        .chain(std::iter::once(Some(manifest_bucket.to_string())));
    for bucket in all {
        if !out.contains(&bucket) {
            out.push(bucket);
        }
    }
    out
}

/// A bucket's Region from GetBucketLocation's LocationConstraint: none or empty means
/// us-east-1, and `EU` is the legacy name of eu-west-1
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html>).
pub fn bucket_region(location: Option<&str>) -> String {
    match location {
        None | Some("") => "us-east-1".to_string(),
        Some("EU") => "eu-west-1".to_string(),
        Some(region) => region.to_string(),
    }
}

/// Bucket, stack and warehouse must share one Region: an EventBridge rule only sees
/// events of its own Region (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/EventBridge.html>),
/// so a bucket elsewhere never wakes the function, and COPY assumes the data is in the
/// warehouse's Region unless given a REGION option the loader does not send
/// (<https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-source-s3.html>).
/// `location` is the bucket's GetBucketLocation answer.
fn region_check(
    bucket: Option<&str>,
    location: Result<Option<String>, LoaderError>,
    function_region: Option<&str>,
) -> Check {
    let Some(bucket) = bucket else {
        return Check::info(
            "bucket region",
            "a route takes any bucket: its buckets' Region cannot be checked here (each must \
             be in the function's Region)",
        );
    };
    let name = format!("bucket region {bucket}");
    let Some(function_region) = function_region else {
        return Check::finding(
            name,
            "the function's Region is not configured",
            "set AWS_REGION (Lambda sets it to the stack's Region)",
        );
    };
    match location {
        Err(e) => Check::finding(
            name,
            format!("could not read the bucket's Region: {e}"),
            format!(
                "allow s3:GetBucketLocation on arn:aws:s3:::{bucket} for the function's role \
                 (the stack's template does), and check the bucket name"
            ),
        ),
        Ok(location) => {
            let region = bucket_region(location.as_deref());
            if region == function_region {
                Check::ok(
                    name,
                    format!("{bucket} is in {region}, the function's Region"),
                )
            } else {
                Check::finding(
                    name,
                    format!(
                        "{bucket} is in {region}, the function in {function_region}: \
                         EventBridge rules only see their own Region's events, so no event \
                         from this bucket reaches the function"
                    ),
                    format!(
                        "deploy the stack (and use a warehouse) in {region}, the bucket's Region \
                         (sam deploy --region {region})"
                    ),
                )
            }
        }
    }
}

async fn region_checks(loader: &Loader<DataApi, S3>) -> Vec<Check> {
    let config = loader.config();
    let function_region = loader.storage().region();
    let mut checks = Vec::new();
    for bucket in region_buckets(&config.routes, &config.manifest.bucket) {
        let location = match &bucket {
            Some(b) => loader.storage().bucket_location(b).await,
            None => Ok(None),
        };
        checks.push(region_check(
            bucket.as_deref(),
            location,
            function_region.as_deref(),
        ));
    }
    checks
}

/// Whether the sweep (the safety net for lost events) can list `route`'s recent date
/// partitions: it needs a bucket (the route's or `SWEEP_BUCKET`) and a date as first
/// partition column; otherwise it re-lists only the partitions the ledger loaded.
fn sweep_check(route: &Route, bucket: Option<&str>) -> Check {
    let name = format!("sweep {}", route.table);
    let Some(bucket) = bucket else {
        return Check::finding(
            name,
            format!(
                "the route {:?} names no bucket and SWEEP_BUCKET is not set: the sweep cannot \
                 list its partitions, so a file whose event was lost is never loaded",
                route.prefix
            ),
            "set SWEEP_BUCKET to the data bucket (the stack's template does) or the route's \
             bucket",
        );
    };
    let date_first = route
        .partition_columns
        .first()
        .is_some_and(|c| c.ty == sql::PartitionType::Date);
    if date_first {
        Check::ok(
            name,
            format!(
                "the sweep lists s3://{bucket}/{} for the days of its window",
                route.prefix
            ),
        )
    } else {
        Check::info(
            name,
            format!(
                "the first partition column of {:?} is not a date: the sweep re-lists only the \
                 partitions the ledger loaded in its window; `loaderctl backfill` finds others",
                route.prefix
            ),
        )
    }
}

/// `COPY_IAM_ROLE` is an IAM role ARN. Whether the cluster may assume it cannot be
/// checked without running a COPY.
fn copy_role_check(role: &str) -> Check {
    let parts: Vec<&str> = role.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].starts_with("role/")
        && parts[5].len() > 5;
    if ok {
        Check::ok(
            "copy role",
            format!("COPY_IAM_ROLE = {role} (it must be associated with the cluster or workgroup)"),
        )
    } else {
        Check::finding(
            "copy role",
            format!("COPY_IAM_ROLE = {role:?} is not an IAM role ARN"),
            "set COPY_IAM_ROLE to arn:aws:iam::<account>:role/<name>, a role associated with the cluster or workgroup",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::config::parse_routes;

    #[test]
    fn upkeep_rights_name_the_system_permission_grant() {
        let a = crate::sql::TableName::parse("sales.orders").unwrap();
        let b = crate::sql::TableName::parse("sales.items").unwrap();
        let rows = vec![
            row(&["sales", "orders", "1", "0", "u"]),
            row(&["sales", "items", "1", "1", "u"]),
        ];
        let checks = upkeep_rights_of(&[&a, &b], &rows, "\"u\"");
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].status, Status::Info);
        assert!(
            checks[0].detail.contains("u may not vacuum sales.orders"),
            "{:?}",
            checks[0]
        );
        assert_eq!(
            checks[0].fix.as_deref(),
            Some(
                "as a superuser: CREATE ROLE loader_upkeep; GRANT VACUUM TO ROLE loader_upkeep; \
                 GRANT ROLE loader_upkeep TO \"u\""
            )
        );
        assert_eq!(checks[1].status, Status::Ok);
    }

    #[test]
    fn add_columns_rights_name_ownership_not_a_grant_redshift_lacks() {
        let a = crate::sql::TableName::parse("sales.orders").unwrap();
        let b = crate::sql::TableName::parse("sales.items").unwrap();
        let rows = vec![
            row(&["sales", "orders", "0"]),
            row(&["sales", "items", "1"]),
        ];
        let checks = add_columns_of(&[&a, &b], &rows, "\"u\"");
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].status, Status::Finding);
        let fix = checks[0].fix.as_deref().unwrap_or_default();
        assert!(
            fix.contains("ALTER TABLE \"sales\".\"orders\" OWNER TO \"u\"")
                && fix.contains("GRANT ALTER TABLE TO ROLE")
                && !fix.contains("GRANT ALTER ON"),
            "{fix}"
        );
        assert_eq!(checks[1].status, Status::Ok);
        assert!(add_columns_sql(&[&a])
            .unwrap()
            .contains("system_privilege = 'ALTER TABLE'"));
    }

    fn row(cells: &[&str]) -> Row {
        cells.iter().map(|c| Some(c.to_string())).collect()
    }

    #[test]
    fn schema_and_loader_tables_name_the_missing_grant() {
        let s = Ident::parse("pl").unwrap();
        assert_eq!(
            schema_check(&s, &[row(&["false", "false"])], "\"u\"").status,
            Status::Finding
        );
        let no_usage = schema_check(&s, &[row(&["true", "false"])], "\"u\"");
        assert_eq!(
            no_usage.fix.as_deref(),
            Some("GRANT USAGE ON SCHEMA \"pl\" TO \"u\"")
        );
        assert_eq!(
            schema_check(&s, &[row(&["true", "true"])], "\"u\"").status,
            Status::Ok
        );

        let t = LeaseTables::for_target(&crate::sql::TableName::parse("sales.orders").unwrap());
        let rows = vec![
            row(&["lease_5_sales_orders", "true", "true", "true", "false"]),
            row(&["wakeup_5_sales_orders", "true", "true", "true", "true"]),
        ];
        let checks = loader_table_checks(&s, &rows, "\"u\"", std::slice::from_ref(&t));
        assert_eq!(
            checks.len(),
            4,
            "lease, ledger, wake-up and quarantine table of the route"
        );
        let lease = checks
            .iter()
            .find(|c| c.name.ends_with(".lease_5_sales_orders"))
            .unwrap();
        assert_eq!(
            lease.fix.as_deref(),
            Some("GRANT DELETE ON \"pl\".\"lease_5_sales_orders\" TO \"u\"")
        );
        let ledger = checks
            .iter()
            .find(|c| c.name.ends_with(".ledger_5_sales_orders"))
            .unwrap();
        assert_eq!(ledger.detail, "missing");
        let wakeup = checks
            .iter()
            .find(|c| c.name.ends_with(".wakeup_5_sales_orders"))
            .unwrap();
        assert_eq!(wakeup.status, Status::Ok);
        assert_eq!(exit_code(&checks), 1);
    }

    #[test]
    fn procedures_are_callable_when_the_probe_raises_the_lease_error() {
        let s = Ident::parse("pl").unwrap();
        let lease = LoaderError::StatementFailed {
            statement_id: "x".into(),
            message: format!("ERROR: {} x is not held", sql::LEASE_LOST_MARKER),
        };
        assert_eq!(
            procedure_check(&s, "fence_5_sales_orders", Err(lease), "\"u\"").status,
            Status::Ok
        );
        let denied = LoaderError::StatementFailed {
            statement_id: "x".into(),
            message: "ERROR: permission denied for procedure take_5_sales_orders".into(),
        };
        let c = procedure_check(&s, "take_5_sales_orders", Err(denied), "\"u\"");
        assert!(c
            .fix
            .unwrap()
            .starts_with("GRANT EXECUTE ON ALL PROCEDURES"));
    }

    #[test]
    fn route_tables_need_columns_grants_and_ownership_for_statupdate() {
        let route = parse_routes(
            "[[routes]]\nprefix = \"o/\"\ntable = \"s.t\"\nformat = \"parquet\"\nmode = \"replace\"\n\
             statupdate = true\npartition_columns = [\"d\"]\n",
        )
        .unwrap()
        .remove(0);
        let missing = route_table_checks(&route, &[], &[], "dev", "\"u\"");
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].status, Status::Finding);
        let cols = vec!["id".to_string()];
        let rows = vec![row(&["false", "true", "true", "true", "false", "true"])];
        let checks = route_table_checks(&route, &rows, &cols, "dev", "\"u\"");
        let by = |suffix: &str| {
            checks
                .iter()
                .find(|c| c.name.ends_with(suffix))
                .unwrap()
                .clone()
        };
        assert_eq!(by("columns").detail, "lacks column(s) d");
        assert_eq!(by("grants").detail, "missing DELETE");
        assert!(by("grants")
            .fix
            .unwrap()
            .contains("GRANT INSERT, SELECT, DELETE ON \"s\".\"t\""));
        assert_eq!(by("statupdate").status, Status::Finding);
        // Without USAGE the table privileges are not read (NULL): only USAGE is missing.
        let rows = vec![vec![
            Some("false".to_string()),
            Some("false".to_string()),
            None,
            None,
            None,
            Some("true".to_string()),
        ]];
        let checks = route_table_checks(&route, &rows, &cols, "dev", "\"u\"");
        let grants = checks.iter().find(|c| c.name.ends_with("grants")).unwrap();
        assert_eq!(grants.detail, "missing USAGE on schema s");
    }

    #[test]
    fn buckets_must_be_in_the_functions_region() {
        assert_eq!(bucket_region(None), "us-east-1");
        assert_eq!(bucket_region(Some("")), "us-east-1");
        assert_eq!(bucket_region(Some("EU")), "eu-west-1");
        assert_eq!(bucket_region(Some("eu-central-1")), "eu-central-1");

        let home = region_check(Some("lake"), Ok(None), Some("us-east-1"));
        assert_eq!(home.status, Status::Ok, "{home:?}");
        let away = region_check(
            Some("lake"),
            Ok(Some("eu-west-1".into())),
            Some("us-east-1"),
        );
        assert_eq!(away.status, Status::Finding);
        assert!(away.detail.contains("EventBridge"), "{away:?}");
        assert!(
            away.fix
                .as_deref()
                .is_some_and(|f| f.contains("sam deploy --region eu-west-1")),
            "{away:?}"
        );
        let unreadable = region_check(
            Some("lake"),
            Err(LoaderError::Storage {
                message: "AccessDenied".into(),
                retryable: false,
            }),
            Some("us-east-1"),
        );
        assert_eq!(unreadable.status, Status::Finding);
        assert!(unreadable
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("s3:GetBucketLocation on arn:aws:s3:::lake")));
        assert_eq!(
            region_check(None, Ok(None), Some("us-east-1")).status,
            Status::Info
        );
        assert_eq!(
            region_check(Some("lake"), Ok(None), None).status,
            Status::Finding
        );
    }

    #[test]
    fn region_buckets_are_each_route_bucket_and_the_manifest_bucket_once() {
        let config = crate::lake::config::Config::from_lookup(|k| {
            match k {
                "REDSHIFT_WORKGROUP" => Some("wg"),
                "REDSHIFT_DATABASE" => Some("dev"),
                "COPY_IAM_ROLE" => Some("arn:aws:iam::123456789012:role/copy"),
                "MANIFEST_PREFIX" => Some("s3://manifests/_loader/"),
                "LOADER_CONFIG" => Some(
                    "[[routes]]\nbucket = \"a\"\nprefix = \"x/\"\ntable = \"s.x\"\nformat = \"parquet\"\n\
                     [[routes]]\nbucket = \"a\"\nprefix = \"y/\"\ntable = \"s.y\"\nformat = \"parquet\"\n\
                     [[routes]]\nprefix = \"z/\"\ntable = \"s.z\"\nformat = \"parquet\"\n",
                ),
                _ => None,
            }
            .map(str::to_string)
        });
        let config = match config {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            region_buckets(&config.routes, &config.manifest.bucket),
            [Some("a".to_string()), None, Some("manifests".to_string())]
        );
    }

    #[test]
    fn a_route_the_sweep_cannot_list_is_a_finding() {
        let config = crate::lake::config::Config::for_tests(
            "[[routes]]\nprefix = \"o/\"\ntable = \"s.o\"\nformat = \"parquet\"\n\
             partition_columns = [{ name = \"d\", type = \"date\" }]\n\
             [[routes]]\nbucket = \"b\"\nprefix = \"e/\"\ntable = \"s.e\"\nformat = \"csv\"\n\
             partition_columns = [\"source\"]\n",
        );
        let (orders, events) = (&config.routes[0], &config.routes[1]);
        let check = sweep_check(orders, config.sweep_bucket_of(orders));
        assert_eq!(check.status, Status::Finding, "{check:?}");
        assert!(check.to_json()["fix"]
            .as_str()
            .unwrap()
            .contains("SWEEP_BUCKET"));
        assert_eq!(sweep_check(orders, Some("data")).status, Status::Ok);
        assert_eq!(
            sweep_check(events, config.sweep_bucket_of(events)).status,
            Status::Info
        );
    }

    #[test]
    fn copy_role_must_be_a_role_arn() {
        assert_eq!(
            copy_role_check("arn:aws:iam::123456789012:role/copy").status,
            Status::Ok
        );
        assert_eq!(
            copy_role_check("arn:aws:iam::123456789012:user/x").status,
            Status::Finding
        );
        assert_eq!(copy_role_check("role").status, Status::Finding);
    }
}
