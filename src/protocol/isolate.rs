//! One bad file does not hold its partition hostage: when a load of some files fails
//! because Redshift refuses the data of a file, find the bad file(s), load the rest, and
//! hand the bad ones back to be quarantined (append mode only; replace mode stays all
//! or nothing).
//!
//! Columnar COPY has no MAXERROR: "If COPY encounters an error while loading, the
//! command fails" (<https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-columnar.html>).
//! Redshift's Spectrum errors name the file in their context as an HTTPS URL (`File
//! 'https://s3.us-east-1.amazonaws.com/<bucket>/<key>' has an incompatible Parquet
//! schema …`, code 15007), and may cut the context short; that every error about a file
//! names it is not documented, so the stricter reading is taken: a file the error names
//! ([`named_file`]) is taken out at once, otherwise the files are split in halves.
//!
//! Each probe is a real load of its half (manifest, COPY, ledger rows, the fence last),
//! committed when it passes, rather than a COPY in a transaction rolled back on purpose:
//! a passing half is work done, not work to redo, so finding one bad file among n
//! costs about 2·log2(n) load batches and loads every good file on the way; and a probe
//! is nothing but a load batch, inside the lease and fence protocol unchanged.
//!
//! Invariant: only a Permanent failure about the data ([`failure::about_the_data`], or a
//! footer the loader could not read) is ever isolated; any other failure ends the
//! search with that error, the halves committed so far stay committed (their ledger rows
//! say so), and nothing is quarantined for it.
//!
//! Invariant: when every file of the load is bad and there is more than one, nothing is
//! quarantined: that is the table or the route (a column type every file disagrees
//! with), not the files; the load fails with the first error, as before.

use std::future::Future;

use crate::error::LoaderError;
use crate::lake::copy_options::FileFormat;
use crate::protocol::failure;
use crate::protocol::plan::{s3_url, ListedObject, LoadedFile};

/// Whether bad files of this format are isolated: columnar (Parquet) only. Columnar
/// COPY has no MAXERROR, so one file fails the statement whatever the route says; text
/// formats (CSV, JSON) have MAXERROR for bad rows, and their refusals are mostly the
/// route's settings (DATEFORMAT, quoting, a delimiter) that hold for every file:
/// quarantining files one by one would hide that; the load fails, named, as before.
pub fn isolates(format: FileFormat) -> bool {
    matches!(format, FileFormat::Parquet)
}

/// Loads a group of files the way the holder loads a partition (one or more committing
/// load batches); the statement id of the last.
pub trait Loads {
    fn load(
        &self,
        files: &[ListedObject],
    ) -> impl Future<Output = Result<String, LoaderError>> + Send;
}

/// What the search found.
#[derive(Debug, Default)]
pub struct Isolated {
    /// Files loaded (committed), in the order their probes ran.
    pub loaded: Vec<ListedObject>,
    /// Bad files with the error that refused each.
    pub bad: Vec<(ListedObject, String)>,
    /// The last committed load batch.
    pub statement_id: String,
    /// Load batches tried (passed or failed), the first failure not counted.
    pub probes: usize,
}

/// What a failed load says about its files.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The data of `files[index]`, named by the error.
    Named { index: usize, error: String },
    /// The data of some file, not named.
    Unnamed { error: String },
    /// Not about a file (transient, the table, the grants, the lease): not isolated.
    NotAFile,
}

/// Reads a failed load of `files` (all in `bucket`).
pub fn verdict(e: &LoaderError, bucket: &str, files: &[ListedObject]) -> Verdict {
    let error = e.to_string();
    match e {
        LoaderError::UnreadableFile { url, .. } => {
            match files.iter().position(|f| s3_url(bucket, &f.key) == *url) {
                Some(index) => Verdict::Named { index, error },
                None => Verdict::NotAFile,
            }
        }
        LoaderError::LoadRejected { message, .. } if failure::about_the_data(message) => {
            match named_file(message, bucket, files) {
                Some(index) => Verdict::Named { index, error },
                None => Verdict::Unnamed { error },
            }
        }
        _ => Verdict::NotAFile,
    }
}

