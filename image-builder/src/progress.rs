//! Progress output for people: numbered build steps with their duration, and
//! a byte counter for long copies (flash, verify) that redraws one line on a
//! terminal and prints a line every 10 % otherwise (CI logs).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Numbered steps: `[3/9] Assembling the disk image ... done in 12.3 s`.
pub struct Steps {
    total: usize,
    current: usize,
    started: Instant,
    step_started: Instant,
    quiet: bool,
}

impl Steps {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            current: 0,
            started: Instant::now(),
            step_started: Instant::now(),
            quiet: false,
        }
    }

    /// No output (tests).
    pub fn quiet(total: usize) -> Self {
        Self {
            quiet: true,
            ..Self::new(total)
        }
    }

    /// Starts the next step.
    pub fn step(&mut self, what: &str) {
        self.finish_step();
        self.current += 1;
        self.step_started = Instant::now();
        if !self.quiet {
            eprintln!("[{}/{}] {what}", self.current, self.total);
        }
    }

    /// A detail line under the current step.
    pub fn note(&self, what: &str) {
        if !self.quiet {
            eprintln!("      {what}");
        }
    }

    fn finish_step(&mut self) {
        if self.current > 0 && !self.quiet {
            eprintln!(
                "      done in {}",
                human_duration(self.step_started.elapsed())
            );
        }
    }

    /// Ends the last step; returns the whole time.
    pub fn finish(mut self) -> Duration {
        self.finish_step();
        self.current = 0;
        self.started.elapsed()
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f >= K * K * K {
        format!("{:.1} GiB", f / (K * K * K))
    } else if f >= K * K {
        format!("{:.1} MiB", f / (K * K))
    } else if f >= K {
        format!("{:.1} KiB", f / K)
    } else {
        format!("{n} B")
    }
}

/// `2 min 05 s`, `12.3 s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1} s")
    }
}

/// A byte counter for one long copy.
pub struct Bar {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last_draw: Instant,
    last_decile: u64,
    tty: bool,
    quiet: bool,
}

impl Bar {
    pub fn new(label: &str, total: u64) -> Self {
        Self {
            label: label.to_owned(),
            total,
            done: 0,
            started: Instant::now(),
            last_draw: Instant::now() - Duration::from_secs(1),
            last_decile: 0,
            tty: std::io::stderr().is_terminal(),
            quiet: false,
        }
    }

    pub fn quiet(label: &str, total: u64) -> Self {
        Self {
            quiet: true,
            ..Self::new(label, total)
        }
    }

    /// The line shown for the current state.
    pub fn line(&self) -> String {
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let eta = if rate > 0.0 && self.total > self.done {
            format!(
                ", {} left",
                human_duration(Duration::from_secs_f64(
                    (self.total - self.done) as f64 / rate
                ))
            )
        } else {
            String::new()
        };
        let width = 30usize;
        let filled = (pct as usize * width / 100).min(width);
        format!(
            "{} [{}{}] {:>3}% {} / {} at {}/s{}",
            self.label,
            "#".repeat(filled),
            "-".repeat(width - filled),
            pct,
            human_bytes(self.done),
            human_bytes(self.total),
            human_bytes(rate as u64),
            eta
        )
    }

    /// Adds `n` bytes done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if self.quiet {
            return;
        }
        if self.tty {
            if self.last_draw.elapsed() >= Duration::from_millis(200) {
                self.last_draw = Instant::now();
                let mut e = std::io::stderr();
                let _ = write!(e, "\r{}\x1b[K", self.line());
                let _ = e.flush();
            }
        } else {
            let decile = (self.done * 10).checked_div(self.total).unwrap_or(10);
            if decile > self.last_decile {
                self.last_decile = decile;
                eprintln!("{}", self.line());
            }
        }
    }

    /// Final line.
    pub fn finish(self) -> Duration {
        if !self.quiet && self.tty {
            eprintln!("\r{}\x1b[K", self.line());
        }
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_durations() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(human_duration(Duration::from_secs(125)), "2 min 05 s");
    }

    #[test]
    fn bar_line_shows_percent() {
        let mut b = Bar::quiet("Writing", 1000);
        b.inc(250);
        let l = b.line();
        assert!(l.contains(" 25%"), "{l}");
        assert!(l.contains("[#######"), "{l}");
    }
}
