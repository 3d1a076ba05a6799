//! A small runner for scenario tests that share one booted cluster: runs
//! named steps in order, reports each, and ends with the line
//! `N passed, N failed` that CI reads.

use crate::host::say;
use anyhow::Result;
use std::time::Instant;

pub struct Runner {
    filters: Vec<String>,
    passed: usize,
    failed: Vec<String>,
    skipped: usize,
}

impl Runner {
    /// A runner; non-flag arguments select the steps whose names contain
    /// any of them (none: every step).
    pub fn from_args() -> Runner {
        let filters = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        Runner {
            filters,
            passed: 0,
            failed: Vec::new(),
            skipped: 0,
        }
    }

    pub fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    /// Runs one step, recording its result.
    pub fn step(&mut self, name: &str, f: impl FnOnce() -> Result<()>) {
        if !self.wants(name) {
            self.skipped += 1;
            return;
        }
        say(format!("--- {name}"));
        let t = Instant::now();
        match f() {
            Ok(()) => {
                self.passed += 1;
                println!("test {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64());
            }
            Err(e) => {
                println!(
                    "test {name} ... FAILED ({:.1} s)\n{e:#}",
                    t.elapsed().as_secs_f64()
                );
                self.failed.push(name.to_string());
            }
        }
    }

    /// Records a step that could not run because set-up failed.
    pub fn fail_all(&mut self, names: &[&str], why: &anyhow::Error) {
        let wanted: Vec<&str> = names.iter().copied().filter(|n| self.wants(n)).collect();
        for n in wanted {
            println!("test {n} ... FAILED (set-up)\n{why:#}");
            self.failed.push(n.to_string());
        }
    }

    /// Prints the summary and returns the exit code.
    pub fn finish(self) -> i32 {
        if !self.failed.is_empty() {
            println!("failed: {}", self.failed.join(", "));
        }
        if self.skipped > 0 {
            println!(
                "{} passed, {} failed, {} skipped",
                self.passed,
                self.failed.len(),
                self.skipped
            );
        } else {
            println!("{} passed, {} failed", self.passed, self.failed.len());
        }
        if self.failed.is_empty() && self.passed > 0 {
            0
        } else {
            1
        }
    }
}
