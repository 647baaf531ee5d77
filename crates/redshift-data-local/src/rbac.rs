//! Redshift's role-based system permissions, as far as table upkeep needs them: the
//! ANALYZE and VACUUM permissions, granted to roles, let a role's members analyze and
//! vacuum tables they do not own.
//!
//! Redshift's words (<https://docs.aws.amazon.com/redshift/latest/dg/r_roles-system-privileges.html>;
//! the VACUUM page's "Required privileges": superuser, users with the VACUUM
//! permission, the table's owner, <https://docs.aws.amazon.com/redshift/latest/dg/r_VACUUM_command.html>;
//! ANALYZE likewise, <https://docs.aws.amazon.com/redshift/latest/dg/r_ANALYZE.html>):
//! - `GRANT { ANALYZE | VACUUM } [, ...] TO ROLE r` and `REVOKE ... FROM ROLE r`
//!   (system permissions go to roles; a grant to a user is refused here, the stricter
//!   reading), by a superuser only here;
//! - `GRANT ROLE r TO u` / `REVOKE ROLE r FROM u` (PostgreSQL spells it without ROLE);
//! - `SVV_SYSTEM_PRIVILEGES (system_privilege, identity_id, identity_name,
//!   identity_type)`: superusers see every row, other users the identities they have
//!   access to (here: themselves and the roles they are members of)
//!   (<https://docs.aws.amazon.com/redshift/latest/dg/r_SVV_SYSTEM_PRIVILEGES.html>);
//! - `USER_IS_MEMBER_OF(user, role)`: a user may ask only about themselves unless a
//!   superuser; an unknown role is an error
//!   (<https://docs.aws.amazon.com/redshift/latest/dg/r_USER_IS_MEMBER_OF.html>).
//!
//! Permissions are kept in `public.rdl_system_privileges`; `upkeep::targets` consults
//! `public.rdl_has_system_privilege(privilege, current_user)` for the caller.

use tokio_postgres::Client;

use crate::executor::{postgres_error_text, quote_ident};

/// Created once per database with the emulator's other system tables.
pub const RBAC_DDL: &str = "
         CREATE TABLE IF NOT EXISTS public.rdl_system_privileges (
           system_privilege text NOT NULL, identity_name text NOT NULL,
           identity_type text NOT NULL, UNIQUE (system_privilege, identity_name, identity_type));
         CREATE OR REPLACE VIEW public.svv_system_privileges AS
           SELECT s.system_privilege, r.oid::int AS identity_id, s.identity_name, s.identity_type
           FROM public.rdl_system_privileges s JOIN pg_roles r ON r.rolname = s.identity_name
           WHERE (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
              OR s.identity_name = current_user
              OR pg_has_role(current_user, r.oid, 'MEMBER');
         GRANT SELECT ON public.svv_system_privileges TO PUBLIC;
         CREATE OR REPLACE FUNCTION public.rdl_has_system_privilege(privilege text, who name)
           RETURNS boolean
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $rdl$
             SELECT EXISTS (SELECT 1 FROM public.rdl_system_privileges s
                            JOIN pg_roles r ON r.rolname = s.identity_name
                            WHERE s.system_privilege = privilege
                              AND pg_has_role(who, r.oid, 'MEMBER')) $rdl$;
         GRANT EXECUTE ON FUNCTION public.rdl_has_system_privilege(text, name) TO PUBLIC;
         CREATE OR REPLACE FUNCTION public.user_is_member_of(user_name text, role_name text)
           RETURNS boolean LANGUAGE plpgsql STABLE AS $rdl$
           BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
               RAISE EXCEPTION 'role \"%\" does not exist', role_name;
             END IF;
             IF user_name <> current_user
                AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
               RAISE EXCEPTION 'permission denied to check membership of user \"%\"', user_name;
             END IF;
             RETURN pg_has_role(user_name::name, role_name::name, 'MEMBER');
           END $rdl$;
         GRANT EXECUTE ON FUNCTION public.user_is_member_of(text, text) TO PUBLIC;";

/// A statement of this module, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `GRANT ANALYZE, VACUUM TO ROLE r` (`grant: false`: `REVOKE ... FROM ROLE r`).
    SystemPermission {
        grant: bool,
        permissions: Vec<String>,
        role: String,
    },
    /// `GRANT ROLE r TO u` (`grant: false`: `REVOKE ROLE r FROM u`).
    RoleMembership {
        grant: bool,
        role: String,
        user: String,
    },
}

fn unquote(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => word.to_ascii_lowercase(),
    }
}

