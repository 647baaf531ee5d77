//! VARCHAR comparisons ignore trailing blanks, as on Redshift
//! (<https://docs.aws.amazon.com/redshift/latest/dg/r_Character_types.html>, "Significance
//! of trailing blanks"); LENGTH counts them for VARCHAR and not for CHAR
//! (<https://docs.aws.amazon.com/redshift/latest/dg/r_LEN.html>).

mod common;

use common::{start, text};

#[tokio::test]
async fn varchar_equality_ignores_trailing_blanks_and_length_counts_them() {
    let h = start().await;
    assert_eq!(
        h.scalar(
            "SELECT CASE WHEN 'a'::varchar = 'a  '::varchar THEN 'equal' ELSE 'different' END"
        )
        .await,
        "equal"
    );
    assert_eq!(
        h.scalar("SELECT CASE WHEN 'a'::varchar <> 'a  '::varchar OR 'a '::varchar < 'a'::varchar THEN 'different' ELSE 'equal' END")
            .await,
        "equal"
    );
    // Redshift's own example: two addresses that differ only by trailing blanks match.
    let t = h.table("address");
    h.ok(&format!(
        "CREATE TABLE {t} (id int, address1 varchar(100), other varchar(100), city char(20))"
    ))
    .await;
    h.ok(&format!(
        "INSERT INTO {t} VALUES (1, '9516 Magnolia Boulevard', 'x', 'Augusta'), \
         (2, '9516 Magnolia Boulevard  ', '9516 Magnolia Boulevard', 'Augusta  '), \
         (3, 'Other', 'Other  ', NULL)"
    ))
    .await;
    let ids = |rows: Vec<Vec<aws_sdk_redshiftdata::types::Field>>| {
        rows.iter().map(|r| text(&r[0])).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(h
            .rows(&format!(
                "SELECT id FROM {t} WHERE address1 = '9516 Magnolia Boulevard' ORDER BY id"
            ))
            .await),
        ["1", "2"]
    );
    assert_eq!(
        ids(h
            .rows(&format!(
                "SELECT id FROM {t} WHERE address1 IN ('9516 Magnolia Boulevard ', 'Other') ORDER BY id"
            ))
            .await),
        ["1", "2", "3"]
    );
    // A column against another column (a join or a correlated predicate).
    assert_eq!(
        ids(h
            .rows(&format!(
                "SELECT id FROM {t} WHERE address1 = other ORDER BY id"
            ))
            .await),
        ["2", "3"]
    );
    assert_eq!(
        h.scalar(&format!(
            "SELECT COUNT(*) FROM {t} a JOIN {t} b ON a.address1 = b.other"
        ))
        .await,
        "3"
    );
    // A Data API parameter is bound like a literal: it compares the same way.
    let id = h
        .submit_with(
            &format!("SELECT COUNT(*) FROM {t} WHERE address1 = :a"),
            &[("a", "9516 Magnolia Boulevard   ")],
        )
        .await;
    h.wait(&id).await;
    assert_eq!(text(&h.all_records(&id).await[0][0]), "2");
    // LENGTH counts a VARCHAR's trailing blanks (23 and 25), not a CHAR's: an equality
    // plus LENGTH is exact.
    assert_eq!(
        ids(h
            .rows(&format!(
                "SELECT LENGTH(address1) FROM {t} WHERE id < 3 ORDER BY id"
            ))
            .await),
        ["23", "25"]
    );
    assert_eq!(
        h.scalar(&format!(
            "SELECT COUNT(DISTINCT LENGTH(city)) FROM {t} WHERE city = 'Augusta'"
        ))
        .await,
        "1"
    );
    assert_eq!(
        ids(h
            .rows(&format!(
                "SELECT id FROM {t} WHERE address1 = '9516 Magnolia Boulevard' \
                 AND LENGTH(address1) = 23"
            ))
            .await),
        ["1"]
    );
    // LEN is LENGTH's synonym: counts a VARCHAR's trailing blanks, not a CHAR's.
    assert_eq!(
        ids(h
            .rows(&format!(
                "SELECT LEN(address1) || '/' || LEN(city) FROM {t} WHERE id < 3 ORDER BY id"
            ))
            .await),
        ["23/7", "25/7"]
    );
    // Decided narrow (the documentation speaks of comparisons only): GROUP BY and
    // DISTINCT keep values that differ by trailing blanks apart, as PostgreSQL does.
    assert_eq!(
        h.scalar(&format!(
            "SELECT COUNT(DISTINCT address1) FROM {t} WHERE id < 3"
        ))
        .await,
        "2"
    );
    // DELETE … WHERE compares the same way.
    h.ok(&format!("DELETE FROM {t} WHERE address1 = 'Other   '"))
        .await;
    assert_eq!(h.scalar(&format!("SELECT COUNT(*) FROM {t}")).await, "2");
}
