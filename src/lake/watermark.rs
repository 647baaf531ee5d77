//! The sweep's watermark: what S3 showed the last sweep that finished cleanly, so that a
//! sweep seeing the same can skip Redshift entirely (issue 21 item 6: Serverless bills
//! every wake for at least 60 s; an idle deployment must cost nothing there).
//!
//! The watermark is one small JSON object in S3, `<MANIFEST_PREFIX>sweep-watermark.json`
//! (never in Redshift: reading it there would wake the warehouse). A sweep compares a
//! digest of its listing with it, never a time: a multipart upload's LastModified is
//! the time the upload was initiated, so a large file completed after the last sweep
//! can carry a time older than that sweep
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html>; the
//! stricter reading: no time S3 reports is trusted to order writes). The digest covers
//! (bucket, key, ETag, size) of every object in the look-back window of every route,
//! so a new, rewritten (new ETag) or deleted object changes it.
//!
//! Work that exists only in Redshift (a wake-up a deadline-forced release left, a load
//! that failed, a table found busy) is not in the listing: every path that leaves such
//! work writes a *dirty* watermark (unique content, so its ETag differs from any
//! other), and the sweep writes its clean watermark only if the object is still the one
//! it read at its start (S3 conditional writes: `If-Match`, or `If-None-Match: *` when
//! there was none), so a dirty mark written during a sweep is never overwritten. A mark
//! that cannot be written is covered by the expiry: a clean watermark is trusted for
//! `SWEEP_WATERMARK_MAX_AGE_HOURS` (default 6) only, so stranded work waits at most that
//! long, at 4 billed wakes a day instead of 96.
//!
//! Pure: the digest, the document and the decision. The I/O is `run::watermark`.
//!
//! Invariant: a sweep is skipped only when a clean, unexpired watermark carries exactly
//! the digest of the listing this sweep made, for the same routes and window.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::protocol::plan::ListedObject;

/// The object's name under the manifest prefix.
pub const OBJECT_NAME: &str = "sweep-watermark.json";

