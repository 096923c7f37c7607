//! The report of a run of seeds: printed as text or JSON, read back from JSON and
//! merged with the reports of other shards of the same sweep.

use std::io::Read;
use std::time::Duration;

use effectful_chat::sim::{Checks, Invariant};
use effectful_test::sim::FaultCounts;
use serde::{Deserialize, Serialize};

/// The most bytes a report file may hold: one is about 2 KiB, so anything this big is
/// not one, and is refused before it is read.
pub const MAX_REPORT_BYTES: u64 = 64 * 1024;

/// What "acknowledged" counts, in the words the report prints.
pub const ACKNOWLEDGED: &str = "chat messages that came back to their own sender through the room once stored \
     (the sender's acknowledgement); each is checked stored exactly once, as sent";
/// What "deliveries" counts.
pub const DELIVERIES: &str = "room messages delivered live to joined clients; each is checked stored as sent \
     and next in the room's order, with no gap and no repeat";

/// A run of seeds, as `simulate --json` prints it and `--merge` reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The seeds this report covers.
    pub seeds: Seeds,
    /// Clients per seed (at most, with `swarm`).
    pub clients: u32,
    /// Simulated time per seed, in milliseconds.
    pub duration_ms: u64,
    /// Each seed drew its own client count and faults.
    pub swarm: bool,
    /// The fault mode: `none`, `chaos` or `swarm`.
    pub faults: String,
    /// Each seed was run twice and the traces compared.
    pub check_determinism: bool,
    /// Ctrl-C stopped the run before every seed ran.
    pub interrupted: bool,
    /// Faults injected, all kinds.
    pub faults_injected: u64,
    /// Faults injected, by kind.
    pub fault_kinds: FaultCounts,
    /// Each invariant with how many checks it made and how many failed.
    pub invariants: Vec<InvariantRow>,
    /// Effects the programs asked for.
    pub effects: u64,
    /// See [`ACKNOWLEDGED`].
    pub acknowledged: u64,
    /// See [`DELIVERIES`].
    pub deliveries: u64,
    /// What the counts above mean.
    pub definitions: Definitions,
    /// Simulated time over every seed, in nanoseconds.
    pub simulated_ns: u64,
    /// Wall time of the run (the sum over shards, once merged).
    pub wall_s: f64,
    /// Seeds with at least one failed check.
    pub failed_seeds: u64,
    /// Failed checks, all invariants.
    pub violations: u64,
    /// The trace written, if any.
    pub trace: Option<String>,
}

/// A slice of a seed range: `run` of the seeds `start..end` ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seeds {
    /// The first seed.
    pub start: u64,
    /// One past the last seed.
    pub end: u64,
    /// How many ran (fewer than `end - start` if interrupted).
    pub run: u64,
}

/// One invariant's line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvariantRow {
    /// Its name.
    pub name: String,
    /// What it holds, and what one check is.
    pub rule: String,
    /// Checks made.
    pub checks: u64,
    /// Checks that failed.
    pub failed: u64,
}

/// What the report's counts mean.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definitions {
    /// What `acknowledged` counts.
    pub acknowledged: String,
    /// What `deliveries` counts.
    pub deliveries: String,
}

impl Default for Definitions {
    fn default() -> Definitions {
        Definitions {
            acknowledged: ACKNOWLEDGED.to_owned(),
            deliveries: DELIVERIES.to_owned(),
        }
    }
}

