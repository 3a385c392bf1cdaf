//! Running scenarios by name and seed: single runs with a replay line on failure, and
//! sweeps over many seeds with pass/fail counts and runs per second.

use crate::lab::{Outcome, SCENARIOS};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// A scenario: a function of the seed.
pub type ScenarioFn = fn(u64) -> Outcome;

/// The swarm's name in listings and on the command line.
pub const SWARM: &str = "swarm";

/// The whole-server swarm's name (real replicas, clients, power cuts; see `whole`).
pub const WHOLE: &str = "whole";

/// The whole-server scenario of a damaged follower's disk (see `whole::damaged_follower`).
pub const WHOLE_DAMAGE: &str = "whole-damage";

/// Every scenario name: the lab's, ours (membership changes among them), and the swarms.
pub fn names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = SCENARIOS.iter().map(|s| s.0).collect();
    v.extend(crate::membership::SCENARIOS.iter().map(|s| s.0));
    v.push(SWARM);
    v.push(WHOLE);
    v.push(WHOLE_DAMAGE);
    v
}

/// Looks a scenario up by name (case-insensitive).
pub fn find(name: &str) -> Option<(&'static str, ScenarioFn)> {
    if name.eq_ignore_ascii_case(SWARM) {
        return Some((SWARM, crate::swarm::swarm as ScenarioFn));
    }
    if name.eq_ignore_ascii_case(WHOLE) {
        return Some((WHOLE, crate::whole::swarm as ScenarioFn));
    }
    if name.eq_ignore_ascii_case(WHOLE_DAMAGE) {
        return Some((WHOLE_DAMAGE, crate::whole::damaged_follower as ScenarioFn));
    }
    if let Some(s) = crate::membership::SCENARIOS
        .iter()
        .find(|s| s.0.eq_ignore_ascii_case(name))
    {
        return Some((s.0, s.2));
    }
    SCENARIOS
        .iter()
        .find(|s| s.0.eq_ignore_ascii_case(name))
        .map(|s| (s.0, s.2))
}

/// The one command that replays a run, printed with every failure.
pub fn replay_command(name: &str, seed: u64) -> String {
    format!("cargo run --release -p raftd-tests --bin sim -- run {name} --seed {seed} --trace")
}

/// Runs one scenario with one seed, turning a panic into an error that names the seed
/// and the replay command.
pub fn run_one(name: &str, seed: u64) -> Result<Outcome, String> {
    let (name, f) = find(name).ok_or_else(|| format!("no scenario named {name}"))?;
    catch_unwind(AssertUnwindSafe(|| f(seed))).map_err(|payload| {
        let why = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        format!(
            "scenario {name} failed with seed {seed}: {why}\n  replay: {}",
            replay_command(name, seed)
        )
    })
}

/// Tallies of a sweep of one scenario.
#[derive(Debug, Default)]
pub struct SweepResult {
    /// Runs that passed.
    pub passed: u64,
    /// Failure messages (each with its replay command).
    pub failures: Vec<String>,
    /// Wall-clock seconds spent.
    pub seconds: f64,
    /// Virtual seconds simulated.
    pub virtual_seconds: f64,
}

/// Runs `seeds` seeds of `name` starting at `first_seed`, collecting failures.
pub fn sweep(name: &str, first_seed: u64, seeds: u64) -> SweepResult {
    let started = Instant::now();
    let mut r = SweepResult::default();
    for seed in first_seed..first_seed + seeds {
        match run_one(name, seed) {
            Ok(o) => {
                r.passed += 1;
                r.virtual_seconds += o.virtual_time as f64 / 1e6;
            }
            Err(e) => r.failures.push(e),
        }
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}

/// For `cargo test`: runs the default number of seeds (`SIM_SEEDS`, default 25, starting
/// at `SIM_SEED`, default 1) and panics with every failure's replay line.
pub fn test_scenario(name: &str) {
    test_scenario_seeds(name, "SIM_SEEDS", 25);
}

/// Like [`test_scenario`] with the seed count from `seeds_env` (default `default_seeds`):
/// the swarms run more seeds than the scripted scenarios.
pub fn test_scenario_seeds(name: &str, seeds_env: &str, default_seeds: u64) {
    let seeds = env_u64(seeds_env, default_seeds);
    let first = env_u64("SIM_SEED", 1);
    let mut failures = Vec::new();
    for seed in first..first + seeds {
        if let Err(e) = run_one(name, seed) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
