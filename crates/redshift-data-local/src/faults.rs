//! Fault injection for tests: added latency, throttling, failing COPYs, serialization
//! conflicts. Off until a fault set is added through `/_admin/faults` or `RDL_FAULTS`.
//! Every injection is counted per workgroup (`GET /_admin/faults/injected`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Fraction of transactions (batches, and single statements not in autocommit) that
    /// fail at COMMIT with Redshift's serialization error 1023, everything rolled back,
    /// as a real conflict with a concurrent transaction would.
    #[serde(default)]
    pub conflict_fraction: f64,
    /// Statements held SUBMITTED before they start, as a busy WLM queue holds them:
    /// a caller that gave up meanwhile (killed at its timeout) leaves them to run
    /// later. A cancel that arrives during the hold still ends the statement ABORTED.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hold_statements: Vec<HoldStatements>,
    /// How long each VACUUM runs (holding the workgroup's one VACUUM slot), so that
    /// tests can meet a VACUUM another session runs.
    #[serde(default)]
    pub vacuum_ms: u64,
    /// How a COPY's error names the file it failed on. Redshift's Spectrum errors name
    /// it in their context as an HTTPS URL (`File 'https://s3.<region>.amazonaws.com/
    /// <bucket>/<key>' has an incompatible Parquet schema ...`, code 15007) and may cut
    /// the context short; whether every error about a file names it is not documented,
    /// so tests can take the name away and the loader must still find the file.
    #[serde(default, skip_serializing_if = "FileNames::is_s3")]
    pub file_names: FileNames,
    /// Requests per second allowed per API operation (`{"DescribeStatement": 100,
    /// "BatchExecuteStatement": 30}`), counted over the calls in the set's scope (the
    /// Data API counts per account and Region). A request beyond it in the current
    /// second is answered `ThrottlingException` "Rate exceeded", as the Data API answers
    /// a request over its request-rate quota; refused requests do not count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, u32>,
}

/// How a COPY error names its file (see [`FaultSet::file_names`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileNames {
    /// `s3://bucket/key`, the emulator's default.
    #[default]
    S3,
    /// `https://s3.us-east-1.amazonaws.com/bucket/key`, as Redshift's Spectrum context.
    Https,
    /// Not at all.
    Hidden,
}

impl FileNames {
    fn is_s3(&self) -> bool {
        *self == FileNames::S3
    }

