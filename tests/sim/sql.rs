//! The recogniser: every statement `src/sql/` emits, read back into a [`Stmt`] the
//! model warehouse executes. One small function per statement shape, each tolerant of
//! extra arguments and columns (a procedure gaining an argument, a table gaining a
//! column), so that a change of the SQL is a change of one function here. A statement
//! no function recognises is [`Stmt::Unknown`], which the model turns into a loud test
//! failure: the simulation never ignores SQL it does not understand.

/// A table as the statement names it: `"schema"."name"` or a bare `"name"`, quotes
/// removed, lower case (identifiers are folded by `Ident`).
pub type Name = String;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(i64),
    Null,
    /// `GETDATE()` inside a VALUES tuple.
    Now,
}

impl Value {
    pub fn text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Null | Value::Now => String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `LOCK t`
    Lock(Name),
    /// `CALL s.take_…(holder, ttl, bucket, partition, url, etag, …)`
    Take {
        procedure: Name,
        args: Vec<Value>,
    },
    /// `CALL s.fence_…(holder, ttl, …)`
    Fence {
        procedure: Name,
        args: Vec<Value>,
    },
    /// `SELECT holder, expires_at FROM lease`
    SelectLease(Name),
    /// `SELECT COALESCE(expires_at > GETDATE(), FALSE) FROM lease` (the take batch's
    /// liveness, `with_holder: false`) or `SELECT holder, expires_at, COALESCE(…) FROM
    /// lease` (the completion step's read)
    SelectLeaseLive {
        lease: Name,
        with_holder: bool,
    },
    /// `SET timezone TO 'UTC'` (the drain batch's lease times are UTC; the model's
    /// clock has no zone)
    SetTimezone,
    /// `SELECT s3_url, etag, size_bytes FROM ledger WHERE partition_path = 'p'`
    SelectLedger {
        ledger: Name,
        partition: String,
    },
    /// `SELECT column_name, data_type FROM information_schema.columns WHERE …`
    Columns {
        schema: String,
        table: String,
    },
    /// drain: `DELETE FROM wakeup WHERE claim = 'c' AND EXISTS (… lease WHERE holder = 'h')`
    DeleteClaimed {
        wakeup: Name,
        claim: String,
        holder: String,
    },
    /// drain: `UPDATE lease SET holder = NULL … WHERE holder = 'h' AND NOT EXISTS (… wakeup)`
    ReleaseIfNoWakeUp {
        lease: Name,
        holder: String,
        wakeup: Name,
    },
    /// drain: `UPDATE lease SET expires_at = DATEADD(second, ttl, GETDATE()) WHERE holder = 'h'`
    Renew {
        lease: Name,
        ttl: i64,
        holder: String,
    },
    /// drain: `UPDATE wakeup SET claim = 'c' WHERE EXISTS (… lease WHERE holder = 'h')`
    ClaimAll {
        wakeup: Name,
        claim: String,
        holder: String,
    },
    /// drain: `SELECT DISTINCT bucket, partition_path[, route_prefix] FROM wakeup WHERE
    /// claim = 'c' …`; `route` whether the route column is selected
    SelectClaimed {
        route: bool,
        wakeup: Name,
        claim: String,
    },
    /// release: `UPDATE lease SET holder = NULL … WHERE holder = 'h'`; `holder` None is
    /// loaderctl unlock's statement (no WHERE).
    Release {
        lease: Name,
        holder: Option<String>,
    },
    /// `COPY t [(cols)] FROM 'manifest' …`
    Copy {
        table: Name,
        manifest: String,
    },
    /// `CREATE TEMP TABLE stage AS SELECT … FROM t WHERE 1 = 0`
    CreateStage {
        stage: Name,
    },
    /// `INSERT INTO t (…) SELECT … FROM stage`
    InsertFromStage {
        table: Name,
        stage: Name,
    },
    /// `DROP TABLE stage`
    Drop(Name),
    /// `INSERT INTO ledger (cols…) VALUES (…), (…)`: columns and tuples.
    LedgerInsert {
        ledger: Name,
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
    },
    /// replace mode: `DELETE FROM ledger WHERE partition_path = 'p'`
    DeleteLedgerPartition {
        ledger: Name,
        partition: String,
    },
    /// replace mode: `DELETE FROM target WHERE <partition predicate>`
    DeleteTarget {
        table: Name,
        predicate: String,
    },
    /// the sweep: `SELECT DISTINCT partition_path FROM ledger WHERE loaded_at > DATEADD(day, -n, GETDATE())`
    RecentPartitions {
        ledger: Name,
        days: i64,
        /// `AND LEFT(s3_url, n) = 's3://bucket/prefix'`: the route's files only
        url_prefix: Option<String>,
    },
    Unknown(String),
}

/// Reads one statement.
pub fn recognise(sql: &str) -> Stmt {
    let s = sql.trim();
    let recognisers: [fn(&str) -> Option<Stmt>; 18] = [
        lock,
        set_timezone,
        call,
        select_lease,
        select_ledger,
        columns,
        delete_claimed,
        release_if_no_wake_up,
        renew,
        claim_all,
        select_claimed,
        release,
        copy,
        create_stage,
        insert_from_stage,
        drop,
        ledger_insert,
        deletes_and_recent,
    ];
    recognisers
        .iter()
        .find_map(|r| r(s))
        .unwrap_or_else(|| Stmt::Unknown(s.to_string()))
}

