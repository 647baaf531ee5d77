//! Redshift compares VARCHAR values ignoring trailing blanks; PostgreSQL does not.
//!
//! "Trailing spaces in VARCHAR and CHAR values are treated as semantically
//! insignificant when values are compared" and "Length calculations return the length
//! of VARCHAR character strings with trailing spaces included"
//! (<https://docs.aws.amazon.com/redshift/latest/dg/r_Character_types.html>, "Significance
//! of trailing blanks"; the example on
//! <https://docs.aws.amazon.com/redshift/latest/dg/r_Examples_with_character_types.html>
//! counts `'9516 Magnolia Boulevard'` and `'9516 Magnolia Boulevard  '` as equal, while
//! LENGTH returns 23 and 25). CHAR (PostgreSQL's `bpchar`) already behaves so.
//!
//! The emulator defines the six comparison operators on `(varchar, varchar)` in schema
//! `public`, each comparing both sides with their trailing blanks removed. PostgreSQL's
//! operator resolution takes an exact match on the argument types before a
//! binary-coercible one (`text = text`), and an untyped literal or Data API parameter
//! (bound as a quoted literal) takes the other side's type, so `col = 'x'`, `col IN
//! ('x', 'y')`, `col = ANY(…)`, `DELETE … WHERE col = :p` and joins of two VARCHAR
//! columns compare the Redshift way. LENGTH keeps counting trailing blanks, as
//! Redshift's LEN/LENGTH do for VARCHAR
//! (<https://docs.aws.amazon.com/redshift/latest/dg/r_LEN.html>), so `col = 'x' AND
//! LENGTH(col) = 1` is an exact comparison on both. Redshift's LEN, a synonym of LENGTH,
//! is defined too (a CHAR argument loses its padding on the way to `text`, so LEN
//! does not count a CHAR's trailing blanks, as documented).
//!
//! Left as PostgreSQL does it (the documentation speaks of comparisons only, so the
//! narrow reading): GROUP BY, DISTINCT, UNION and ORDER BY, which use VARCHAR's default
//! operator class (`text_ops`, exact); `text` columns (Redshift turns TEXT into
//! VARCHAR(256), the emulator keeps PostgreSQL's `text`); a VARCHAR compared with a
//! `text` value. The operators are neither hashable nor mergeable, so a join on them
//! is a nested loop: fine for the emulator's table sizes.

/// SQL run in every database's set-up (idempotent: the database outlives the emulator).
pub const VARCHAR_COMPARISON_SQL: &str = "
         CREATE OR REPLACE FUNCTION public.len(s text) RETURNS integer
           LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
           AS $rdl$ SELECT pg_catalog.length(s) $rdl$;
         CREATE OR REPLACE FUNCTION public.rdl_varchar_cmp(a varchar, b varchar) RETURNS integer
           LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
           AS $rdl$ SELECT pg_catalog.bttextcmp(pg_catalog.rtrim(a, ' '), pg_catalog.rtrim(b, ' ')) $rdl$;
         CREATE OR REPLACE FUNCTION public.rdl_varchar_eq(a varchar, b varchar) RETURNS boolean
           LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
           AS $rdl$ SELECT pg_catalog.texteq(pg_catalog.rtrim(a, ' '), pg_catalog.rtrim(b, ' ')) $rdl$;
         CREATE OR REPLACE FUNCTION public.rdl_varchar_ne(a varchar, b varchar) RETURNS boolean
           LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
           AS $rdl$ SELECT pg_catalog.textne(pg_catalog.rtrim(a, ' '), pg_catalog.rtrim(b, ' ')) $rdl$;
         CREATE OR REPLACE FUNCTION public.rdl_varchar_lt(a varchar, b varchar) RETURNS boolean
           LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
           AS $rdl$ SELECT public.rdl_varchar_cmp(a, b) < 0 $rdl$;
         CREATE OR REPLACE FUNCTION public.rdl_varchar_le(a varchar, b varchar) RETURNS boolean
           LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
           AS $rdl$ SELECT public.rdl_varchar_cmp(a, b) <= 0 $rdl$;
         CREATE OR REPLACE FUNCTION public.rdl_varchar_gt(a varchar, b varchar) RETURNS boolean
           LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
           AS $rdl$ SELECT public.rdl_varchar_cmp(a, b) > 0 $rdl$;
         CREATE OR REPLACE FUNCTION public.rdl_varchar_ge(a varchar, b varchar) RETURNS boolean
           LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
           AS $rdl$ SELECT public.rdl_varchar_cmp(a, b) >= 0 $rdl$;
         DO $rdl$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
                          WHERE n.nspname = 'public' AND o.oprname = '='
                            AND o.oprleft = 'varchar'::regtype AND o.oprright = 'varchar'::regtype) THEN
             CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar,
               FUNCTION = public.rdl_varchar_eq, COMMUTATOR = OPERATOR(public.=),
               NEGATOR = OPERATOR(public.<>), RESTRICT = eqsel, JOIN = eqjoinsel);
             CREATE OPERATOR public.<> (LEFTARG = varchar, RIGHTARG = varchar,
               FUNCTION = public.rdl_varchar_ne, COMMUTATOR = OPERATOR(public.<>),
               NEGATOR = OPERATOR(public.=), RESTRICT = neqsel, JOIN = neqjoinsel);
             CREATE OPERATOR public.< (LEFTARG = varchar, RIGHTARG = varchar,
               FUNCTION = public.rdl_varchar_lt, COMMUTATOR = OPERATOR(public.>),
               NEGATOR = OPERATOR(public.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
             CREATE OPERATOR public.<= (LEFTARG = varchar, RIGHTARG = varchar,
               FUNCTION = public.rdl_varchar_le, COMMUTATOR = OPERATOR(public.>=),
               NEGATOR = OPERATOR(public.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
             CREATE OPERATOR public.> (LEFTARG = varchar, RIGHTARG = varchar,
               FUNCTION = public.rdl_varchar_gt, COMMUTATOR = OPERATOR(public.<),
               NEGATOR = OPERATOR(public.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
             CREATE OPERATOR public.>= (LEFTARG = varchar, RIGHTARG = varchar,
               FUNCTION = public.rdl_varchar_ge, COMMUTATOR = OPERATOR(public.<=),
               NEGATOR = OPERATOR(public.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
           END IF;
         END $rdl$;";
