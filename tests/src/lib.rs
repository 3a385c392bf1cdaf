//! Workspace-level test support for raftd: the deterministic simulator, the lab tester's
//! scenarios re-created on it, the randomized swarm, and their checkers.
#![forbid(unsafe_code)]

pub mod certs;
pub mod checker;
pub mod cluster;
pub mod lab;
pub mod linearizability;
pub mod membership;
pub mod nemesis;
pub mod runner;
pub mod sim;
pub mod swarm;
pub mod whole;
