//! The S3 gate in front of the Redshift lease (issue 21 item 4), against the local stack
//! through the library's `handle` (one call per Lambda invocation, each its own holder):
//! a burst of one-event invocations loads every file once while the queued ones make no
//! Data API call; a gate left by a crashed holder is taken over by the next event; the
//! sweep transfers the S3 wake-ups behind a gate once it expired.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use partition_loader::io::storage::Storage;
use partition_loader::lake::watermark::Gate;
use partition_loader::protocol::gate::{GateDoc, WakeUpDoc};
use partition_loader::run::handler::Loader;
use partition_loader::run::metrics;
use partition_loader::sql::{TableName, WakeUp};
use partition_loader::{LoaderError, Outcome};

const GATES: &str = "_loader/gates/";

/// Every object under the gates folder (gates and S3 wake-ups).
async fn gate_objects(stack: &Stack) -> Vec<String> {
    stack.keys(GATES).await
}

/// A second route `orders_b/` into `<schema>.orders_b`, beside [`Stack::orders_route`].
fn two_routes(stack: &Stack) -> String {
    format!(
        "{}[[routes]]\nbucket = \"{}\"\nprefix = \"orders_b/\"\ntable = \"{}\"\n\
         format = \"parquet\"\npartition_columns = [{{ name = \"order_date\", type = \"date\" }}]\n",
        stack.orders_route(""),
        stack.bucket,
        stack.table("orders_b")
    )
}

/// `n` one-event invocations of `prefix`'s files at once through `loader`: their
/// outcomes and each one's Data API calls.
async fn burst(
    stack: &Stack,
    loader: &TestLoader,
    prefix: &str,
    n: i64,
) -> Vec<(Result<Outcome, LoaderError>, u64)> {
    let mut events = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}order_date=2024-05-28/f{i}.parquet");
        events.push(stack.parquet_event(&key, i * 10..i * 10 + 10).await);
    }
    let calls = events.iter().enumerate().map(|(i, event)| async move {
        let holder = format!("burst-{prefix}{i}~{:08x}", fastrand::u32(..));
        let (r, figures) = metrics::measure(loader.handle(event, &holder, deadline())).await;
        (r, figures.data_api_calls)
    });
    futures::future::join_all(calls).await
}

#[tokio::test]
async fn a_burst_of_one_event_invocations_loads_once_and_the_queued_ones_call_no_data_api() {
    let stack = Stack::new().await;
    let routes = two_routes(&stack);
    let gated = stack.loader(&routes).await;
    let direct = Loader::connect(stack.config(&routes))
        .await
        .with_gate(false);
    let t = stack.orders_table().await;
    let b = stack
        .create_table("orders_b", "id BIGINT, name VARCHAR(64), order_date DATE")
        .await;

    let on = burst(&stack, &gated, "orders/", 30).await;
    let off = burst(&stack, &direct, "orders_b/", 30).await;

    for (table, results) in [(&t, &on), (&b, &off)] {
        for (r, _) in results.iter() {
            assert!(r.is_ok(), "{table}: {r:?}");
        }
        assert_eq!(stack.rows(table).await, 300, "{table}: every file once");
        assert_eq!(
            stack
                .count(&format!("SELECT COUNT(DISTINCT id) FROM {table}"))
                .await,
            300
        );
        assert_eq!(stack.ledger_rows(table).await, 30, "{table}");
        assert_eq!(stack.lease_rows(table).await, 0, "{table}: no lease left");
        assert_eq!(
            stack.wakeup_rows(table).await,
            0,
            "{table}: no wake-up left"
        );
    }
    assert_eq!(
        gate_objects(&stack).await,
        Vec::<String>::new(),
        "no gate and no S3 wake-up left"
    );
    let total = |v: &[(Result<Outcome, LoaderError>, u64)]| v.iter().map(|(_, c)| c).sum::<u64>();
    let silent = on.iter().filter(|(_, c)| *c == 0).count();
    let (calls_on, calls_off) = (total(&on), total(&off));
    println!("Data API calls: gate {calls_on} ({silent} of 30 invocations made none), without {calls_off}");
    assert!(
        silent >= 20,
        "most queued invocations make no Data API call: {silent} of 30"
    );
    assert!(
        calls_on * 2 < calls_off,
        "the gate's burst costs far fewer calls: {calls_on} against {calls_off}"
    );
}