    /// `message` with every `s3://` URL in it written this way. Hidden drops the URL
    /// together with the words that introduce it (`File '…' ` → `File `, `, File name:
    /// …` → ``).
    pub fn rewrite(self, message: &str) -> String {
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(at) = rest.find("s3://") {
            let (before, from) = rest.split_at(at);
            let end = from
                .find(|c: char| c == '\'' || c.is_whitespace())
                .unwrap_or(from.len());
            let (url, after) = from.split_at(end);
            match self {
                FileNames::S3 => {
                    out.push_str(before);
                    out.push_str(url);
                }
                FileNames::Https => {
                    out.push_str(before);
                    out.push_str("https://s3.us-east-1.amazonaws.com/");
                    out.push_str(&url["s3://".len()..]);
                }
                FileNames::Hidden => {
                    let before = before
                        .strip_suffix(", File name: ")
                        .or_else(|| before.strip_suffix(" '"))
                        .unwrap_or(before);
                    out.push_str(before);
                }
            }
            rest = after;
            if self == FileNames::Hidden {
                rest = rest.strip_prefix('\'').unwrap_or(rest);
            }
        }
        out.push_str(rest);
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HoldStatements {
    /// Only statements (or batches) one of whose SQL texts contains this, compared
    /// case-insensitively.
    pub sql_contains: String,
    /// How many more such statements are held.
    pub count: u32,
    /// How long each is held.
    pub hold_ms: u64,
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
        if !(0.0..=1.0).contains(&self.conflict_fraction) {
            return Err("conflict_fraction must be between 0 and 1".into());
        }
        if self
            .hold_statements
            .iter()
            .any(|h| h.sql_contains.trim().is_empty())
        {
            return Err("hold_statements[].sql_contains must not be empty".into());
        }
        if self.rate_limits.values().any(|n| *n == 0) {
            return Err("rate_limits values must be at least 1 per second".into());
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
    /// Injections so far: workgroup (or `""`) → kind → count.
    injected: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    /// Requests accepted in the current second: (scope of the limiting set, operation)
    /// → (second, count).
    windows: Mutex<BTreeMap<(String, String), (u64, u32)>>,
}

impl Faults {
    pub fn add(&self, set: FaultSet) {
        self.lock().push(set);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Drops the sets scoped to `workgroup` only (other tests' sets stay).
    pub fn clear_scope(&self, workgroup: &str) {
        self.lock()
            .retain(|s| s.workgroup.as_deref() != Some(workgroup));
    }

    /// Counts of injected faults per workgroup and kind.
    pub fn injected(&self) -> BTreeMap<String, BTreeMap<&'static str, u64>> {
        self.injected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn count(&self, scope: Option<&str>, kind: &'static str) {
        let mut counts = self.injected.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry(scope.unwrap_or_default().to_string())
            .or_default()
            .entry(kind)
            .or_default() += 1;
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
        if ms > 0 {
            self.count(scope, "latency");
        }
        Duration::from_millis(ms)
    }

    /// How long a VACUUM in `scope` runs (the longest `vacuum_ms` in force).
    pub fn vacuum_hold(&self, scope: Option<&str>) -> Duration {
        let ms = self
            .lock()
            .iter()
            .filter(|s| s.applies_to(scope))
            .map(|s| s.vacuum_ms)
            .max()
            .unwrap_or(0);
        Duration::from_millis(ms)
    }

    /// Whether this call of `operation` is over a `rate_limits` entry in force (the
    /// strictest applies): it is answered with ThrottlingException and not counted.
    pub fn rate_limited(&self, scope: Option<&str>, operation: &str) -> bool {
        let limit = self
            .lock()
            .iter()
            .filter(|s| s.applies_to(scope))
            .filter_map(|s| {
                let n = s.rate_limits.get(operation)?;
                Some((*n, s.workgroup.clone().unwrap_or_default()))
            })
            .min();
        let Some((limit, counted_in)) = limit else {
            return false;
        };
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows
            .entry((counted_in, operation.to_string()))
            .or_insert((second, 0));
        if window.0 != second {
            *window = (second, 0);
        }
        if window.1 >= limit {
            drop(windows);
            self.count(scope, "rate_limited");
            return true;
        }
        window.1 += 1;
        false
    }

    /// Whether this call is answered with ThrottlingException.
    pub fn throttle(&self, scope: Option<&str>) -> bool {
        let hit = self
            .lock()
            .iter()
            .filter(|s| s.applies_to(scope) && s.throttle_fraction > 0.0)
            .any(|s| fastrand::f64() < s.throttle_fraction);
        if hit {
            self.count(scope, "throttle");
        }
        hit
    }

    /// Whether this transaction fails at COMMIT with an injected serialization conflict.
    pub fn conflict(&self, scope: Option<&str>) -> bool {
        let hit = self
            .lock()
            .iter()
            .filter(|s| s.applies_to(scope) && s.conflict_fraction > 0.0)
            .any(|s| fastrand::f64() < s.conflict_fraction);
        if hit {
            self.count(scope, "conflict");
        }
        hit
    }

    /// How COPY errors in `scope` name their file (the last set that says wins).
    pub fn file_names(&self, scope: Option<&str>) -> FileNames {
        self.lock()
            .iter()
            .filter(|s| s.applies_to(scope) && !s.file_names.is_s3())
            .map(|s| s.file_names)
            .next_back()
            .unwrap_or_default()
    }

    /// Consumes one injected COPY failure for `table`, returning its message.
    pub fn take_copy_failure(&self, scope: Option<&str>, table: &str) -> Option<String> {
        let table = normalize_table(table);
        let taken = self
            .lock()
            .iter_mut()
            .filter(|s| s.applies_to(scope))
            .flat_map(|s| s.fail_copies.iter_mut())
            .find(|f| f.count > 0 && normalize_table(&f.table) == table)
            .map(|f| {
                f.count -= 1;
                f.message.clone()
            });
        if taken.is_some() {
            self.count(scope, "failed_copy");
        }
        taken
    }

    /// Consumes one hold for a statement whose SQL texts are `sqls`, returning how long
    /// to hold it.
    pub fn take_hold<'a>(
        &self,
        scope: Option<&str>,
        mut sqls: impl Iterator<Item = &'a str>,
    ) -> Option<Duration> {
        let texts: Vec<String> = sqls.by_ref().map(str::to_lowercase).collect();
        let taken = self
            .lock()
            .iter_mut()
            .filter(|s| s.applies_to(scope))
            .flat_map(|s| s.hold_statements.iter_mut())
            .find(|h| {
                let wanted = h.sql_contains.to_lowercase();
                h.count > 0 && texts.iter().any(|t| t.contains(&wanted))
            })
            .map(|h| {
                h.count -= 1;
                Duration::from_millis(h.hold_ms)
            });
        if taken.is_some() {
            self.count(scope, "held");
        }
        taken
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
            conflict_fraction: 0.0,
            hold_statements: Vec::new(),
            vacuum_ms: 0,
            file_names: FileNames::S3,
            rate_limits: BTreeMap::new(),
        }
    }

    #[test]
    fn holds_match_sql_text_and_are_used_up() {
        let faults = Faults::default();
        faults.add(FaultSet {
            hold_statements: vec![HoldStatements {
                sql_contains: "COPY \"S\".\"T\"".into(),
                count: 1,
                hold_ms: 5,
            }],
            ..FaultSet::default()
        });
        assert_eq!(faults.take_hold(None, ["SELECT 1"].into_iter()), None);
        assert_eq!(
            faults.take_hold(None, ["LOCK x", "copy \"s\".\"t\" FROM"].into_iter()),
            Some(Duration::from_millis(5))
        );
        assert_eq!(
            faults.take_hold(None, ["COPY \"s\".\"t\""].into_iter()),
            None
        );
        assert_eq!(faults.injected()[""]["held"], 1);
    }

    #[test]
    fn conflicts_are_drawn_counted_and_scoped_clears_keep_others() {
        let faults = Faults::default();
        faults.add(FaultSet {
            workgroup: Some("wg-a".into()),
            conflict_fraction: 1.0,
            ..FaultSet::default()
        });
        faults.add(set(Some("wg-b")));
        assert!(faults.conflict(Some("wg-a")));
        assert!(!faults.conflict(Some("wg-b")));
        assert_eq!(faults.injected()["wg-a"]["conflict"], 1);
        faults.clear_scope("wg-a");
        assert!(!faults.conflict(Some("wg-a")));
        assert_eq!(faults.list().len(), 1, "wg-b's set stays");
        assert!(FaultSet {
            conflict_fraction: -0.5,
            ..FaultSet::default()
        }
        .validate()
        .is_err());
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
    fn file_names_are_rewritten_or_hidden() {
        let m = "ERROR: Spectrum Scan Error. File 's3://b/p/f.parquet' is not a valid Parquet \
                 file: bad magic";
        assert_eq!(FileNames::S3.rewrite(m), m);
        assert_eq!(
            FileNames::Https.rewrite(m),
            "ERROR: Spectrum Scan Error. File 'https://s3.us-east-1.amazonaws.com/b/p/f.parquet' \
             is not a valid Parquet file: bad magic"
        );
        assert_eq!(
            FileNames::Hidden.rewrite(m),
            "ERROR: Spectrum Scan Error. File is not a valid Parquet file: bad magic"
        );
        let count = "Spectrum Scan Error. Unmatched number of columns between table and file. \
                     Table columns: 2, Data columns: 3, File name: s3://b/k.parquet";
        assert!(!FileNames::Hidden.rewrite(count).contains("s3://"));
        assert!(FileNames::Hidden
            .rewrite(count)
            .ends_with("Data columns: 3"));
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
        assert_eq!(faults.injected()["any"]["throttle"], 1);
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