/// The rows for `checks`; `Deterministic` only when it was checked.
pub fn invariant_rows(checks: &Checks, check_determinism: bool) -> Vec<InvariantRow> {
    Invariant::ALL
        .into_iter()
        .filter(|i| *i != Invariant::Deterministic || check_determinism)
        .map(|i| InvariantRow {
            name: i.name().to_owned(),
            rule: i.rule().to_owned(),
            checks: checks.checked(i),
            failed: checks.failed(i),
        })
        .collect()
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // Every field is a plain value: this cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The report as text for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("{label:<27}{value}\n"));
        };
        let Seeds { start, end, run } = self.seeds;
        let interrupted = if self.interrupted {
            format!(" of {}, interrupted by Ctrl-C", end - start)
        } else {
            String::new()
        };
        line("seeds run:", format!("{run}{interrupted} ({start}..{end})"));
        line(
            "clients per seed:",
            format!(
                "{}{}",
                self.clients,
                if self.swarm { " (at most; swarm)" } else { "" }
            ),
        );
        line(
            "simulated time per seed:",
            format!("{:?}", Duration::from_millis(self.duration_ms)),
        );
        let mode = match self.faults.as_str() {
            "none" => "off",
            "chaos" => {
                "on, the chaos plan (errors, lost answers and acks, latency spikes, dropped connections)"
            }
            _ => "on, each seed draws its own (rates, outages, restarts, disconnect storms)",
        };
        line(
            "faults:",
            format!("{mode}; {} injected", self.faults_injected),
        );
        if self.faults != "none" {
            let k = self.fault_kinds;
            line(
                "  by kind:",
                format!(
                    "{} errors, {} lost answers, {} lost acks, {} refused in outages, {} lost in restarts, {} dropped connections",
                    k.errors,
                    k.lost_answers,
                    k.lost_acks,
                    k.outages,
                    k.restarts,
                    k.dropped_connections
                ),
            );
        }
        line("invariants checked:", String::new());
        for row in &self.invariants {
            line(
                &format!("  {}", row.name),
                format!("{} checks, {} failed: {}", row.checks, row.failed, row.rule),
            );
        }
        line("simulated effects:", self.effects.to_string());
        line(
            "acknowledged messages:",
            format!("{}: {}", self.acknowledged, self.definitions.acknowledged),
        );
        line(
            "deliveries:",
            format!("{}: {}", self.deliveries, self.definitions.deliveries),
        );
        let wall = self.wall_s.max(1e-9);
        line("wall time:", format!("{:.3} s", self.wall_s));
        line(
            "simulated effects / s:",
            format!("{:.0}", self.effects as f64 / wall),
        );
        line(
            "simulated time / wall:",
            format!("{:.0}x", self.simulated_ns as f64 / 1e9 / wall),
        );
        line("failed seeds:", self.failed_seeds.to_string());
        line("invariant violations:", self.violations.to_string());
        if let Some(path) = &self.trace {
            line("trace:", path.clone());
        }
        out
    }

    /// Reads a report `simulate --json` wrote, refusing anything larger than
    /// [`MAX_REPORT_BYTES`] before reading it, and anything that is not a report or
    /// whose counts do not add up.
    pub fn read(path: &str) -> Result<Report, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{path}: cannot open: {e}"))?;
        let mut text = Vec::new();
        // At most one byte past the limit, whatever the file claims to be (a pipe or a
        // device has no length).
        file.take(MAX_REPORT_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| format!("{path}: cannot read: {e}"))?;
        if text.len() as u64 > MAX_REPORT_BYTES {
            return Err(format!(
                "{path}: larger than {} KiB, so not a report of simulate --json; refused",
                MAX_REPORT_BYTES / 1024
            ));
        }
        let report: Report = serde_json::from_slice(&text)
            .map_err(|e| format!("{path}: not a report of simulate --json: {e}"))?;
        report.validate().map_err(|e| format!("{path}: {e}"))?;
        Ok(report)
    }

    /// Whether the counts of a report read from outside hold together.
    fn validate(&self) -> Result<(), String> {
        let Seeds { start, end, run } = self.seeds;
        if start > end || run > end - start {
            return Err(format!(
                "seeds {start}..{end} cannot have run {run}: not a report of simulate --json"
            ));
        }
        if !["none", "chaos", "swarm"].contains(&self.faults.as_str()) {
            return Err(format!(
                "unknown fault mode {:?}: not a report of simulate --json",
                self.faults.chars().take(40).collect::<String>()
            ));
        }
        if self.failed_seeds > run || !self.wall_s.is_finite() || self.wall_s < 0.0 {
            return Err("its counts do not add up: not a report of simulate --json".into());
        }
        let names: Vec<&str> = self.invariants.iter().map(|r| r.name.as_str()).collect();
        let expected: Vec<String> = invariant_rows(&Checks::default(), self.check_determinism)
            .into_iter()
            .map(|r| r.name)
            .collect();
        if names != expected {
            return Err(format!(
                "invariants {:?}, where this simulate checks {expected:?}: a report of another version",
                names
                    .iter()
                    .take(10)
                    .map(|n| n.chars().take(40).collect::<String>())
                    .collect::<Vec<_>>()
            ));
        }
        let failed = self
            .invariants
            .iter()
            .try_fold(0u64, |sum, r| sum.checked_add(r.failed));
        if failed != Some(self.violations) || self.invariants.iter().any(|r| r.failed > r.checks) {
            return Err(
                "its failed checks do not add up to its violations: not a report of simulate --json"
                    .into(),
            );
        }
        Ok(())
    }

    /// The settings two reports must share to be merged.
    fn configuration(&self) -> String {
        format!(
            "--clients {} --duration {}ms, faults {}{}{}",
            self.clients,
            self.duration_ms,
            self.faults,
            if self.swarm { ", swarm" } else { "" },
            if self.check_determinism {
                ", --check-determinism"
            } else {
                ""
            }
        )
    }
}

