//! loaderctl's library side: bootstrap and grants (`admin`), `doctor`, and `upkeep`
//! (which the Lambda also runs after its batch, in `run::invocation`). Invariant: nothing
//! here decides a load; these read and maintain what the protocol wrote. Arrows: `ops` →
//! `sql`, `io`, `lake`, `run::handler` (the `Loader` they borrow clients from).

pub mod admin;
pub mod doctor;
pub mod upkeep;
