//! The statements of `loaderctl bootstrap` ([`crate::ops::admin`]): the loader schema, its
//! user and grants, each target table's lease, ledger and wake-up tables with their
//! procedures, and the upgrade of a wake-up table of an earlier version.

use super::*;

/// Statements of the idempotent bootstrap batch that every target table's
/// [`bootstrap_table`] statements follow. `loaded_files`, the ledger shared by all tables
/// in earlier versions, stays only as the source of the one-time copy into the
/// per-table ledgers (see README "Upgrading").
pub fn bootstrap(schema: &Ident) -> Vec<String> {
    let s = schema.quoted();
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {s}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.loaded_files (table_name VARCHAR(256) NOT NULL, \
             partition_path VARCHAR(1024) NOT NULL, s3_url VARCHAR(2048) NOT NULL, \
             etag VARCHAR(128) NOT NULL, size_bytes BIGINT NOT NULL, \
             loaded_at TIMESTAMP NOT NULL, holder VARCHAR(256) NOT NULL, \
             load_id VARCHAR(64) NOT NULL) SORTKEY (table_name, partition_path)"
        ),
    ]
}

/// A database user to grant to: `loader`, `IAMR:partition-loader`, `IAM:ops`. Kept
/// as given and always double-quoted (names with `:` need the quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUser(String);

