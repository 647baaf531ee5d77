//! The statement that adds a file's new column to its table (route option
//! `add_new_columns`, [`crate::lake::schema_match::added_type`]).
//!
//! Redshift's ALTER TABLE page
//! (<https://docs.aws.amazon.com/redshift/latest/dg/r_ALTER_TABLE.html>): one column per
//! `ADD COLUMN` statement; no `IF NOT EXISTS` for a table's column (only for an external
//! table's partition); a name of at most 127 bytes ("longer names are truncated": the
//! loader refuses them instead, [`Ident::parse`], so two long names never become one);
//! at most 1,600 columns per table; ALTER TABLE "locks the table for read and write
//! operations until the transaction enclosing the ALTER TABLE operation completes".
//! Only an external table's ALTER TABLE is refused inside a transaction block, so
//! either place is allowed for ours: the loader runs it as a statement of its own (see
//! `Loader::add_new_columns` in `run/handler.rs` for why).

use super::*;

/// Redshift's limit of columns per table (ALTER TABLE, ADD COLUMN).
pub const MAX_TABLE_COLUMNS: usize = 1600;

/// `ALTER TABLE <target> ADD COLUMN "<column>" <type>`, nullable and without a DEFAULT:
/// the table's existing rows read NULL, as a file lacking the column loads. `data_type`
/// is one of [`crate::lake::schema_match::added_type`]'s texts; anything else is refused.
pub fn add_column(
    target: &TableName,
    column: &Ident,
    data_type: &str,
) -> Result<String, LoaderError> {
    let (name, args) = match data_type.split_once('(') {
        Some((name, rest)) => (name, rest.strip_suffix(')').unwrap_or("?")),
        None => (data_type, ""),
    };
    const TYPES: [&str; 13] = [
        "BOOLEAN",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "REAL",
        "DOUBLE PRECISION",
        "DECIMAL",
        "VARCHAR",
        "DATE",
        "TIME",
        "TIMETZ",
        "TIMESTAMP",
        "TIMESTAMPTZ",
    ];
    let name_ok = TYPES.contains(&name);
    let args_ok = args.chars().all(|c| c.is_ascii_digit() || c == ',');
    if !name_ok || !args_ok {
        return Err(LoaderError::Config(format!(
            "{data_type:?} is not a column type the loader adds"
        )));
    }
    Ok(format!(
        "ALTER TABLE {} ADD COLUMN {} {data_type}",
        target.quoted(),
        column.quoted()
    ))
}

/// What the function's user needs to add columns (route option `add_new_columns`), for
/// the table's owner to run: the table itself. Redshift runs ALTER TABLE for the table's
/// owner, a superuser, or a user with the ALTER TABLE system permission through a role
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_roles-system-privileges.html>).
/// There is no table privilege ALTER to grant: GRANT's table privileges are SELECT,
/// INSERT, UPDATE, DELETE, DROP and REFERENCES, and ALTER is a datashare's
/// (<https://docs.aws.amazon.com/redshift/latest/dg/r_GRANT.html>); the
/// `GRANT ALTER ON TABLE` printed before failed on Redshift (and on PostgreSQL:
/// `unrecognized privilege type "alter"`). Ownership is per table; the system permission
/// would let the function alter every table.
pub fn add_columns_right(target: &TableName, user: &DbUser) -> String {
    format!("ALTER TABLE {} OWNER TO {}", target.quoted(), user.quoted())
}

/// The other way, for a superuser to run: the ALTER TABLE system permission through a
/// role (every table of the database).
pub fn add_columns_role(user: &DbUser) -> String {
    format!(
        "CREATE ROLE loader_add_columns; GRANT ALTER TABLE TO ROLE loader_add_columns; \
         GRANT ROLE loader_add_columns TO {}",
        user.quoted()
    )
}

/// Whether a failed `ADD COLUMN` failed because the column is there already (another
/// loader, or an operator, added it first): PostgreSQL's and Redshift's words,
/// `column "x" of relation "t" already exists`.
pub fn column_already_exists(message: &str, column: &Ident) -> bool {
    message.contains(&format!("column \"{}\"", column.as_str()))
        && message.contains("already exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_one_quoted_nullable_column_of_a_known_type() {
        let t = TableName::parse("sales.orders").unwrap();
        let c = Ident::parse("Discount").unwrap();
        assert_eq!(
            add_column(&t, &c, "DECIMAL(18,4)").unwrap(),
            "ALTER TABLE \"sales\".\"orders\" ADD COLUMN \"discount\" DECIMAL(18,4)"
        );
        assert!(add_column(&t, &c, "INT; DROP TABLE x").is_err());
        assert!(add_column(&t, &c, "INTEGER NOT NULL").is_err());
        assert!(column_already_exists(
            "ERROR: column \"discount\" of relation \"orders\" already exists",
            &c
        ));
        let user = DbUser::parse("IAMR:partition-loader").unwrap();
        assert_eq!(
            add_columns_right(&t, &user),
            "ALTER TABLE \"sales\".\"orders\" OWNER TO \"IAMR:partition-loader\""
        );
        assert!(!column_already_exists(
            "ERROR: column \"other\" of relation \"orders\" already exists",
            &c
        ));
    }
}