/// `Some` when `sql` is one of this module's statements (`Err`: refused, with the words).
pub fn parse(sql: &str) -> Option<Result<Command, String>> {
    let w: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .replace(',', " , ")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let lower: Vec<String> = w.iter().map(|s| s.to_ascii_lowercase()).collect();
    let grant = match lower.first().map(String::as_str) {
        Some("grant") => true,
        Some("revoke") => false,
        _ => return None,
    };
    let to = if grant { "to" } else { "from" };
    if lower.get(1).map(String::as_str) == Some("role") {
        // GRANT ROLE r TO u
        return match (w.get(2), lower.get(3), w.get(4), w.len()) {
            (Some(role), Some(t), Some(user), 5) if t == to => Some(Ok(Command::RoleMembership {
                grant,
                role: unquote(role),
                user: unquote(user),
            })),
            _ => None,
        };
    }
    let at = lower.iter().position(|x| x == to)?;
    let permissions: Vec<String> = lower[1..at].iter().filter(|p| *p != ",").cloned().collect();
    if permissions.is_empty() || !permissions.iter().all(|p| p == "analyze" || p == "vacuum") {
        return None;
    }
    match (
        lower.get(at + 1).map(String::as_str),
        w.get(at + 2),
        w.len(),
    ) {
        (Some("role"), Some(role), n) if n == at + 3 => Some(Ok(Command::SystemPermission {
            grant,
            permissions: permissions.iter().map(|p| p.to_ascii_uppercase()).collect(),
            role: unquote(role),
        })),
        _ => Some(Err(format!(
            "ERROR: system permissions ({}) can be granted to roles only: {} ... {} ROLE role_name",
            permissions.join(", ").to_ascii_uppercase(),
            if grant { "GRANT" } else { "REVOKE" },
            to.to_ascii_uppercase()
        ))),
    }
}

/// Runs a statement of this module on the caller's session `client`; the permission
/// table is written on `admin` (the emulator's own connection) after the caller's
/// right to grant was checked.
pub async fn run(
    client: &Client,
    admin: &Client,
    command: Command,
    pid: i64,
) -> Result<(), String> {
    let failed = |e: tokio_postgres::Error| postgres_error_text(&e, pid);
    match command {
        Command::RoleMembership { grant, role, user } => {
            let sql = if grant {
                format!("GRANT {} TO {}", quote_ident(&role), quote_ident(&user))
            } else {
                format!("REVOKE {} FROM {}", quote_ident(&role), quote_ident(&user))
            };
            client.batch_execute(&sql).await.map_err(failed)?;
            Ok(())
        }
        Command::SystemPermission {
            grant,
            permissions,
            role,
        } => {
            let row = client
                .query_one(
                    "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
                            EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
                    &[&role],
                )
                .await
                .map_err(failed)?;
            let (superuser, exists): (bool, bool) = (
                row.try_get(0).map_err(failed)?,
                row.try_get(1).map_err(failed)?,
            );
            if !superuser {
                return Err("ERROR: permission denied: only a superuser may grant or revoke system permissions here".into());
            }
            if !exists {
                return Err(format!("ERROR: role \"{role}\" does not exist"));
            }
            for p in permissions {
                let sql = if grant {
                    "INSERT INTO public.rdl_system_privileges VALUES ($1, $2, 'role') ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM public.rdl_system_privileges WHERE system_privilege = $1 \
                     AND identity_name = $2 AND identity_type = 'role'"
                };
                admin.execute(sql, &[&p, &role]).await.map_err(failed)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_permissions_and_role_grants_parse_as_redshift_spells_them() {
        assert_eq!(
            parse("GRANT ANALYZE, VACUUM TO ROLE upkeep"),
            Some(Ok(Command::SystemPermission {
                grant: true,
                permissions: vec!["ANALYZE".into(), "VACUUM".into()],
                role: "upkeep".into()
            }))
        );
        assert_eq!(
            parse("revoke vacuum from role \"UpKeep\";"),
            Some(Ok(Command::SystemPermission {
                grant: false,
                permissions: vec!["VACUUM".into()],
                role: "UpKeep".into()
            }))
        );
        assert!(
            matches!(parse("GRANT VACUUM TO loader"), Some(Err(e)) if e.contains("roles only"))
        );
        assert_eq!(
            parse("GRANT ROLE upkeep TO loader"),
            Some(Ok(Command::RoleMembership {
                grant: true,
                role: "upkeep".into(),
                user: "loader".into()
            }))
        );
        // Not ours: table grants and everything else go to PostgreSQL.
        assert_eq!(parse("GRANT SELECT ON t TO loader"), None);
        assert_eq!(parse("GRANT USAGE ON SCHEMA s TO loader"), None);
        assert_eq!(parse("SELECT 1"), None);
    }
}
