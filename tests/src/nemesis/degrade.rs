//! Kernel-level degradation of the namespace links (`Nemesis::NetLoss`,
//! `Nemesis::Bandwidth`): what TCP itself sees, unlike the fault layer's drops, which
//! happen above it. Random loss is an nftables rule `numgen random mod 100 < N drop` (this
//! kernel has no netem); a bandwidth limit is a tc token bucket (`tbf`). Healing removes
//! both (`ProcessCluster::net_heal_degradation`), after every window, at the end, and at the
//! start of a run.

use super::Faulter;
use crate::cluster::Loss;
use rand::Rng;

/// Loss percentages drawn from: light to severe.
const LOSS_PERCENTS: [u8; 5] = [2, 5, 10, 25, 50];

/// Rates drawn from, in kbit/s: a bad modem to a thin office link.
const RATES_KBIT: [u32; 4] = [64, 256, 1024, 8192];

impl Faulter {
    /// Random loss on one link (one way or both), or on everything one node sends (and,
    /// half the time, receives), the leader half the time.
    pub(super) fn net_loss(&mut self) -> String {
        if !self.cluster.in_netns() {
            return "net loss skipped (nodes are not in network namespaces: needs root)".into();
        }
        let ids = self.shuffled_running();
        if ids.len() < 2 {
            return "net loss skipped (fewer than two nodes running)".into();
        }
        let percent = LOSS_PERCENTS[self.rng.gen_range(0..LOSS_PERCENTS.len())];
        let node = match self.rng.gen_bool(0.5) {
            true => self.leader().unwrap_or(ids[0]),
            false => ids[0],
        };
        let other = ids.iter().copied().find(|&i| i != node).expect("two nodes");
        let (rules, what) = match self.rng.gen_range(0..4) {
            0 => (
                vec![Loss::Link {
                    from: node,
                    to: other,
                }],
                format!("link {node} -> {other}"),
            ),
            1 => (
                vec![
                    Loss::Link {
                        from: node,
                        to: other,
                    },
                    Loss::Link {
                        from: other,
                        to: node,
                    },
                ],
                format!("link {node} <-> {other}"),
            ),
            2 => (vec![Loss::Outgoing(node)], format!("all node {node} sends")),
            _ => (
                vec![Loss::Outgoing(node), Loss::Incoming(node)],
                format!("all node {node} sends and receives"),
            ),
        };
        self.degraded = true;
        let ok = rules
            .iter()
            .all(|&rule| self.cluster.net_lose(rule, percent));
        match ok {
            true => format!("nft loss {percent}% on {what}"),
            false => format!("nft loss on {what} failed (nft refused)"),
        }
    }

    /// A token-bucket limit on one node (the leader half the time) or on every node: on
    /// what it sends, what it receives, or both.
    pub(super) fn bandwidth(&mut self) -> String {
        if !self.cluster.in_netns() {
            return "bandwidth limit skipped (nodes are not in network namespaces: needs root)"
                .into();
        }
        let ids = self.shuffled_running();
        if ids.is_empty() {
            return "bandwidth limit skipped (no node running)".into();
        }
        let kbit = RATES_KBIT[self.rng.gen_range(0..RATES_KBIT.len())];
        let (nodes, whom) = match self.rng.gen_range(0..4) {
            0 => (ids.clone(), "every node".to_string()),
            1 => {
                let l = self.leader().unwrap_or(ids[0]);
                (vec![l], format!("leader {l}"))
            }
            _ => (vec![ids[0]], format!("node {}", ids[0])),
        };
        let (egress, ingress, direction) = match self.rng.gen_range(0..3) {
            0 => (true, false, "sending"),
            1 => (false, true, "receiving"),
            _ => (true, true, "sending and receiving"),
        };
        self.degraded = true;
        let mut ok = true;
        for &id in &nodes {
            if egress {
                ok &= self.cluster.net_limit(id, true, kbit);
            }
            if ingress {
                ok &= self.cluster.net_limit(id, false, kbit);
            }
        }
        match ok {
            true => format!("tbf {kbit} kbit/s on {whom}, {direction}"),
            false => format!("tbf on {whom} failed (tc refused)"),
        }
    }
}
