//! Fault injection for tests: added latency, throttling, failing COPYs. Off until a
//! fault set is added through `/_admin/faults` or `RDL_FAULTS`.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSet {
    /// Only calls whose WorkgroupName or ClusterIdentifier equals this; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workgroup: Option<String>,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub throttle_fraction: f64,
    #[serde(default)]
    pub fail_copies: Vec<FailCopies>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailCopies {
    /// `schema.table`, matched case-insensitively; unqualified means `public`.
    pub table: String,
    /// How many more COPYs into the table fail.
    pub count: u32,
    /// The statement's Error, verbatim.
    pub message: String,
}

impl FaultSet {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.throttle_fraction) {
            return Err("throttle_fraction must be between 0 and 1".into());
        }
        if self.fail_copies.iter().any(|f| f.table.trim().is_empty()) {
            return Err("fail_copies[].table must not be empty".into());
        }
        Ok(())
    }

    fn applies_to(&self, scope: Option<&str>) -> bool {
        match &self.workgroup {
            None => true,
            Some(wanted) => scope == Some(wanted.as_str()),
        }
    }
}

/// The fault sets in force.
#[derive(Debug, Default)]
pub struct Faults {
    sets: Mutex<Vec<FaultSet>>,
}

impl Faults {
    pub fn add(&self, set: FaultSet) {
        self.lock().push(set);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn list(&self) -> Vec<FaultSet> {
        self.lock().clone()
    }

    /// Total latency to add to a call in `scope`.
    pub fn latency(&self, scope: Option<&str>) -> Duration {
        let ms = self
            .lock()
            .iter()
            .filter(|s| s.applies_to(scope))
            .map(|s| s.latency_ms)
            .sum();
        Duration::from_millis(ms)
    }

    /// Whether this call is answered with ThrottlingException.
    pub fn throttle(&self, scope: Option<&str>) -> bool {
        self.lock()
            .iter()
            .filter(|s| s.applies_to(scope) && s.throttle_fraction > 0.0)
            .any(|s| fastrand::f64() < s.throttle_fraction)
    }

    /// Consumes one injected COPY failure for `table`, returning its message.
    pub fn take_copy_failure(&self, scope: Option<&str>, table: &str) -> Option<String> {
        let table = normalize_table(table);
        let mut sets = self.lock();
        sets.iter_mut()
            .filter(|s| s.applies_to(scope))
            .flat_map(|s| s.fail_copies.iter_mut())
            .find(|f| f.count > 0 && normalize_table(&f.table) == table)
            .map(|f| {
                f.count -= 1;
                f.message.clone()
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FaultSet>> {
        // A poisoned lock only means a panic elsewhere; the data is still usable.
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `"Sales"."Orders"` and `sales.orders` name the same table here; `orders` is `public.orders`.
fn normalize_table(name: &str) -> String {
    let unquoted: String = name.chars().filter(|&c| c != '"').collect();
    let lower = unquoted.trim().to_lowercase();
    if lower.contains('.') {
        lower
    } else {
        format!("public.{lower}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(workgroup: Option<&str>) -> FaultSet {
        FaultSet {
            workgroup: workgroup.map(str::to_string),
            latency_ms: 20,
            throttle_fraction: 0.0,
            fail_copies: vec![FailCopies {
                table: "Sales.Orders".into(),
                count: 1,
                message: "boom".into(),
            }],
        }
    }

    #[test]
    fn scoped_sets_only_apply_to_their_workgroup() {
        let faults = Faults::default();
        faults.add(set(Some("wg-a")));
        assert_eq!(faults.latency(Some("wg-a")), Duration::from_millis(20));
        assert_eq!(faults.latency(Some("wg-b")), Duration::ZERO);
        assert_eq!(faults.latency(None), Duration::ZERO);
        assert_eq!(faults.take_copy_failure(Some("wg-b"), "sales.orders"), None);
    }

    #[test]
    fn copy_failures_are_counted_and_match_names() {
        let faults = Faults::default();
        faults.add(set(None));
        assert_eq!(faults.take_copy_failure(None, "public.orders"), None);
        assert_eq!(
            faults
                .take_copy_failure(None, "\"sales\".\"ORDERS\"")
                .as_deref(),
            Some("boom")
        );
        assert_eq!(faults.take_copy_failure(None, "sales.orders"), None);
    }

    #[test]
    fn throttle_all_or_nothing() {
        let faults = Faults::default();
        assert!(!faults.throttle(None));
        faults.add(FaultSet {
            throttle_fraction: 1.0,
            ..FaultSet::default()
        });
        assert!(faults.throttle(Some("any")));
        faults.clear();
        assert!(!faults.throttle(None));
        assert!(FaultSet {
            throttle_fraction: 2.0,
            ..FaultSet::default()
        }
        .validate()
        .is_err());
    }
}
