//! The COPY target as PostgreSQL's catalog sees it: which table, which columns.

use tokio_postgres::Client;

use crate::CopyError;

/// A resolved target table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    /// Bare table name, as Redshift names it in load errors.
    pub name: String,
    /// `"schema"."table"`, safe to splice into SQL.
    pub qualified: String,
    /// The columns the file's fields map to, in order.
    pub columns: Vec<TargetColumn>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TargetColumn {
    pub name: String,
    /// `format_type()` output, e.g. `character varying(20)`.
    pub type_name: String,
    /// CHAR/VARCHAR/TEXT: the types where an empty field means '' (not NULL).
    pub char_like: bool,
}

impl TargetColumn {
    pub(crate) fn new(name: &str, type_name: &str) -> Self {
        let char_like = ["character", "text", "bpchar", "\"char\""]
            .iter()
            .any(|p| type_name.starts_with(p));
        TargetColumn {
            name: name.to_string(),
            type_name: type_name.to_string(),
            char_like,
        }
    }
}

/// `"name"` with inner quotes doubled: the only way a name reaches SQL text.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Picks the target columns: the COPY column list in its order, else every
/// table column. An unknown listed column fails as PostgreSQL and Redshift say.
pub(crate) fn select_columns(
    table: &str,
    all: &[TargetColumn],
    listed: Option<&[String]>,
) -> Result<Vec<TargetColumn>, CopyError> {
    let Some(listed) = listed else {
        return Ok(all.to_vec());
    };
    let mut picked: Vec<TargetColumn> = Vec::with_capacity(listed.len());
    for name in listed {
        let col = all.iter().find(|c| &c.name == name).ok_or_else(|| {
            CopyError::Rejected(format!(
                "column \"{name}\" of relation \"{table}\" does not exist"
            ))
        })?;
        if picked.iter().any(|p| &p.name == name) {
            return Err(CopyError::Rejected(format!(
                "column \"{name}\" specified more than once"
            )));
        }
        picked.push(col.clone());
    }
    Ok(picked)
}

/// Resolves `table` (as written in the COPY, so `search_path` and quoting
/// apply exactly as in any other statement) through the catalog.
pub(crate) async fn resolve(
    client: &Client,
    table: &str,
    listed: Option<&[String]>,
) -> Result<Target, CopyError> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relname::text, \
                    quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')",
            &[&table],
        )
        .await?;
    let Some(row) = row else {
        return Err(CopyError::Rejected(format!(
            "relation \"{}\" does not exist",
            table.trim_matches('"')
        )));
    };
    let oid: u32 = row.get(0);
    let name: String = row.get(1);
    let qualified: String = row.get(2);
    let all: Vec<TargetColumn> = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) \
             FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| TargetColumn::new(r.get(0), r.get(1)))
        .collect();
    let columns = select_columns(&name, &all, listed)?;
    Ok(Target {
        name,
        qualified,
        columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<TargetColumn> {
        vec![
            TargetColumn::new("id", "bigint"),
            TargetColumn::new("name", "character varying(20)"),
            TargetColumn::new("code", "character(3)"),
            TargetColumn::new("note", "text"),
        ]
    }

    #[test]
    fn char_like_types() {
        let c = cols();
        assert!(!c[0].char_like);
        assert!(c[1].char_like && c[2].char_like && c[3].char_like);
        assert!(!TargetColumn::new("d", "date").char_like);
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a"), "\"a\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn selects_listed_columns_in_list_order() {
        let picked = select_columns("t", &cols(), Some(&["note".into(), "id".into()])).unwrap();
        let names: Vec<_> = picked.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["note", "id"]);
        assert_eq!(select_columns("t", &cols(), None).unwrap().len(), 4);
    }

    #[test]
    fn rejects_unknown_and_repeated_columns() {
        let e = select_columns("t", &cols(), Some(&["nope".into()])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column \"nope\" of relation \"t\" does not exist"
        );
        let e = select_columns("t", &cols(), Some(&["id".into(), "id".into()])).unwrap_err();
        assert_eq!(e.to_string(), "column \"id\" specified more than once");
    }
}