/// The one file of `files` that `message` names: as `s3://bucket/key`, as a path-style
/// HTTPS URL (`…amazonaws.com/bucket/key`, Redshift's Spectrum context) or a virtual-
/// hosted one (`bucket.s3….amazonaws.com/key`), the key raw or percent-encoded; the
/// name must end where the URL ends (a quote, a blank, a comma or the end), so that
/// `part-1` is not read in `part-10`. `None` when no file, or more than one, is named
/// (a context cut short names none).
pub fn named_file(message: &str, bucket: &str, files: &[ListedObject]) -> Option<usize> {
    let mut found = None;
    for (i, f) in files.iter().enumerate() {
        let encoded = encode_key(&f.key);
        let needles = [
            format!("s3://{bucket}/{}", f.key),
            format!(".amazonaws.com/{bucket}/{}", f.key),
            format!(".amazonaws.com/{bucket}/{encoded}"),
        ];
        let hosted = message.contains(&format!("//{bucket}.s3"))
            && (ends_in(message, &format!(".amazonaws.com/{}", f.key))
                || ends_in(message, &format!(".amazonaws.com/{encoded}")));
        if hosted || needles.iter().any(|n| ends_in(message, n)) {
            if found.is_some() {
                return None;
            }
            found = Some(i);
        }
    }
    found
}

/// Whether `needle` occurs in `message` followed by the end of a URL.
fn ends_in(message: &str, needle: &str) -> bool {
    message.match_indices(needle).any(|(at, _)| {
        message[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| matches!(c, '\'' | '"' | ',' | ')' | ';') || c.is_whitespace())
    })
}

/// A key as an HTTPS URL carries it: unreserved characters and `/` kept, every other
/// byte `%XX`.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `listed` without the objects quarantined as they are now (same URL and ETag); a
/// quarantined URL with another ETag was rewritten and is a new file.
pub fn without_quarantined(
    bucket: &str,
    mut listed: Vec<ListedObject>,
    quarantined: &[LoadedFile],
) -> Vec<ListedObject> {
    if !quarantined.is_empty() {
        listed.retain(|o| {
            let url = s3_url(bucket, &o.key);
            !quarantined
                .iter()
                .any(|q| q.s3_url == url && q.etag == o.etag)
        });
    }
    listed
}

