//! The S3 gate in front of a table's Redshift lease (issue 21 item 4): which invocation
//! of a burst talks to Redshift. Pure: the objects' keys, their documents and the
//! decision on a gate read; the I/O is `run::gate`.
//!
//! The Redshift lease stays the lock: nothing loads or commits without it, the fence is
//! the last word. The gate only decides who asks for it. Per target table, under the
//! manifest location:
//! - `<prefix>gates/<schema>.<table>/gate.json`: `{holder, expires_at_epoch_s}`, created
//!   with `If-None-Match: *` (or taken over when expired with `If-Match` on the ETag
//!   read); it expires at its holder's deadline + [`lease::LEASE_MARGIN`];
//! - `<prefix>gates/<schema>.<table>/wakeups/<group>/<holder>.<object>.json`: one event's
//!   wake-up (what [`crate::sql::WakeUp`] carries); `<group>` names its (bucket, route,
//!   partition), so the gate holder reads one body per partition, not per event.
//!
//! An event for a data object: PUT its wake-up, THEN read the gate. Live: answer
//! `queued` (two S3 calls, no Data API call). Absent: create it (`If-None-Match: *`);
//! expired: take it over (`If-Match`); either done, this invocation is the *gate holder*,
//! deletes its own wake-up (it loads its event itself) and goes on as without a gate
//! (Redshift acquire, load, drain); refused, it reads again (a bounded loop, then the
//! Redshift path). The gate holder's exit, on every path: (a) delete the gate; (b) LIST
//! the wake-ups; none → done; (c) create the gate again: refused → done; created →
//! *transfer* (one Redshift batch `LOCK wakeup; INSERT` of a row per partition), delete
//! exactly the listed wake-up objects, take the Redshift lease if free and drain; back
//! to (a).
//!
//! Why no wake-up is lost. A queued acquirer wrote its wake-up BEFORE it read a gate
//! *instance* G present (S3 is strongly consistent: a GET after a PUT's success sees it,
//! a LIST after a PUT's success lists it). Every gate instance ends by a DELETE or by a
//! takeover's conditional PUT, and whoever ends it LISTs the wake-ups after that: a
//! holder deletes at its exit and then lists; a taker holds the new instance, and lists
//! at its own exit after deleting it; any invocation that deletes a gate does so only in
//! the exit routine, which lists next. G ended after the acquirer's read, so that LIST
//! sees the wake-up. It is then either transferred by the lister, or the lister failed
//! to create the gate again because another instance G2 exists, created after the
//! lister's LIST: G2's end comes later still, and its ender lists again. A wake-up object
//! is deleted only after its INSERT into the Redshift wake-up table committed, so from
//! then on the Redshift protocol owns it (a wake-up inserted under `LOCK wakeup` is
//! seen by the lease holder's next drain step, or comes after its release, when the
//! transferrer's own take finds the lease free and drains it).
//!
//! A crashed gate holder leaves its instance until `expires_at`: the next event takes
//! it over, and the sweep (every 15 minutes) takes over every absent-or-expired gate
//! with wake-ups behind it and runs the same exit routine. Two gate holders at once
//! (an expiry seen early through clock skew) cost only calls: the Redshift lease still
//! serialises loads, a duplicate transfer lists a partition twice, and the ledger and
//! the fence keep every file loaded once.
//!
//! Invariant: an acquirer answers `queued` only after its wake-up object exists and a
//! live gate was read after that.
//! Invariant: a wake-up object is deleted only after the Redshift INSERT that carries
//! its partition committed.
//! Invariant: every path that ends a gate instance (exit routine, sweep) lists the
//! table's wake-ups after it.
//!
//! S3 pages: the consistency model
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/Welcome.html#ConsistencyModel>:
//! strong read-after-write for PUT and DELETE, LIST included) and conditional writes
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>:
//! `If-None-Match: *` fails with 412 when the key exists, `If-Match` when the ETag
//! differs; a concurrent conditional write may get 409, which is read as refused).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lake::config::S3Location;
use crate::protocol::lease;
use crate::sql::{TableName, WakeUp};

/// The folder of every table's gate under the manifest prefix.
pub const GATES_FOLDER: &str = "gates/";