fn lock(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("LOCK ")?;
    Some(Stmt::Lock(name(rest)?.0))
}

fn set_timezone(s: &str) -> Option<Stmt> {
    s.to_ascii_uppercase()
        .starts_with("SET TIMEZONE")
        .then_some(Stmt::SetTimezone)
}

fn call(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("CALL ")?;
    let (procedure, rest) = name(rest)?;
    let args = values(rest.trim().strip_prefix('(')?.strip_suffix(')')?)?;
    let bare = procedure.rsplit('.').next().unwrap_or_default();
    if bare.starts_with("take_") {
        Some(Stmt::Take { procedure, args })
    } else if bare.starts_with("fence_") {
        Some(Stmt::Fence { procedure, args })
    } else {
        None
    }
}

fn select_lease(s: &str) -> Option<Stmt> {
    const LIVE: &str = "COALESCE(expires_at > GETDATE(), FALSE) FROM ";
    for (head, with_holder) in [
        (format!("SELECT {LIVE}"), false),
        (format!("SELECT holder, expires_at, {LIVE}"), true),
    ] {
        if let Some(rest) = s.strip_prefix(head.as_str()) {
            let (lease, tail) = name(rest)?;
            return tail
                .trim()
                .is_empty()
                .then_some(Stmt::SelectLeaseLive { lease, with_holder });
        }
    }
    let rest = s.strip_prefix("SELECT holder, expires_at FROM ")?;
    let (lease, tail) = name(rest)?;
    tail.trim().is_empty().then_some(Stmt::SelectLease(lease))
}

fn select_ledger(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("SELECT s3_url, etag")?;
    let rest = &rest[rest.find(" FROM ")? + 6..];
    let (ledger, tail) = name(rest)?;
    let partition = text_after(tail, "WHERE partition_path = ")?;
    Some(Stmt::SelectLedger { ledger, partition })
}

fn columns(s: &str) -> Option<Stmt> {
    // `column_name, data_type[, is_nullable, column_default]`: more columns are welcome.
    if !s.starts_with("SELECT column_name, data_type")
        || !s.contains(" FROM information_schema.columns ")
    {
        return None;
    }
    Some(Stmt::Columns {
        schema: text_after(s, "table_schema = ")?,
        table: text_after(s, "table_name = ")?,
    })
}

fn delete_claimed(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("DELETE FROM ")?;
    let (wakeup, tail) = name(rest)?;
    let claim = text_after(tail, "WHERE claim = ")?;
    let holder = text_after(tail, "WHERE holder = ")?;
    Some(Stmt::DeleteClaimed {
        wakeup,
        claim,
        holder,
    })
}

fn release_if_no_wake_up(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("UPDATE ")?;
    let (lease, tail) = name(rest)?;
    if !tail.trim_start().starts_with("SET holder = NULL") {
        return None;
    }
    let at = tail.find("NOT EXISTS (SELECT 1 FROM ")?;
    let (wakeup, _) = name(&tail[at + 26..])?;
    Some(Stmt::ReleaseIfNoWakeUp {
        lease,
        holder: text_after(tail, "WHERE holder = ")?,
        wakeup,
    })
}

fn renew(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("UPDATE ")?;
    let (lease, tail) = name(rest)?;
    let tail = tail
        .trim_start()
        .strip_prefix("SET expires_at = DATEADD(second, ")?;
    let ttl = tail[..tail.find(',')?].trim().parse().ok()?;
    Some(Stmt::Renew {
        lease,
        ttl,
        holder: text_after(tail, "WHERE holder = ")?,
    })
}

fn claim_all(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("UPDATE ")?;
    let (wakeup, tail) = name(rest)?;
    let claim = text_after(tail, "SET claim = ")?;
    Some(Stmt::ClaimAll {
        wakeup,
        claim,
        holder: text_after(tail, "WHERE holder = ")?,
    })
}

fn select_claimed(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("SELECT DISTINCT bucket, partition_path")?;
    let route = rest.starts_with(", route_prefix");
    let rest = &rest[rest.find(" FROM ")? + 6..];
    let (wakeup, tail) = name(rest)?;
    Some(Stmt::SelectClaimed {
        route,
        wakeup,
        claim: text_after(tail, "WHERE claim = ")?,
    })
}

fn release(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("UPDATE ")?;
    let (lease, tail) = name(rest)?;
    if !tail.trim_start().starts_with("SET holder = NULL") || tail.contains("NOT EXISTS") {
        return None;
    }
    Some(Stmt::Release {
        lease,
        holder: text_after(tail, "WHERE holder = "),
    })
}

fn copy(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("COPY ")?;
    let (table, tail) = name(rest)?;
    Some(Stmt::Copy {
        table,
        manifest: text_after(tail, "FROM ")?,
    })
}

fn create_stage(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("CREATE TEMP TABLE ")?;
    Some(Stmt::CreateStage {
        stage: name(rest)?.0,
    })
}

