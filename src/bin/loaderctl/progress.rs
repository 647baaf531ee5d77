//! Progress of long loaderctl work (backfill, sweep, redrive) on stderr: a bar on a
//! terminal (done of total, the command's figures, elapsed, ETA), else one plain line
//! per finished item, for CI, a pipe or a log file. Stdout keeps the JSON lines.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of one piece of work counted in `unit`s (partitions, messages).
pub struct Progress {
    /// What runs: `backfill`, `sweep sales.orders`, `redrive`; starts each plain line.
    name: String,
    unit: &'static str,
    /// Items in all, when known before the work starts.
    total: Option<u64>,
    done: u64,
    started: Instant,
    /// Only on a terminal.
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(
        name: impl Into<String>,
        unit: &'static str,
        total: Option<u64>,
        terminal: bool,
    ) -> Progress {
        let name = name.into();
        let bar = terminal.then(|| {
            let (bar, template) = match total {
                Some(total) => (
                    ProgressBar::new(total),
                    format!(
                        "{{spinner}} {{prefix}} {{bar:30}} {{pos}}/{{len}} {unit} {{msg}} \
                         [{{elapsed}}, ETA {{eta}}]"
                    ),
                ),
                None => (
                    ProgressBar::new_spinner(),
                    format!("{{spinner}} {{prefix}} {{pos}} {unit} {{msg}} [{{elapsed}}]"),
                ),
            };
            let style = ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(name.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            name,
            unit,
            total,
            done: 0,
            started: Instant::now(),
            bar,
        }
    }

    /// Time since the work started (for the caller's rates).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// An item starts: the bar names it (nothing off a terminal).
    pub fn start(&self, figures: &str, label: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{figures} | {label}"));
        }
    }

    /// An item is done. `work` is (done, total) in whatever measures the work best
    /// (bytes, items) for the ETA; `figures` the command's own counts and rate.
    pub fn step(&mut self, figures: &str, work: (u64, u64), label: &str) {
        self.done += 1;
        // An estimated total (a queue's approximate depth) never reads "3/2".
        self.total = self.total.map(|t| t.max(self.done));
        match &self.bar {
            Some(bar) => {
                if let Some(total) = self.total {
                    bar.set_length(total);
                }
                bar.set_position(self.done);
                bar.set_message(figures.to_string());
            }
            None => eprintln!(
                "{}",
                line(
                    &self.name,
                    (self.done, self.total),
                    self.unit,
                    figures,
                    self.total.map(|_| eta(work, self.elapsed())),
                    label
                )
            ),
        }
    }

    /// Runs `f` (which prints to stdout) with the bar lifted off the terminal.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    pub fn finish(self, figures: &str) {
        if let Some(bar) = self.bar {
            bar.finish_with_message(figures.to_string());
        }
    }
}

/// Seconds left at the rate so far: `work` is (done, total); 0 before anything is done.
pub fn eta((done, total): (u64, u64), elapsed: Duration) -> u64 {
    if done == 0 {
        return 0;
    }
    let secs = elapsed.as_secs_f64().max(0.001);
    ((total - done.min(total)) as f64 * secs / done as f64).round() as u64
}

/// Per second, for rates.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(0.001)
}

/// The plain line after each item off a terminal:
/// `backfill: 1/4 partitions, files 2/8, 1.0 KB/4.0 KB, 512 B/s, ETA 6s: s.t d=1/: loaded`,
/// or without a total `redrive: 3 messages, …: label`.
pub fn line(
    name: &str,
    (done, total): (u64, Option<u64>),
    unit: &str,
    figures: &str,
    eta: Option<u64>,
    label: &str,
) -> String {
    let count = match total {
        Some(total) => format!("{done}/{total} {unit}"),
        None => format!("{done} {unit}"),
    };
    let eta = eta.map(|s| format!(", ETA {s}s")).unwrap_or_default();
    format!("{name}: {count}, {figures}{eta}: {label}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_says_how_far_and_how_long() {
        assert_eq!(
            line(
                "sweep s.t",
                (2, Some(5)),
                "partitions",
                "3 files loaded",
                Some(9),
                "d=1/: loaded"
            ),
            "sweep s.t: 2/5 partitions, 3 files loaded, ETA 9s: d=1/: loaded"
        );
        assert_eq!(
            line(
                "redrive",
                (3, None),
                "messages",
                "3 succeeded",
                None,
                "m-1: loaded"
            ),
            "redrive: 3 messages, 3 succeeded: m-1: loaded"
        );
        assert_eq!(eta((1, 4), Duration::from_secs(2)), 6);
        assert_eq!(eta((0, 4), Duration::from_secs(2)), 0);
        assert_eq!(eta((5, 4), Duration::from_secs(2)), 0, "past an estimate");
        assert_eq!(per_second(10, Duration::from_secs(4)), 2.5);
    }

    #[test]
    fn an_estimated_total_grows_with_the_work_done() {
        let mut p = Progress::new("redrive", "messages", Some(1), false);
        p.step("x", (1, 1), "a");
        p.step("x", (2, 1), "b");
        assert_eq!(p.total, Some(2));
        assert_eq!(p.done, 2);
    }
}