/// The gate document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateDoc {
    /// The lease token of the invocation holding the gate.
    pub holder: String,
    /// Seconds since the epoch after which anyone may take the gate over.
    pub expires_at_epoch_s: u64,
}

impl GateDoc {
    /// The gate of `holder`, whose invocation has `remaining` time at `now`: it never
    /// outlives the invocation by more than [`lease::LEASE_MARGIN`].
    pub fn new(holder: &str, now: SystemTime, remaining: Duration) -> GateDoc {
        let at = now + remaining + lease::LEASE_MARGIN;
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        GateDoc {
            holder: holder.to_string(),
            // Rounded up: never shorter than the invocation.
            expires_at_epoch_s: secs.as_secs() + u64::from(secs.subsec_nanos() > 0),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for anything that is not a gate document (then the object is treated as
    /// an expired gate: whoever finds it takes it over).
    pub fn parse(text: &str) -> Option<GateDoc> {
        serde_json::from_str(text).ok()
    }
}

/// What a read of the gate found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No gate: create it.
    Absent,
    /// A gate whose holder's invocation is over (or unreadable): take it over with
    /// `If-Match` on this ETag.
    Expired { etag: String },
    /// A live gate: queue behind it.
    Live { holder: String },
}

/// The decision on one read of the gate (`(body, etag)` or none) at `now`.
pub fn decide(read: Option<(&str, &str)>, now: SystemTime) -> Seen {
    let Some((body, etag)) = read else {
        return Seen::Absent;
    };
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match GateDoc::parse(body) {
        Some(doc) if doc.expires_at_epoch_s > now_s => Seen::Live { holder: doc.holder },
        _ => Seen::Expired {
            etag: etag.to_string(),
        },
    }
}

/// A wake-up as its S3 object carries it (the owned form of [`WakeUp`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeUpDoc {
    pub bucket: String,
    pub partition_path: String,
    pub s3_url: String,
    pub etag: String,
    pub route_prefix: String,
}

impl WakeUpDoc {
    pub fn of(w: &WakeUp<'_>) -> WakeUpDoc {
        WakeUpDoc {
            bucket: w.bucket.to_string(),
            partition_path: w.partition_path.to_string(),
            s3_url: w.s3_url.to_string(),
            etag: w.etag.to_string(),
            route_prefix: w.route_prefix.to_string(),
        }
    }

    pub fn as_wakeup(&self) -> WakeUp<'_> {
        WakeUp {
            bucket: &self.bucket,
            partition_path: &self.partition_path,
            s3_url: &self.s3_url,
            etag: &self.etag,
            route_prefix: &self.route_prefix,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Option<WakeUpDoc> {
        serde_json::from_str(text).ok()
    }
}

/// The S3 keys of one table's gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateKeys {
    pub bucket: String,
    /// `<prefix>gates/<schema>.<table>/gate.json`
    pub gate: String,
    /// `<prefix>gates/<schema>.<table>/wakeups/`: one LIST prefix per table.
    pub wakeups: String,
}

impl GateKeys {
    /// Identifiers are letters, digits, `_` and `$` only ([`crate::sql::Ident`]), so
    /// `<schema>.<table>/` is one folder per table and no table's folder is another's.
    pub fn for_table(manifest: &S3Location, table: &TableName) -> GateKeys {
        let folder = format!("{}{GATES_FOLDER}{table}/", manifest.prefix);
        GateKeys {
            bucket: manifest.bucket.clone(),
            gate: format!("{folder}gate.json"),
            wakeups: format!("{folder}wakeups/"),
        }
    }

    /// The key of one event's wake-up: its partition's group, then the holder and the
    /// object (the same event written twice by one invocation is one object).
    pub fn wakeup_key(&self, holder: &str, w: &WakeUp<'_>) -> String {
        let object = hex16(&[w.s3_url, w.etag]);
        format!(
            "{}{}/{}.{object}.json",
            self.wakeups,
            group_of(w),
            safe(holder)
        )
    }

    /// The group folder of a listed wake-up key (`None`: not one of ours).
    pub fn group_of_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(&self.wakeups)?;
        let (group, name) = rest.split_once('/')?;
        (!group.is_empty() && !name.is_empty() && !name.contains('/')).then_some(group)
    }
}

