//! The fault layer: loss, delay and partitions applied to peer frames, switchable at run time.
//!
//! Faults apply to frames between nodes only; client connections are never touched. Drop and
//! delay are decided once per frame, on the sending side, so a link's loss rate is exactly the
//! configured one (not compounded by both ends). Partitions can cut either direction: an
//! outbound cut drops frames as they are sent, an inbound cut drops frames as they arrive.

use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::BTreeSet;
use std::time::Duration;

/// Which frames a partition cuts, seen from the node it is set on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Frames to and from the partitioned nodes.
    #[default]
    Both,
    /// Only frames this node sends to them.
    Outbound,
    /// Only frames this node receives from them.
    Inbound,
}

/// Faults to inject into this node's peer traffic. `Faults::default()` injects none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    /// Percentage (0.0 to 100.0) of outgoing peer frames silently dropped.
    pub drop_percent: f64,
    /// When set, every outgoing peer frame is held for a uniformly random time in
    /// `min..=max` milliseconds before it joins the outbox. Frames may therefore be reordered.
    pub delay_ms: Option<(u64, u64)>,
    /// Node ids this node is cut off from.
    pub partition: BTreeSet<u64>,
    /// Which direction of traffic the partition cuts.
    pub direction: Direction,
}

/// What to do with one outgoing peer frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Send,
    Drop,
    Delay(Duration),
}

impl Faults {
    /// True when no fault is configured, so the send path can skip the layer entirely.
    pub(crate) fn is_none(&self) -> bool {
        self.drop_percent <= 0.0 && self.delay_ms.is_none() && self.partition.is_empty()
    }

    /// Decides the fate of a frame about to be sent to `to`.
    pub(crate) fn outbound(&self, to: u64, rng: &mut SmallRng) -> Verdict {
        if self.direction != Direction::Inbound && self.partition.contains(&to) {
            return Verdict::Drop;
        }
        if self.drop_percent > 0.0 && rng.gen::<f64>() * 100.0 < self.drop_percent {
            return Verdict::Drop;
        }
        match self.delay_ms {
            Some((min, max)) => {
                let (low, high) = (min.min(max), min.max(max));
                Verdict::Delay(Duration::from_millis(rng.gen_range(low..=high)))
            }
            None => Verdict::Send,
        }
    }

    /// True when a frame arriving from `from` must be dropped.
    pub(crate) fn drops_inbound(&self, from: u64) -> bool {
        self.direction != Direction::Outbound && self.partition.contains(&from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partition_directions() {
        // Proves each direction cuts exactly the traffic it names.
        let mut rng = SmallRng::seed_from_u64(1);
        let mut faults = Faults {
            partition: [2].into_iter().collect(),
            ..Faults::default()
        };
        assert_eq!(faults.outbound(2, &mut rng), Verdict::Drop);
        assert_eq!(faults.outbound(3, &mut rng), Verdict::Send);
        assert!(faults.drops_inbound(2) && !faults.drops_inbound(3));
        faults.direction = Direction::Outbound;
        assert_eq!(faults.outbound(2, &mut rng), Verdict::Drop);
        assert!(!faults.drops_inbound(2));
        faults.direction = Direction::Inbound;
        assert_eq!(faults.outbound(2, &mut rng), Verdict::Send);
        assert!(faults.drops_inbound(2));
        assert!(Faults::default().is_none() && !faults.is_none());
    }
}