impl DbUser {
    pub fn parse(s: &str) -> Result<DbUser, String> {
        let ok = !s.is_empty()
            && s.len() <= 127
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:.@+=,-$".contains(c));
        if !ok {
            return Err(format!(
                "{s:?} is not a database user name (letters, digits and _ : . @ + = , - $,                  at most 127 bytes; e.g. loader or IAMR:partition-loader)"
            ));
        }
        Ok(DbUser(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl DbUser {
    /// An IAM identity's database user (`IAMR:<role>`, `IAM:<user>`): Redshift creates
    /// it at the identity's first login, so it may not exist yet when the operator grants.
    pub fn is_iam(&self) -> bool {
        self.0.starts_with("IAMR:") || self.0.starts_with("IAM:")
    }
}

/// Whether the database user `:user` exists (one row if so).
pub fn user_exists() -> &'static str {
    "SELECT 1 FROM pg_user WHERE usename = :user"
}

/// Creates an IAM identity's database user ahead of its first login, so that grants to
/// it work before the function's first call. `PASSWORD DISABLE`: it signs in only with
/// IAM temporary credentials
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_CREATE_USER.html>). Redshift's
/// documentation says an IAM identity's user is created at its first login and does not
/// say that pre-creating it is refused; README gives the fallback order (invoke once,
/// then grant) should it be.
pub fn create_user(user: &DbUser) -> String {
    format!("CREATE USER {} PASSWORD DISABLE", user.quoted())
}

/// What the function's database user needs on the loader schema: USAGE, DML on every
/// table, EXECUTE on every procedure, now and for objects the granting user creates
/// there later (ALTER DEFAULT PRIVILEGES, which Redshift supports for TABLES and
/// PROCEDURES: <https://docs.aws.amazon.com/redshift/latest/dg/r_ALTER_DEFAULT_PRIVILEGES.html>).
/// Run by the schema's owner, after [`bootstrap`].
pub fn grant_loader(schema: &Ident, user: &DbUser) -> Vec<String> {
    let s = schema.quoted();
    let u = user.quoted();
    vec![
        format!("GRANT USAGE ON SCHEMA {s} TO {u}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {u}"),
        format!("GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA {s} TO {u}"),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {u}"
        ),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT EXECUTE ON PROCEDURES TO {u}"),
    ]
}

/// What the function's user needs on one route's target table, for the table's owner to
/// run: USAGE on its schema; INSERT; SELECT when the load may go through a staging table
/// (`CREATE TEMP TABLE ... AS SELECT ... FROM target`) or in replace mode; DELETE in
/// replace mode; TEMP on the database for staging (Redshift grants it to PUBLIC by
/// default: <https://docs.aws.amazon.com/redshift/latest/dg/r_GRANT.html>). A route with
/// `statupdate` needs the table's ownership instead (only the owner updates statistics).
pub fn route_grants(
    table: &TableName,
    may_stage: bool,
    replace: bool,
    statupdate: bool,
    database: &str,
    user: &DbUser,
) -> Vec<String> {
    let u = user.quoted();
    let mut privileges = vec!["INSERT"];
    if may_stage || replace {
        privileges.push("SELECT");
    }
    if replace {
        privileges.push("DELETE");
    }
    let mut out = vec![
        format!("GRANT USAGE ON SCHEMA {} TO {u}", table.schema.quoted()),
        format!(
            "GRANT {} ON {} TO {u}",
            privileges.join(", "),
            table.quoted()
        ),
    ];
    if may_stage {
        out.push(format!(
            "GRANT TEMP ON DATABASE \"{}\" TO {u}",
            database.replace('"', "\"\"")
        ));
    }
    if statupdate {
        out.push(format!("ALTER TABLE {} OWNER TO {u}", table.quoted()));
    }
    out
}

/// The loader tables one route's target needs (for `loaderctl doctor`): its lease,
/// ledger and wake-up tables ([`bootstrap_table`]). The shared `loaded_files` of
/// earlier versions is only read by `bootstrap`, never by the function.
pub fn loader_tables(t: &LeaseTables) -> Vec<String> {
    [&t.lease, &t.ledger, &t.wakeup, &t.quarantine]
        .into_iter()
        .map(|id| id.as_str().to_string())
        .collect()
}

/// Statements that create one target table's lease, ledger and wake-up tables and their
/// procedures (idempotent), put the lease's single free row in place, and copy the
/// table's rows of the shared ledger of earlier versions (`loaded_files`) into its own
/// ledger the first time. Run after [`bootstrap`] in the same batch.
pub fn bootstrap_table(schema: &Ident, t: &LeaseTables) -> Result<Vec<String>, LoaderError> {
    let s = schema.quoted();
    let lease = t.q(schema, &t.lease);
    let ledger = t.q(schema, &t.ledger);
    let wakeup = t.q(schema, &t.wakeup);
    let target = literal(&t.target.to_string())?;
    // RAISE takes simple variables only ("Currently, optional arguments must be simple
    // variables, not expressions.", RAISE in
    // https://docs.aws.amazon.com/redshift/latest/dg/c_PLpgSQL-statements.html): the
    // table's name goes into a declared variable (`:=` as in Redshift's own example on
    // https://docs.aws.amazon.com/redshift/latest/dg/c_PLpgSQL-structure.html).
    let declare_target = format!("v_table VARCHAR(300) := {target};\n  ");
    let lost = format!(
        "RAISE EXCEPTION '{LEASE_LOST_MARKER} % is not held by % (expired or taken over); \
         load rolled back', v_table, p_holder;"
    );
    // Only a variable as RAISE's argument (Redshift: "optional arguments must be simple
    // variables, not expressions").
    let elsewhere = format!(
        "RAISE EXCEPTION '{LOADED_ELSEWHERE_MARKER}: % files of this load are in the \
         ledger of {} under another load (an earlier attempt''s batch outlived it); rolled \
         back', n;",
        t.target.to_string().replace('\'', "''")
    );
    let count_check = format!(
        "SELECT COUNT(*) INTO n FROM {lease};\n  \
         IF n <> 1 THEN\n    RAISE EXCEPTION 'partition-loader: the lease table {s}.{} of % has \
         % rows, expected exactly one; run `loaderctl bootstrap`, then `loaderctl unlock`', \
         v_table, n;\n  END IF;\n  ",
        t.lease.quoted().replace('\'', "''")
    );
    Ok(vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {lease} (holder VARCHAR(256), acquired_at TIMESTAMP, \
             expires_at TIMESTAMP)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ledger} (partition_path VARCHAR(1024) NOT NULL, \
             s3_url VARCHAR(2048) NOT NULL, etag VARCHAR(128) NOT NULL, \
             size_bytes BIGINT NOT NULL, loaded_at TIMESTAMP NOT NULL, \
             holder VARCHAR(256) NOT NULL, load_id VARCHAR(64) NOT NULL) \
             SORTKEY (partition_path)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {wakeup} (bucket VARCHAR(256) NOT NULL, \
             partition_path VARCHAR(1024) NOT NULL, s3_url VARCHAR(2048) NOT NULL, \
             etag VARCHAR(128) NOT NULL, queued_by VARCHAR(256) NOT NULL, \
             queued_at TIMESTAMP NOT NULL, claim VARCHAR(300), route_prefix VARCHAR(1024))"
        ),
        // Exactly one row, whoever bootstraps concurrently: the LOCK serialises them.
        format!("LOCK {lease}"),
        format!(
            "INSERT INTO {lease} (holder, acquired_at, expires_at) SELECT NULL, NULL, NULL \
             WHERE NOT EXISTS (SELECT 1 FROM {lease})"
        ),
        // Migration from the shared ledger, once: only while this ledger is empty.
        format!(
            "INSERT INTO {ledger} (partition_path, s3_url, etag, size_bytes, loaded_at, holder, \
             load_id) SELECT partition_path, s3_url, etag, size_bytes, loaded_at, holder, load_id \
             FROM {s}.loaded_files WHERE table_name = {target} \
             AND NOT EXISTS (SELECT 1 FROM {ledger})"
        ),
        // The acquire: one branch writes only the lease, the other only the wake-ups, so
        // that an invocation finding the lease busy never writes the lease table (which
        // the holder's fence writes at the end of its load). A held lease is taken over
        // only when the caller names its holder in `p_checked`: the caller saw it expired
        // (or an earlier attempt of its own request) and found none of its load
        // statements running (DescribeStatement via ListStatements; this procedure cannot
        // call the Data API). An expired lease whose statement still runs stays its
        // statement's (issue 21.1, ARCHITECTURE "The statement holds the lease").
        format!(
            "CREATE OR REPLACE PROCEDURE {s}.{take}(p_holder VARCHAR(256), p_ttl_seconds INTEGER, \
             p_bucket VARCHAR(256), p_partition VARCHAR(1024), p_s3_url VARCHAR(2048), \
             p_etag VARCHAR(128), p_route VARCHAR(1024), p_checked VARCHAR(256)) AS $$\nDECLARE\n  {declare_target}n INTEGER;\n  \
             cur VARCHAR(256);\nBEGIN\n  {count_check}\
             SELECT holder INTO cur FROM {lease};\n  \
             IF cur IS NULL OR cur = p_holder OR cur = p_checked THEN\n    \
             UPDATE {lease} SET holder = p_holder, acquired_at = GETDATE(), \
             expires_at = DATEADD(second, p_ttl_seconds, GETDATE());\n  \
             ELSIF p_bucket <> '' THEN\n    \
             INSERT INTO {wakeup} (bucket, partition_path, s3_url, etag, queued_by, queued_at, \
             route_prefix) VALUES (p_bucket, p_partition, p_s3_url, p_etag, p_holder, GETDATE(), \
             p_route);\n  \
             END IF;\nEND;\n$$ LANGUAGE plpgsql {UTC_PROCEDURE}",
            take = t.take.quoted()
        ),
        // Only statements Redshift documents for PL/pgSQL (SELECT INTO, IF, RAISE:
        // https://docs.aws.amazon.com/redshift/latest/dg/c_PLpgSQL-statements.html); GET
        // DIAGNOSTICS is not among them. Reading the row and then updating it touches the
        // same table as the UPDATE alone, and a concurrent takeover still makes the UPDATE
        // fail (write-write conflict) when the read saw the old row. The holder passes
        // whether or not its lease expired: a statement left running holds the lease
        // until someone takes it over (and taking over is what the take refuses while
        // the statement runs). The UPDATE writes the row without moving the expiry, so
        // that the write-write conflict with a takeover stays and a statement that ends
        // after its caller left does not make the lease live again (the take and the
        // drain set expiries from the caller's remaining time).
        format!(
            "CREATE OR REPLACE PROCEDURE {s}.{fence}(p_holder VARCHAR(256), p_ttl_seconds INTEGER, \
             p_partition VARCHAR(1024), p_load_id VARCHAR(64)) \
             AS $$\nDECLARE\n  {declare_target}n INTEGER;\nBEGIN\n  \
             SELECT COUNT(*) INTO n FROM {lease} WHERE holder = p_holder;\n  \
             IF n = 0 THEN\n    {lost}\n  END IF;\n  \
             SELECT COUNT(*) INTO n FROM {ledger} WHERE partition_path = p_partition \
             AND load_id <> p_load_id AND s3_url IN (SELECT s3_url FROM {ledger} \
             WHERE partition_path = p_partition AND load_id = p_load_id);\n  \
             IF n > 0 THEN\n    {elsewhere}\n  END IF;\n  \
             UPDATE {lease} SET expires_at = expires_at WHERE holder = p_holder;\nEND;\n$$ \
             LANGUAGE plpgsql {UTC_PROCEDURE}",
            fence = t.fence.quoted()
        ),
        create_quarantine(schema, t),
    ])
}