/// The folder of a wake-up's partition: 32 hex digits of SHA-256 over bucket, route and
/// partition (128 bits: two partitions never share one in practice).
pub fn group_of(w: &WakeUp<'_>) -> String {
    hex16(&[w.bucket, w.route_prefix, w.partition_path])
}

fn hex16(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        // A separator no part holds (literals refuse control characters).
        h.update([0u8]);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A holder token as a key part: Lambda request ids and our `~` suffix pass unchanged;
/// anything else that could split a key becomes `_`.
fn safe(holder: &str) -> String {
    holder
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '~') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> GateKeys {
        GateKeys::for_table(
            &S3Location {
                bucket: "m".into(),
                prefix: "loader/".into(),
            },
            &TableName::parse("s.t").unwrap(),
        )
    }

    fn wake<'a>(partition: &'a str, url: &'a str) -> WakeUp<'a> {
        WakeUp {
            bucket: "lake",
            partition_path: partition,
            s3_url: url,
            etag: "e1",
            route_prefix: "t/",
        }
    }

    #[test]
    fn keys_are_one_folder_per_table_and_group_by_partition() {
        let k = keys();
        assert_eq!(k.gate, "loader/gates/s.t/gate.json");
        assert_eq!(k.wakeups, "loader/gates/s.t/wakeups/");
        let a = k.wakeup_key("req-1~0a", &wake("d=1/", "s3://lake/t/d=1/a"));
        let b = k.wakeup_key("req-2~0b", &wake("d=1/", "s3://lake/t/d=1/b"));
        let c = k.wakeup_key("req-1~0a", &wake("d=2/", "s3://lake/t/d=1/a"));
        assert!(a.starts_with(&k.wakeups), "{a}");
        assert_eq!(k.group_of_key(&a), k.group_of_key(&b), "one partition");
        assert_ne!(k.group_of_key(&a), k.group_of_key(&c), "another partition");
        assert_ne!(
            a,
            k.wakeup_key("req-1~0a", &wake("d=1/", "s3://lake/t/d=1/b"))
        );
        assert_eq!(
            a,
            k.wakeup_key("req-1~0a", &wake("d=1/", "s3://lake/t/d=1/a"))
        );
        assert_eq!(k.group_of_key(&k.gate), None);
        assert_eq!(k.group_of_key("loader/gates/s.t/wakeups/x"), None);
        // Another table's folder is not a prefix of this one's.
        let other = GateKeys::for_table(
            &S3Location {
                bucket: "m".into(),
                prefix: "loader/".into(),
            },
            &TableName::parse("s.t2").unwrap(),
        );
        assert!(!other.wakeups.starts_with(&k.wakeups));
        assert!(!k.wakeups.starts_with(&other.wakeups));
    }

    #[test]
    fn a_holder_token_never_splits_a_key() {
        let k = keys();
        let key = k.wakeup_key("a/b c", &wake("d=1/", "u"));
        assert!(key.contains("/a_b_c."), "{key}");
        assert!(k.group_of_key(&key).is_some());
    }

    #[test]
    fn the_gate_expires_a_margin_after_its_holders_deadline() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let doc = GateDoc::new("h", now, Duration::from_millis(20_500));
        assert_eq!(
            doc.expires_at_epoch_s,
            1_000 + 21 + lease::LEASE_MARGIN.as_secs()
        );
        let body = doc.to_json();
        assert_eq!(GateDoc::parse(&body), Some(doc.clone()));
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(
            decide(Some((&body, "e")), at(1_035)),
            Seen::Live { holder: "h".into() }
        );
        assert_eq!(
            decide(Some((&body, "e")), at(1_036)),
            Seen::Expired { etag: "e".into() }
        );
        assert_eq!(decide(None, at(0)), Seen::Absent);
        assert_eq!(
            decide(Some(("not json", "x")), at(0)),
            Seen::Expired { etag: "x".into() },
            "an unreadable gate is taken over, never waited for"
        );
    }

    #[test]
    fn wake_up_documents_round_trip() {
        let w = wake("d=1/", "s3://lake/t/d=1/a");
        let doc = WakeUpDoc::of(&w);
        let back = WakeUpDoc::parse(&doc.to_json()).unwrap();
        assert_eq!(back, doc);
        assert_eq!(back.as_wakeup().partition_path, "d=1/");
        assert_eq!(WakeUpDoc::parse("{}"), None);
    }
}