/// Searches `files`, whose load failed with `first` (a [`Verdict`] other than
/// `NotAFile`), for the bad ones, loading the others through `loads`. A failure that
/// is not about a file ends the search with that failure (what was committed stays).
pub async fn isolate<L: Loads>(
    loads: &L,
    bucket: &str,
    files: Vec<ListedObject>,
    first: LoaderError,
) -> Result<Isolated, LoaderError> {
    let total = files.len();
    let mut first_error = None;
    let mut out = Isolated::default();
    // Groups still to load, the next on top; `known` is a group's failure already seen.
    let mut stack: Vec<(Vec<ListedObject>, Option<LoaderError>)> = vec![(files, Some(first))];
    while let Some((mut group, known)) = stack.pop() {
        if group.is_empty() {
            continue;
        }
        let result = match known {
            Some(e) => Err(e),
            None => {
                out.probes += 1;
                loads.load(&group).await
            }
        };
        let e = match result {
            Ok(id) => {
                out.loaded.extend(group);
                out.statement_id = id;
                continue;
            }
            Err(e) => e,
        };
        match verdict(&e, bucket, &group) {
            Verdict::NotAFile => return Err(e),
            Verdict::Named { index, error } => {
                let bad = group.remove(index);
                out.bad.push((bad, error));
                stack.push((group, None));
            }
            Verdict::Unnamed { error } if group.len() == 1 => {
                out.bad
                    .extend(group.into_iter().map(|f| (f, error.clone())));
            }
            Verdict::Unnamed { .. } => {
                let right = group.split_off(group.len() / 2);
                stack.push((right, None));
                stack.push((group, None));
            }
        }
        first_error.get_or_insert(e);
    }
    if out.bad.len() > 1 && out.bad.len() == total {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn obj(key: &str) -> ListedObject {
        ListedObject {
            key: key.into(),
            size: 1,
            etag: format!("e-{key}"),
            last_modified: None,
        }
    }

    /// A scripted warehouse: a load fails when it holds a bad file (naming it or not),
    /// or with a transient error when told to; every load is recorded.
    struct Script {
        bad: Vec<&'static str>,
        name_files: bool,
        throttle_after: Option<usize>,
        loads: Mutex<Vec<Vec<String>>>,
    }

    impl Script {
        fn new(bad: &[&'static str], name_files: bool) -> Script {
            Script {
                bad: bad.to_vec(),
                name_files,
                throttle_after: None,
                loads: Mutex::new(Vec::new()),
            }
        }
    }

    fn rejected(message: String) -> LoaderError {
        LoaderError::LoadRejected {
            table: "s.t".into(),
            statement_id: "x".into(),
            message,
        }
    }

    impl Loads for Script {
        async fn load(&self, files: &[ListedObject]) -> Result<String, LoaderError> {
            let keys: Vec<String> = files.iter().map(|f| f.key.clone()).collect();
            let n = {
                let mut loads = self.loads.lock().unwrap();
                loads.push(keys.clone());
                loads.len()
            };
            if self.throttle_after.is_some_and(|t| n > t) {
                return Err(rejected(
                    "ERROR: Spectrum Scan Error DETAIL: S3ServiceException:Slow Down,Status \
                     503,Error SlowDown"
                        .into(),
                ));
            }
            match keys.iter().find(|k| self.bad.contains(&k.as_str())) {
                Some(k) if self.name_files => Err(rejected(format!(
                    "ERROR: Spectrum Scan Error DETAIL: context: File \
                     'https://s3.us-east-1.amazonaws.com/b/{k}' is not a valid Parquet file"
                ))),
                Some(_) => Err(rejected(
                    "ERROR: Spectrum Scan Error DETAIL: invalid Parquet file".into(),
                )),
                None => Ok(format!("stmt-{n}")),
            }
        }
    }

    async fn run(script: &Script, keys: &[&str]) -> Result<Isolated, LoaderError> {
        let files: Vec<ListedObject> = keys.iter().map(|k| obj(k)).collect();
        let first = match script.load(&files).await {
            Err(e) => e,
            Ok(_) => panic!("the first load must fail"),
        };
        isolate(script, "b", files, first).await
    }

    fn keys(files: &[ListedObject]) -> Vec<&str> {
        files.iter().map(|f| f.key.as_str()).collect()
    }

    #[tokio::test]
    async fn a_named_file_is_taken_out_and_the_rest_loads_in_one_probe() {
        let script = Script::new(&["p/c"], true);
        let found = run(&script, &["p/a", "p/b", "p/c", "p/d"]).await.unwrap();
        assert_eq!(keys(&found.loaded), ["p/a", "p/b", "p/d"]);
        assert_eq!(found.bad.len(), 1);
        assert_eq!(found.bad[0].0.key, "p/c");
        assert!(found.bad[0].1.contains("not a valid Parquet file"));
        assert_eq!(found.probes, 1);
    }

    #[tokio::test]
    async fn an_unnamed_bad_file_is_found_by_halving_and_every_good_file_loads_once() {
        let keys8: Vec<String> = (0..8).map(|i| format!("p/f{i}")).collect();
        let refs: Vec<&str> = keys8.iter().map(String::as_str).collect();
        let script = Script::new(&["p/f5"], false);
        let found = run(&script, &refs).await.unwrap();
        assert_eq!(
            keys(&found.bad.iter().map(|b| b.0.clone()).collect::<Vec<_>>()),
            ["p/f5"]
        );
        let mut loaded = keys(&found.loaded);
        loaded.sort();
        assert_eq!(
            loaded,
            ["p/f0", "p/f1", "p/f2", "p/f3", "p/f4", "p/f6", "p/f7"]
        );
        // 8 → [0..4) passes, [4..8) fails → [4,5] fails → [4] passes, [5] fails; [6,7] passes.
        assert_eq!(found.probes, 6);
        assert_eq!(found.statement_id, "stmt-7");
    }

    #[tokio::test]
    async fn two_bad_files_among_good_ones_are_both_found() {
        let script = Script::new(&["p/b", "p/e"], false);
        let found = run(&script, &["p/a", "p/b", "p/c", "p/d", "p/e"])
            .await
            .unwrap();
        let mut bad: Vec<&str> = found.bad.iter().map(|b| b.0.key.as_str()).collect();
        bad.sort();
        assert_eq!(bad, ["p/b", "p/e"]);
        assert_eq!(found.loaded.len(), 3);
    }

    #[tokio::test]
    async fn a_lone_bad_file_is_bad_but_all_bad_is_the_table() {
        let script = Script::new(&["p/a"], false);
        let found = run(&script, &["p/a"]).await.unwrap();
        assert_eq!(found.bad.len(), 1);
        assert_eq!(found.probes, 0);
        let script = Script::new(&["p/a", "p/b", "p/c"], false);
        let e = run(&script, &["p/a", "p/b", "p/c"]).await.unwrap_err();
        assert_eq!(e.error_type(), "Permanent.LoadRejected");
    }

    #[tokio::test]
    async fn a_transient_failure_ends_the_search_and_quarantines_nothing() {
        let mut script = Script::new(&["p/d"], false);
        script.throttle_after = Some(2);
        let e = run(&script, &["p/a", "p/b", "p/c", "p/d"])
            .await
            .unwrap_err();
        assert_eq!(verdict(&e, "b", &[]), Verdict::NotAFile);
        assert!(e.to_string().contains("SlowDown"));
        // The first half [a, b] committed before the throttled probe.
        assert_eq!(script.loads.lock().unwrap()[1], ["p/a", "p/b"]);
    }

    #[test]
    fn a_quarantined_file_stays_out_until_its_etag_changes() {
        let q = [LoadedFile {
            s3_url: "s3://b/p/bad".into(),
            etag: "e-p/bad".into(),
        }];
        let kept = without_quarantined("b", vec![obj("p/a"), obj("p/bad")], &q);
        assert_eq!(keys(&kept), ["p/a"]);
        let mut rewritten = obj("p/bad");
        rewritten.etag = "new".into();
        let kept = without_quarantined("b", vec![rewritten], &q);
        assert_eq!(keys(&kept), ["p/bad"]);
    }

    #[test]
    fn names_are_read_in_every_url_form_and_only_whole() {
        let files = [obj("o/d=1/part-1.parquet"), obj("o/d=1/part-10.parquet")];
        for (m, want) in [
            ("File 's3://b/o/d=1/part-1.parquet' is bad", Some(0)),
            (
                "File 'https://s3.us-east-1.amazonaws.com/b/o/d=1/part-10.parquet' x",
                Some(1),
            ),
            (
                "File 'https://s3.us-east-1.amazonaws.com/b/o/d%3D1/part-1.parquet' x",
                Some(0),
            ),
            (
                "File 'https://b.s3.us-east-1.amazonaws.com/o/d=1/part-10.parquet'",
                Some(1),
            ),
            ("File name: s3://b/o/d=1/part-1.parquet", Some(0)),
            // Cut short: names neither.
            (
                "File 'https://s3.us-east-1.amazonaws.com/b/o/d=1/part-1",
                None,
            ),
            ("File 's3://other/o/d=1/part-1.parquet'", None),
            ("invalid Parquet file", None),
        ] {
            assert_eq!(named_file(m, "b", &files), want, "{m}");
        }
    }

    #[test]
    fn only_columnar_routes_isolate() {
        assert!(isolates(FileFormat::Parquet));
        assert!(!isolates(FileFormat::Csv { header: true }));
        assert!(!isolates(FileFormat::Json));
    }

    #[test]
    fn only_data_errors_and_unreadable_footers_are_isolated() {
        let files = [obj("k")];
        let unreadable = LoaderError::UnreadableFile {
            table: "s.t".into(),
            url: "s3://b/k".into(),
            reason: "bad magic".into(),
        };
        assert!(matches!(
            verdict(&unreadable, "b", &files),
            Verdict::Named { index: 0, .. }
        ));
        let interrupted = LoaderError::LoadInterrupted {
            table: "s.t".into(),
            statement_id: "x".into(),
            cause: "S3 throttled",
            message: "Status 503, File 's3://b/k'".into(),
        };
        assert_eq!(verdict(&interrupted, "b", &files), Verdict::NotAFile);
        let grants = rejected("ERROR: permission denied for relation t".into());
        assert_eq!(verdict(&grants, "b", &files), Verdict::NotAFile);
    }
}