/// Whether a table's wake-up table has the `route_prefix` column (`loaderctl bootstrap`
/// adds it to a wake-up table of an earlier version). Row: a count.
pub fn wakeup_has_route_column(schema: &Ident, t: &LeaseTables) -> Result<String, LoaderError> {
    Ok(format!(
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = {} \
         AND table_name = {} AND column_name = 'route_prefix'",
        literal(schema.as_str())?,
        literal(t.wakeup.as_str())?
    ))
}

/// The loader's procedures of `t` in the catalog, with their number of arguments.
/// Rows: `proname, pronargs`. (`pg_proc` lists stored procedures: Redshift's
/// PG_PROC_INFO "is built on the PostgreSQL catalog table PG_PROC",
/// <https://docs.aws.amazon.com/redshift/latest/dg/r_PG_PROC_INFO.html>.)
pub fn procedure_arities(schema: &Ident, t: &LeaseTables) -> Result<String, LoaderError> {
    Ok(format!(
        "SELECT p.proname, p.pronargs FROM pg_proc p JOIN pg_namespace n \
         ON n.oid = p.pronamespace WHERE n.nspname = {} AND p.proname IN ({}, {})",
        literal(schema.as_str())?,
        literal(t.take.as_str())?,
        literal(t.fence.as_str())?
    ))
}