/// The default of `SWEEP_WATERMARK_MAX_AGE_HOURS`: 4 queried sweeps a day when idle
/// (against 96 with a 15-minute schedule), and a bound on how long work left behind by a
/// lost dirty mark waits.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// The watermark document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// `"clean"` (written by a sweep that left nothing behind) or `"dirty"`.
    pub state: String,
    /// The listing digest of the clean sweep (empty when dirty).
    #[serde(default)]
    pub digest: String,
    /// When it was written (seconds since the epoch).
    pub written_at: u64,
    /// A clean watermark is not trusted after this (seconds since the epoch).
    #[serde(default)]
    pub expires_at: u64,
    /// Why it is dirty, and who said so (the invocation), for an operator reading it.
    #[serde(default)]
    pub reason: String,
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl Watermark {
    pub fn clean(digest: &str, now: SystemTime, max_age: Duration) -> Watermark {
        Watermark {
            state: "clean".into(),
            digest: digest.to_string(),
            written_at: epoch(now),
            expires_at: epoch(now + max_age),
            reason: String::new(),
        }
    }

    /// A dirty mark. `who` (the invocation's request id) and the time make its bytes,
    /// hence its ETag, differ from every earlier mark: a sweep's conditional write
    /// must see that the object changed since it was read.
    pub fn dirty(reason: &str, who: &str, now: SystemTime) -> Watermark {
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        Watermark {
            state: "dirty".into(),
            digest: String::new(),
            written_at: epoch(now),
            expires_at: 0,
            reason: format!("{reason} ({who}, {nanos})"),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for anything that is not a watermark (then the sweep queries).
    pub fn parse(text: &str) -> Option<Watermark> {
        serde_json::from_str(text).ok()
    }
}

/// What one route's window showed: the route's identity and its objects.
#[derive(Debug, Clone)]
pub struct RouteListing<'a> {
    /// Bucket, prefix and table of the route: a changed configuration changes the digest.
    pub route: &'a str,
    pub objects: &'a [ListedObject],
}

/// The digest of a sweep's listing: SHA-256 over the window's days, then per route (in
/// configuration order) its identity and its objects sorted by key, each as
/// (key, ETag, size). Fields are length-prefixed so no two listings collide by
/// concatenation.
pub fn digest(window: &str, routes: &[RouteListing<'_>]) -> String {
    let mut h = Sha256::new();
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    field(window);
    for r in routes {
        field(r.route);
        let mut objects: Vec<&ListedObject> = r.objects.iter().collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        field(&objects.len().to_string());
        for o in objects {
            field(&o.key);
            field(&o.etag);
            field(&o.size.to_string());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The gate's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Nothing new in S3 and nothing left in Redshift: no Data API call.
    Idle,
    /// Query Redshift, and why.
    Query(String),
}

/// Whether a sweep with listing digest `digest` may skip Redshift, given the watermark
/// read (`None`: none, or unreadable).
pub fn decide(read: Option<&Watermark>, digest: &str, now: SystemTime) -> Gate {
    let Some(w) = read else {
        return Gate::Query("no watermark".into());
    };
    if w.state != "clean" {
        return Gate::Query(format!("watermark dirty: {}", w.reason));
    }
    if epoch(now) >= w.expires_at {
        return Gate::Query("watermark expired (SWEEP_WATERMARK_MAX_AGE_HOURS)".into());
    }
    if w.digest != digest {
        return Gate::Query("S3 shows something new since the last sweep".into());
    }
    Gate::Idle
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(key: &str, etag: &str, size: i64) -> ListedObject {
        ListedObject {
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified: None,
        }
    }

    fn d(objects: &[ListedObject]) -> String {
        digest(
            "2026-12-07/3",
            &[RouteListing {
                route: "lake orders/ s.orders",
                objects,
            }],
        )
    }

    #[test]
    fn any_new_rewritten_or_deleted_object_changes_the_digest_and_order_does_not() {
        let base = [o("a/1", "e1", 10), o("a/2", "e2", 20)];
        let same = d(&base);
        assert_eq!(same, d(&[o("a/2", "e2", 20), o("a/1", "e1", 10)]));
        assert_ne!(same, d(&[o("a/1", "e1", 10)]), "deleted");
        assert_ne!(
            same,
            d(&[o("a/1", "e1", 10), o("a/2", "e2", 20), o("a/3", "e3", 1)]),
            "new"
        );
        assert_ne!(
            same,
            d(&[o("a/1", "e1", 10), o("a/2", "e9", 20)]),
            "new ETag"
        );
        assert_ne!(same, d(&[o("a/1", "e1", 10), o("a/2", "e2", 21)]), "size");
        // Concatenation cannot collide: ("a/1","e") vs ("a/1e","").
        assert_ne!(d(&[o("a/1", "e", 1)]), d(&[o("a/1e", "", 1)]));
    }

    #[test]
    fn only_a_clean_unexpired_watermark_of_the_same_listing_skips() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clean = Watermark::clean("x", now, DEFAULT_MAX_AGE);
        assert_eq!(decide(Some(&clean), "x", now), Gate::Idle);
        assert!(matches!(decide(Some(&clean), "y", now), Gate::Query(_)));
        assert!(matches!(decide(None, "x", now), Gate::Query(_)));
        let later = now + DEFAULT_MAX_AGE;
        assert!(
            matches!(decide(Some(&clean), "x", later), Gate::Query(r) if r.contains("expired"))
        );
        let dirty = Watermark::dirty("wake-ups left", "req-1", now);
        assert!(matches!(decide(Some(&dirty), "", now), Gate::Query(r) if r.contains("dirty")));
        // A zero max age never skips.
        let never = Watermark::clean("x", now, Duration::ZERO);
        assert!(matches!(decide(Some(&never), "x", now), Gate::Query(_)));
    }

    #[test]
    fn two_dirty_marks_never_have_the_same_bytes() {
        let now = UNIX_EPOCH + Duration::from_secs(5);
        let a = Watermark::dirty("r", "req-1", now);
        let b = Watermark::dirty("r", "req-1", now + Duration::from_nanos(1));
        assert_ne!(a.to_json(), b.to_json());
        assert_eq!(Watermark::parse(&a.to_json()), Some(a));
        assert_eq!(Watermark::parse("not json"), None);
    }
}