fn insert_from_stage(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("INSERT INTO ")?;
    let (table, tail) = name(rest)?;
    let at = tail.rfind(" FROM ")?;
    if tail.contains(" VALUES ") {
        return None;
    }
    Some(Stmt::InsertFromStage {
        table,
        stage: name(&tail[at + 6..])?.0,
    })
}

fn drop(s: &str) -> Option<Stmt> {
    Some(Stmt::Drop(name(s.strip_prefix("DROP TABLE ")?)?.0))
}

fn ledger_insert(s: &str) -> Option<Stmt> {
    let rest = s.strip_prefix("INSERT INTO ")?;
    let (ledger, tail) = name(rest)?;
    let tail = tail.trim_start().strip_prefix('(')?;
    let close = tail.find(')')?;
    let columns = tail[..close]
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    let mut rest = tail[close + 1..]
        .trim_start()
        .strip_prefix("VALUES")?
        .trim();
    let mut rows = Vec::new();
    while !rest.is_empty() {
        let body = rest.strip_prefix('(')?;
        let end = tuple_end(body)?;
        rows.push(values(&body[..end])?);
        rest = body[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(Stmt::LedgerInsert {
        ledger,
        columns,
        rows,
    })
}

fn deletes_and_recent(s: &str) -> Option<Stmt> {
    if let Some(rest) = s.strip_prefix("SELECT DISTINCT partition_path FROM ") {
        let (ledger, tail) = name(rest)?;
        let tail = &tail[tail.find("DATEADD(day, ")? + 13..];
        let days = -tail[..tail.find(',')?].trim().parse::<i64>().ok()?;
        let url_prefix = tail
            .find("LEFT(s3_url, ")
            .and_then(|at| text_after(&tail[at..], ") = "));
        return Some(Stmt::RecentPartitions {
            ledger,
            days,
            url_prefix,
        });
    }
    let rest = s.strip_prefix("DELETE FROM ")?;
    let (table, tail) = name(rest)?;
    let tail = tail.trim_start().strip_prefix("WHERE ")?;
    if let Some(p) = tail.strip_prefix("partition_path = ") {
        if let Some((Value::Text(partition), _)) = value(p) {
            return Some(Stmt::DeleteLedgerPartition {
                ledger: table,
                partition,
            });
        }
    }
    Some(Stmt::DeleteTarget {
        table,
        predicate: tail.to_string(),
    })
}

/// A possibly qualified, possibly quoted name at the start of `s`, and the rest.
fn name(s: &str) -> Option<(Name, &str)> {
    let mut out = String::new();
    let mut rest = s.trim_start();
    loop {
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"')?;
            out.push_str(&q[..end]);
            rest = &q[end + 1..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            out.push_str(&rest[..end].to_ascii_lowercase());
            rest = &rest[end..];
        }
        match rest.strip_prefix('.') {
            Some(r) => {
                out.push('.');
                rest = r;
            }
            None => return Some((out, rest)),
        }
    }
}

/// The string literal right after `marker` in `s`.
fn text_after(s: &str, marker: &str) -> Option<String> {
    let at = s.find(marker)? + marker.len();
    match value(&s[at..])? {
        (Value::Text(t), _) => Some(t),
        _ => None,
    }
}

/// One literal at the start of `s`: `'text'` (`''` is a quote), an integer, NULL or
/// `GETDATE()`; and the rest.
fn value(s: &str) -> Option<(Value, &str)> {
    let s = s.trim_start();
    if let Some(body) = s.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if matches!(chars.peek(), Some((_, '\''))) {
                    out.push('\'');
                    chars.next();
                } else {
                    return Some((Value::Text(out), &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    if let Some(rest) = s.strip_prefix("GETDATE()") {
        return Some((Value::Now, rest));
    }
    if let Some(rest) = s.strip_prefix("NULL") {
        return Some((Value::Null, rest));
    }
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(s.len());
    let n = s[..end].parse().ok()?;
    Some((Value::Number(n), &s[end..]))
}

/// Comma-separated literals (procedure arguments, a VALUES tuple).
fn values(s: &str) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (v, r) = value(rest)?;
        out.push(v);
        rest = r.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

/// Where the tuple whose body starts `s` closes (quotes and `GETDATE()` respected).
fn tuple_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            ')' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_ledger_insert() {
        let s = "INSERT INTO \"partition_loader\".\"ledger_1_s_t1\" (partition_path, s3_url, \
                 etag, size_bytes, loaded_at, holder, load_id) VALUES ('order_date=2026-12-05/', \
                 's3://lake/t1/f0.parquet', 'etag1', 100, GETDATE(), 'req-4', 'c8'), \
                 ('p', 'u', 'e', 1, GETDATE(), 'h', 'l')";
        match recognise(s) {
            Stmt::LedgerInsert { rows, columns, .. } => {
                assert_eq!(rows.len(), 2);
                assert_eq!(columns.len(), 7);
                assert_eq!(rows[0][4], Value::Now);
                assert_eq!(rows[1][0], Value::Text("p".into()));
            }
            other => panic!("{other:?}"),
        }
    }
}
