//! The deterministic simulation of the lease protocol (see `tests/sim/mod.rs`).
//!
//! `SIM_SEED=<seed> [SIM_WORKLOAD=full|handled_today|item2|item3|item4|item5]
//! [SIM_ISOLATION=snapshot|serializable] cargo test --test simulation replay -- --nocapture`
//! replays one seed and prints its schedule.

mod sim;

use sim::warehouse::Isolation;
use sim::{run_seed, Workload};

#[test]
fn smoke() {
    let r = run_seed(&Workload::handled_today(Isolation::Snapshot), 1);
    println!("{}", r.schedule());
    assert!(r.steps > 0);
}