/// Merges the reports of shards of one sweep into one: counts add up, the seed range
/// spans them all. Refuses reports of different configurations and overlapping seed
/// ranges (a seed counted twice); warns on stderr of seeds no report covers.
pub fn merge(paths: &[String]) -> Result<Report, String> {
    let mut reports = Vec::with_capacity(paths.len().min(1024));
    for path in paths {
        reports.push((path, Report::read(path)?));
    }
    reports.sort_by_key(|(_, r)| (r.seeds.start, r.seeds.end));
    let Some(((first_path, first), rest)) = reports.split_first() else {
        return Err("--merge needs at least one report file".into());
    };
    let mut merged = first.clone();
    merged.trace = None;
    let mut covered_to = first.seeds.end;
    let overflow = || "the counts overflow: these are not reports of simulate --json".to_owned();
    for (path, r) in rest {
        if r.configuration() != first.configuration() {
            return Err(format!(
                "{path} is a run of {}, but {first_path} of {}: only shards of one sweep merge",
                r.configuration(),
                first.configuration()
            ));
        }
        if r.seeds.start < covered_to && r.seeds.start < r.seeds.end {
            return Err(format!(
                "{path} covers seeds {}..{}, which overlap those of another report (up to {covered_to}): a seed would count twice",
                r.seeds.start, r.seeds.end
            ));
        }
        if r.seeds.start > covered_to {
            eprintln!(
                "warning: no report covers seeds {covered_to}..{}",
                r.seeds.start
            );
        }
        covered_to = covered_to.max(r.seeds.end);
        let add = |a: u64, b: u64| a.checked_add(b).ok_or_else(overflow);
        merged.seeds.end = merged.seeds.end.max(r.seeds.end);
        merged.seeds.run = add(merged.seeds.run, r.seeds.run)?;
        merged.interrupted |= r.interrupted;
        merged.faults_injected = add(merged.faults_injected, r.faults_injected)?;
        merged.fault_kinds = merged
            .fault_kinds
            .checked_add(r.fault_kinds)
            .ok_or_else(overflow)?;
        for (row, other) in merged.invariants.iter_mut().zip(&r.invariants) {
            row.checks = add(row.checks, other.checks)?;
            row.failed = add(row.failed, other.failed)?;
        }
        merged.effects = add(merged.effects, r.effects)?;
        merged.acknowledged = add(merged.acknowledged, r.acknowledged)?;
        merged.deliveries = add(merged.deliveries, r.deliveries)?;
        merged.simulated_ns = add(merged.simulated_ns, r.simulated_ns)?;
        merged.wall_s += r.wall_s;
        merged.failed_seeds = add(merged.failed_seeds, r.failed_seeds)?;
        merged.violations = add(merged.violations, r.violations)?;
    }
    merged.definitions = Definitions::default();
    Ok(merged)
}
