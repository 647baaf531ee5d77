//! Lease times mean the same instant whoever writes or reads them (issue 18 item 7):
//! GETDATE() answers in the session's time zone, and a database user may have a default
//! one (`ALTER USER … SET timezone`).

mod common;

use common::*;
use partition_loader::lake::config::Config;
use partition_loader::sql::{DbUser, LeaseTables, TableName};
use partition_loader::{Loader, Outcome};

/// A loader running as database user `user` (granted like the stack's own).
async fn loader_as(stack: &Stack, routes: &str, user: &str) -> TestLoader {
    let mut env = stack.env(routes);
    env.retain(|(k, _)| k != "REDSHIFT_DB_USER");
    env.push(("REDSHIFT_DB_USER".into(), user.to_string()));
    let config = Config::from_lookup(|k| {
        env.iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    })
    .expect("config");
    Loader::connect(config).await
}

#[tokio::test]
async fn a_live_lease_written_in_new_york_is_live_in_tokyo_and_for_the_operator() {
    let stack = Stack::new().await;
    let routes = stack.orders_route("");
    let (_, t) = stack.orders("").await;
    // The stack's loader user lives in New York; a second loader user in Tokyo.
    let tokyo = format!("tokyo_{}", stack.suffix);
    stack
        .sql(&format!("CREATE USER {tokyo} PASSWORD DISABLE"))
        .await;
    let admin = Loader::connect(stack.admin_config(&routes)).await;
    admin
        .grant_loader(&DbUser::parse(&tokyo).unwrap(), deadline())
        .await
        .expect("grant");
    stack
        .sql(&format!(
            "GRANT USAGE ON SCHEMA {} TO {tokyo}",
            stack.schema
        ))
        .await;
    stack
        .sql(&format!("GRANT SELECT, INSERT, DELETE ON {t} TO {tokyo}"))
        .await;
    stack
        .sql(&format!(
            "ALTER USER {} SET timezone TO 'America/New_York'",
            stack.db_user
        ))
        .await;
    stack
        .sql(&format!("ALTER USER {tokyo} SET timezone TO 'Asia/Tokyo'"))
        .await;
    let new_york = stack.loader(&routes).await;
    let tokyo_loader = loader_as(&stack, &routes, &tokyo).await;

    // New York takes the lease for ten minutes (as an invocation still loading would).
    let tables = LeaseTables::for_target(&TableName::parse(&t).unwrap());
    let take = |holder: &str, ttl: i64| {
        format!(
            "CALL {}.{}('{holder}', {ttl}, '', '', '', '', '', '')",
            stack.loader_schema,
            tables.take.quoted()
        )
    };
    new_york
        .execute(take("new-york", 600), vec![], deadline())
        .await
        .expect("take as New York");

    // Tokyo, 14 hours ahead on the wall clock, must see it live and queue.
    let event = stack.orders_file("part-0.parquet", 0..3).await;
    match handle(&tokyo_loader, &event).await {
        Ok(Outcome::Queued { holder, .. }) => assert_eq!(holder, "new-york"),
        other => panic!("Tokyo must queue behind New York's live lease, got {other:?}"),
    }
    assert_eq!(
        stack.rows(&t).await,
        0,
        "nothing loaded behind a live lease"
    );

    // The operator's reads (loaderctl locks/unlock/status), as the Tokyo user.
    let lease = stack.loader_table(&t, "lease");
    let state = tokyo_loader
        .query_utc(
            format!(
                "SELECT CASE WHEN expires_at > GETDATE() THEN 'live' ELSE 'expired' END \
                 FROM {lease}"
            ),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(state[0][0].as_deref(), Some("live"));

    // New York's fence renews its own live lease (its GETDATE() is 5 hours behind UTC).
    let fence = format!(
        "CALL {}.{}('new-york', 600, '', 'none')",
        stack.loader_schema,
        tables.fence.quoted()
    );
    new_york
        .execute(fence.clone(), vec![], deadline())
        .await
        .expect("the holder's fence passes");

    // Once it has really expired, New York's fence still passes while nobody took the
    // lease over (a statement left running holds it, issue 21.1) and leaves it expired,
    // read in UTC by the Tokyo user.
    new_york
        .execute(take("new-york", -60), vec![], deadline())
        .await
        .unwrap();
    new_york
        .execute(fence.clone(), vec![], deadline())
        .await
        .expect("an expired lease nobody took over is still its holder's");
    let state = tokyo_loader
        .query_utc(
            format!(
                "SELECT CASE WHEN expires_at > GETDATE() THEN 'live' ELSE 'expired' END \
                 FROM {lease}"
            ),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(state[0][0].as_deref(), Some("expired"));
    // Tokyo finds no statement of New York running, takes over, drains and loads.
    let o = handle(&tokyo_loader, &event).await;
    assert_eq!(loaded_files(&o), 1, "{o:?}");
    assert_eq!(stack.rows(&t).await, 3);
    assert_eq!(stack.lease_rows(&t).await, 0, "released");
    let e = new_york
        .execute(fence, vec![], deadline())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not held by new-york"), "{e}");
}