/// The signatures of earlier versions (name, arguments, argument types): CREATE OR
/// REPLACE keeps an old overload beside the new one (a procedure is named by its
/// argument types), and a caller of the old one would bypass the new checks.
fn old_signatures(t: &LeaseTables) -> [(&Ident, usize, &'static str); 3] {
    [
        (
            &t.take,
            6,
            "VARCHAR, INTEGER, VARCHAR, VARCHAR, VARCHAR, VARCHAR",
        ),
        // The take before the statement-held lease (issue 21.1) had no `p_checked`.
        (
            &t.take,
            7,
            "VARCHAR, INTEGER, VARCHAR, VARCHAR, VARCHAR, VARCHAR, VARCHAR",
        ),
        (&t.fence, 2, "VARCHAR, INTEGER"),
    ]
}

/// `DROP PROCEDURE` for each old signature that `arities` (`(proname, pronargs)` read
/// by [`procedure_arities`]) shows. Redshift's DROP PROCEDURE has no `IF EXISTS`
/// (syntax: `DROP PROCEDURE sp_name ( [ [ argname ] [ argmode ] argtype [, ...] ] )`,
/// <https://docs.aws.amazon.com/redshift/latest/dg/r_DROP_PROCEDURE.html>), so the
/// catalog is asked first and only what exists is dropped.
pub fn drop_old_procedures(
    schema: &Ident,
    t: &LeaseTables,
    arities: &[(String, String)],
) -> Vec<String> {
    let present = |name: &Ident, arity: usize| {
        arities
            .iter()
            .any(|(n, a)| n == name.as_str() && a.trim() == arity.to_string())
    };
    old_signatures(t)
        .into_iter()
        .filter(|(name, arity, _)| present(name, *arity))
        .map(|(name, _, types)| {
            format!(
                "DROP PROCEDURE {}.{}({types})",
                schema.quoted(),
                name.quoted()
            )
        })
        .collect()
}

/// Whether the wake-up table exists at all. Row: a count.
pub fn wakeup_exists(schema: &Ident, t: &LeaseTables) -> Result<String, LoaderError> {
    Ok(format!(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {} \
         AND table_name = {}",
        literal(schema.as_str())?,
        literal(t.wakeup.as_str())?
    ))
}

/// Adds `route_prefix` to a wake-up table of an earlier version (Redshift has no `ADD
/// COLUMN IF NOT EXISTS`: the caller checks [`wakeup_has_route_column`] first). Its old
/// rows keep NULL: the holder loads them under its own route, as before.
pub fn add_wakeup_route_column(schema: &Ident, t: &LeaseTables) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN route_prefix VARCHAR(1024)",
        t.q(schema, &t.wakeup)
    )
}