/// The gate and one S3 wake-up as a crashed gate holder's burst would leave them:
/// `expires_in` seconds from now (negative: expired).
async fn leave_gate(stack: &Stack, loader: &TestLoader, expires_in: i64, wake: &WakeUp<'_>) {
    let table = TableName::parse(&stack.table("orders")).unwrap();
    let keys = loader.gate_keys(&table);
    let now = SystemTime::now();
    let mut doc = GateDoc::new("crashed~00000001", now, Duration::ZERO);
    doc.expires_at_epoch_s = (doc.expires_at_epoch_s as i64
        - partition_loader::protocol::lease::LEASE_MARGIN.as_secs() as i64
        + expires_in) as u64;
    stack.put(&keys.gate, doc.to_json().into_bytes()).await;
    let key = keys.wakeup_key("queued~00000002", wake);
    stack
        .put(&key, WakeUpDoc::of(wake).to_json().into_bytes())
        .await;
}

#[tokio::test]
async fn a_gate_left_by_a_crashed_holder_is_taken_over_by_the_next_event() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    // An event of another partition queued behind the crashed holder's gate.
    let other = "orders/order_date=2024-05-27/queued.parquet";
    stack.put_parquet(other, 100..110).await;
    let url = format!("s3://{}/{other}", stack.bucket);
    let wake = WakeUp {
        bucket: &stack.bucket,
        partition_path: "order_date=2024-05-27/",
        s3_url: &url,
        etag: "",
        route_prefix: "orders/",
    };
    leave_gate(&stack, &loader, -5, &wake).await;

    let event = stack.orders_file("next.parquet", 0..10).await;
    let outcome = handle(&loader, &event).await;
    assert!(
        matches!(outcome, Ok(Outcome::Loaded { .. })),
        "the next event takes the expired gate over and loads: {outcome:?}"
    );
    assert_eq!(
        stack.rows(&t).await,
        20,
        "its own file and the one queued behind the crashed holder's gate"
    );
    assert_eq!(stack.ledger_rows(&t).await, 2);
    assert_eq!(stack.lease_rows(&t).await, 0);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    assert_eq!(gate_objects(&stack).await, Vec::<String>::new());
}

#[tokio::test]
async fn the_sweep_transfers_the_wake_ups_behind_a_gate_once_it_expired() {
    let stack = Stack::new().await;
    let (loader, t) = stack.orders("").await;
    let table = TableName::parse(&t).unwrap();
    let keys = loader.gate_keys(&table);
    // A live foreign gate (another invocation's, 6 s left): an event queues behind it.
    let doc = GateDoc::new(
        "foreign~00000001",
        SystemTime::now(),
        Duration::from_secs(6),
    );
    let mut doc = doc;
    doc.expires_at_epoch_s -= partition_loader::protocol::lease::LEASE_MARGIN.as_secs();
    stack.put(&keys.gate, doc.to_json().into_bytes()).await;
    let event = stack.orders_file("a.parquet", 0..10).await;
    let (outcome, figures) = metrics::measure(loader.handle(&event, &holder(), deadline())).await;
    match &outcome {
        Ok(Outcome::Queued { holder, .. }) => assert_eq!(holder, "foreign~00000001"),
        other => panic!("queued behind the live gate: {other:?}"),
    }
    assert_eq!(
        figures.data_api_calls, 0,
        "a queued event calls no Data API"
    );
    assert_eq!(
        gate_objects(&stack).await.len(),
        2,
        "the gate and our wake-up"
    );

    // The idle sweep's check sees them (no watermark can hide them).
    let (gate, _) = loader.sweep_gate_open(1).await;
    assert!(
        matches!(&gate, Gate::Query(why) if why.contains("gate")),
        "{gate:?}"
    );
    // A live gate is its holder's: the sweep leaves it (ORDERS_DAY is outside the
    // sweep's window, so only the wake-up would load it).
    let swept = loader.sweep(&holder(), 1, deadline()).await;
    assert!(swept.iter().all(|r| r.is_ok()), "{swept:?}");
    assert_eq!(stack.rows(&t).await, 0);
    assert_eq!(gate_objects(&stack).await.len(), 2);

    // Its holder never comes back: once the gate expired, the sweep hands the wake-up on.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let swept = loader.sweep(&holder(), 1, deadline()).await;
    assert!(swept.iter().all(|r| r.is_ok()), "{swept:?}");
    assert_eq!(
        stack.rows(&t).await,
        10,
        "loaded once, through the transfer"
    );
    assert_eq!(stack.ledger_rows(&t).await, 1);
    assert_eq!(stack.lease_rows(&t).await, 0);
    assert_eq!(stack.wakeup_rows(&t).await, 0);
    assert_eq!(gate_objects(&stack).await, Vec::<String>::new());
    // And the storage's own view agrees (the loader's S3 adapter lists the same).
    let listed = loader
        .storage()
        .list(&stack.bucket, GATES)
        .await
        .expect("listed");
    assert!(listed.is_empty(), "{listed:?}");
}
