//! A linearizability checker for histories of concurrent operations on raftd's key-value
//! store, used by the fault-testing layer to judge what its clients saw.
//!
//! # Model
//!
//! Every key is an independent register whose initial state is "absent". A register
//! supports four calls: `put` (set a value), `delete` (make it absent), `get` (read it) and
//! compare-and-swap (`cas`: set `new` only if the register holds `expected`, where an
//! `expected` of `None` means "absent"). Linearizability is compositional (Herlihy and
//! Wing's locality, the "P-compositionality" porcupine exploits), so [`check`] partitions the
//! history by key and checks each key on its own.
//!
//! An [`Operation`] records a call, who made it, when it was invoked, when its answer came
//! back and what the answer was ([`Ret`]):
//!
//! - `Ok`, `Value` and `CasMismatch` are definite answers. The operation took effect at one
//!   instant between `invoke_ns` and `complete_ns`. Two operations whose times are equal at
//!   a boundary (one completes at `t`, the other is invoked at `t`) count as concurrent, the
//!   lenient choice porcupine also makes, so clock granularity never fabricates a violation.
//! - `Failed` means the operation definitely did not take effect; it is dropped.
//! - `Unknown` means the client timed out: the operation may have taken effect at any
//!   instant after `invoke_ns` (even after the client gave up, since the request may still
//!   be in flight) or never. Its `complete_ns` is ignored. A get or cas mismatch with an
//!   unknown answer has no effect on the register, so it is dropped.
//!
//! # Algorithm
//!
//! The search is the Wing–Gong algorithm with Lowe's memoisation, as in porcupine and
//! Knossos: the calls and returns of one key's definite operations, sorted by time, form a
//! doubly linked list; a depth-first search repeatedly picks a call that comes before the
//! first remaining return (a "minimal" operation), applies it to the model if the model
//! agrees with its answer, and lifts its call and return out of the list. When a return
//! reaches the head of the list, that operation should have been linearized already, so
//! the search backtracks. A cache of (set of linearized operations as a bitset, model
//! state) prunes configurations already explored. Unknown operations have no return (it is
//! at +infinity): they are candidates from their invocation on, never force a backtrack,
//! and the search succeeds once every operation with a definite answer is linearized: an
//! unknown write left out "never happened".
//!
//! That much is porcupine's search, and it drowns in unknown operations: each may take
//! effect at any point after its invocation or never, and when values repeat (Jepsen's
//! etcd histories write 0 to 4) nothing tells the alternatives apart early, so a wrong
//! guess is refuted only after exploring everything behind it. The search here adds
//! prunings that keep it complete (the proofs are on the private `search` function): it
//! looks only for linearizations of a canonical form, in which a run of unknown
//! operations comes right before a definite get or cas that needs it and holds at most
//! one put or delete, at its start; of the unknown operations with the same effect it
//! tries one; the cache counts a configuration as explored when one with the same
//! definite operations and state and fewer unknown ones was; a get or cas mismatch that
//! fits is linearized without trying alternatives before it; and values that no answer
//! compares the register with are one state. Tests check it against an unpruned search on
//! many small random histories, and against porcupine's verdicts on its Jepsen etcd
//! histories (`tests/data/jepsen`).
//!
//! Two sound simplifications shrink the search before it starts. A value is "unique" when
//! exactly one operation writes it. An unknown write of a unique value that some definite
//! answer observed (a get returned it, or a successful cas expected it) must have happened
//! before the earliest such observer completed, so it becomes a definite write returning
//! then. An unknown write whose value no operation observes, on a key where no cas
//! mismatch completes after it was invoked, can never help explain any answer, so it is
//! left out. Without these, every pending unknown write doubles the configurations.
//!
//! # Bounds
//!
//! A search step is one candidate looked at: a list entry visited (trying a call or
//! backtracking at a return), a class of unknown operations tried, or a member of one
//! passed over.
//! One search (one key, or one candidate window while shrinking) stops after
//! [`Limits::search_steps_max`] steps (default [`SEARCH_STEPS_MAX_DEFAULT`], 1,000,000) and
//! the whole [`check`] after [`Limits::total_steps_max`] steps (default
//! [`TOTAL_STEPS_MAX_DEFAULT`], 20,000,000); then the outcome is [`Outcome::GaveUp`]. The
//! cache holds at most one entry per step, each a bitset of the key's operations, so one
//! search on a key with 2,000 operations holds at most about 300 MB. Steps are counted
//! rather than time so that an outcome never depends on the machine's speed; a step costs
//! about 0.3 µs in the test profile on a key of 10,000 operations, so the defaults bound a
//! check to a few seconds.
//!
//! The search's weak spot, shared with porcupine and Knossos: refuting a history means
//! exploring every configuration before the violation. The prunings make a pending
//! unknown operation cost only the configurations where it makes a needed state
//! reachable, rather than doubling them all, so a violation behind thousands of
//! operations and dozens of timeouts is refuted in a few hundred thousand steps; but a
//! violation late in a history where many operations overlap (many clients on one key,
//! long timeouts) can still end in [`Outcome::GaveUp`]. A linearizable history is
//! accepted quickly, because the search stops at the first order that works.
//!
//! # Minimal failing window
//!
//! When a key's history is not linearizable, [`check`] shrinks it to a window that is
//! itself not linearizable and whose every step of shrinking keeps it a faithful witness:
//!
//! 1. The shortest prefix that fails: the operations invoked by a time `t` (the completion
//!    time of some operation), where operations still running at `t` become `Unknown`
//!    writes or, if they only read, are dropped. Any linearization of the full history
//!    restricts to one of the prefix, so a failing prefix proves the history fails.
//! 2. Greedy removal, chunks first then single operations, while the window still fails:
//!    first of the reads (gets, cas mismatches), which may always be removed and mostly go
//!    in a few large chunks, then of any operation. A set of writes may be removed
//!    only if every remaining operation that observes a value one of them writes (a get
//!    returning it, a cas expecting it), and every remaining cas mismatch, completed before
//!    that write was invoked: then a linearization of the larger window, minus those
//!    writes, still satisfies every remaining operation. So removal never invents a
//!    violation, such as a read of a value "never written" because its write was removed.
//!
//! The [`Violation`] carries that window and an explanation: the longest order the search
//! found and why none of the remaining operations can come next.
//!
//! # Malformed histories
//!
//! A history the recorder could not have produced is a bug in the recorder, so [`check`]
//! panics on it with the operation: an answer that does not fit the call (a put answered
//! with a value), a definite answer without `complete_ns`, or `complete_ns < invoke_ns`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A call on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Set the key to this value.
    Put(Vec<u8>),
    /// Make the key absent.
    Delete,
    /// Read the key.
    Get,
    /// Set the key to `new` if it holds `expected` (`None`: if it is absent).
    Cas {
        /// The value the key must hold, or `None` for absent.
        expected: Option<Vec<u8>>,
        /// The value to set.
        new: Vec<u8>,
    },
}

/// The answer a client got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    /// A put or delete was applied; a cas matched and was applied.
    Ok,
    /// A get's answer (`None`: the key was absent).
    Value(Option<Vec<u8>>),
    /// A cas found another value and definitely did not apply.
    CasMismatch,
    /// The operation definitely did not take effect (treated as never invoked).
    Failed,
    /// No answer (timed out): it may have taken effect at any time after invocation, or never.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that made the call (for reports only; the checker does not use it).
    pub client: u64,
    /// The key called on.
    pub key: Vec<u8>,
    /// The call.
    pub call: Call,
    /// When the call was sent, in nanoseconds on a clock shared by all clients.
    pub invoke_ns: u64,
    /// When the answer arrived; `None` for `Unknown` (and ignored for it).
    pub complete_ns: Option<u64>,
    /// The answer.
    pub ret: Ret,
}

/// What [`check`] concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every key's history is linearizable.
    Linearizable,
    /// Some key's history is not linearizable (the first such key in key order).
    Violation(Violation),
    /// A search ran out of budget and no other key showed a violation.
    GaveUp(GaveUp),
}

/// A key whose history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: Vec<u8>,
    /// A minimal failing sub-history of that key, ordered by invocation. Operations still
    /// running at the window's end appear with `Ret::Unknown`.
    pub window: Vec<Operation>,
    /// Why the window cannot be linearized, in a few lines.
    pub explanation: String,
}

/// The checker ran out of budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GaveUp {
    /// The first key whose search ran out of budget.
    pub key: Vec<u8>,
    /// The number of that key's operations.
    pub operations: usize,
    /// Steps spent by the whole check.
    pub steps: u64,
}

/// Default of [`Limits::search_steps_max`].
pub const SEARCH_STEPS_MAX_DEFAULT: u64 = 1_000_000;
/// Default of [`Limits::total_steps_max`].
pub const TOTAL_STEPS_MAX_DEFAULT: u64 = 20_000_000;
const _: () = assert!(SEARCH_STEPS_MAX_DEFAULT <= TOTAL_STEPS_MAX_DEFAULT);

/// The checker's budget, in search steps (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Steps one search may take (one key, or one candidate window while shrinking).
    pub search_steps_max: u64,
    /// Steps the whole check may take, shrinking included.
    pub total_steps_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            search_steps_max: SEARCH_STEPS_MAX_DEFAULT,
            total_steps_max: TOTAL_STEPS_MAX_DEFAULT,
        }
    }
}

/// Checks `history` with the default [`Limits`].
pub fn check(history: &[Operation]) -> Outcome {
    check_with(history, &Limits::default())
}

/// Checks `history`: each key independently, in key order, stopping at the first key that
/// is not linearizable (a key whose search gives up does not stop the others). Panics on a malformed operation (see the module docs).
pub fn check_with(history: &[Operation], limits: &Limits) -> Outcome {
    let mut by_key: BTreeMap<&[u8], Vec<Operation>> = BTreeMap::new();
    for op in history {
        validate(op);
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut budget = Budget {
        limits: *limits,
        used: 0,
    };
    let mut gave_up = None;
    for (key, ops) in by_key {
        match budget.search(&ops, false) {
            Search::Linearizable => {}
            Search::GaveUp => {
                // A violation on a later key is worth more than giving up; keep looking.
                gave_up.get_or_insert(GaveUp {
                    key: key.to_vec(),
                    operations: ops.len(),
                    steps: 0,
                });
            }
            Search::Violation(_) => {
                return Outcome::Violation(violation(key, ops, &mut budget));
            }
        }
    }
    match gave_up {
        Some(gave_up) => Outcome::GaveUp(GaveUp {
            steps: budget.used,
            ..gave_up
        }),
        None => Outcome::Linearizable,
    }
}

fn validate(op: &Operation) {
    let fits = matches!(
        (&op.call, &op.ret),
        (_, Ret::Failed | Ret::Unknown)
            | (Call::Put(_) | Call::Delete, Ret::Ok)
            | (Call::Get, Ret::Value(_))
            | (Call::Cas { .. }, Ret::Ok | Ret::CasMismatch)
    );
    assert!(fits, "history: the answer does not fit the call: {op}");
    if matches!(op.ret, Ret::Ok | Ret::Value(_) | Ret::CasMismatch) {
        let complete_ns = op
            .complete_ns
            .unwrap_or_else(|| panic!("history: a definite answer without complete_ns: {op}"));
        assert!(
            complete_ns >= op.invoke_ns,
            "history: completed before it was invoked: {op}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Preparation: one key's operations as register effects over interned values.

/// A register state or value: 0 is "absent", other values are interned byte strings.
type State = u32;
const ABSENT: State = 0;

/// What an operation does to the register, and what its answer demands of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Effect {
    /// Put or delete: any state, then `value`.
    Write(State),
    /// Get: the state must be `value`; unchanged.
    Read(State),
    /// Successful cas: the state must be `expected`, then `new`.
    Cas { expected: State, new: State },
    /// Failed cas: the state must not be `expected`; unchanged.
    CasMismatch { expected: State },
}

impl Effect {
    /// The state after this effect from `state`, or `None` if the answer contradicts it.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Effect::Write(value) => Some(value),
            Effect::Read(value) => (state == value).then_some(state),
            Effect::Cas { expected, new } => (state == expected).then_some(new),
            Effect::CasMismatch { expected } => (state != expected).then_some(state),
        }
    }

    fn written(self) -> Option<State> {
        match self {
            Effect::Write(value) | Effect::Cas { new: value, .. } => Some(value),
            Effect::Read(_) | Effect::CasMismatch { .. } => None,
        }
    }

    /// True for a get or a cas mismatch: an effect that leaves the state as it is.
    fn is_read_only(self) -> bool {
        matches!(self, Effect::Read(_) | Effect::CasMismatch { .. })
    }

    /// The value a definite answer shows the register held.
    fn observed(self) -> Option<State> {
        match self {
            Effect::Read(value)
            | Effect::Cas {
                expected: value, ..
            } => Some(value),
            Effect::Write(_) | Effect::CasMismatch { .. } => None,
        }
    }
}

/// One key's operations ready for the search.
struct Prepared {
    effects: Vec<Effect>,
    invoke_ns: Vec<u64>,
    /// `None`: unknown, may be left out.
    complete_ns: Vec<Option<u64>>,
    /// Index of each prepared operation in the window it came from.
    origin: Vec<usize>,
    /// Interned values, by state (index 0 unused: absent).
    values: Vec<Vec<u8>>,
}

fn prepare(ops: &[Operation]) -> Prepared {
    let mut interned: HashMap<Vec<u8>, State> = HashMap::new();
    let mut values = vec![Vec::new()];
    let mut intern = |value: Option<&Vec<u8>>| -> State {
        let Some(value) = value else { return ABSENT };
        if let Some(&state) = interned.get(value) {
            return state;
        }
        values.push(value.clone());
        let state = State::try_from(values.len() - 1)
            .ok()
            .filter(|&state| state < UNSEEN)
            .expect("fewer than 2^32 - 2 values a key");
        interned.insert(value.clone(), state);
        state
    };
    let mut p = Prepared {
        effects: Vec::new(),
        invoke_ns: Vec::new(),
        complete_ns: Vec::new(),
        origin: Vec::new(),
        values: Vec::new(),
    };
    for (index, op) in ops.iter().enumerate() {
        let effect = match (&op.call, &op.ret) {
            (_, Ret::Failed) | (Call::Get, Ret::Unknown) => continue,
            (Call::Put(value), _) => Effect::Write(intern(Some(value))),
            (Call::Delete, _) => Effect::Write(ABSENT),
            (Call::Get, Ret::Value(value)) => Effect::Read(intern(value.as_ref())),
            (Call::Cas { expected, .. }, Ret::CasMismatch) => Effect::CasMismatch {
                expected: intern(expected.as_ref()),
            },
            (Call::Cas { expected, new }, _) => Effect::Cas {
                expected: intern(expected.as_ref()),
                new: intern(Some(new)),
            },
            (Call::Get, _) => unreachable!("validated: {op}"),
        };
        p.effects.push(effect);
        p.invoke_ns.push(op.invoke_ns);
        p.complete_ns.push(if op.ret == Ret::Unknown {
            None
        } else {
            op.complete_ns
        });
        p.origin.push(index);
    }
    p.values = values;
    tighten_unknown_writes(&mut p);
    merge_unseen_values(&mut p);
    p
}

/// The state of every value that no answer compares the register with (no get returned
/// it, no cas expected it): the model cannot tell such values apart, so merging them
/// changes no answer and lets the cache and the search see them as one.
const UNSEEN: State = State::MAX - 1;

fn merge_unseen_values(p: &mut Prepared) {
    let mut compared = vec![false; p.values.len()];
    compared[ABSENT as usize] = true;
    for effect in &p.effects {
        match *effect {
            Effect::Read(value)
            | Effect::Cas {
                expected: value, ..
            }
            | Effect::CasMismatch { expected: value } => compared[value as usize] = true,
            Effect::Write(_) => {}
        }
    }
    let merge = |value: State| {
        if compared[value as usize] {
            value
        } else {
            UNSEEN
        }
    };
    for effect in &mut p.effects {
        *effect = match *effect {
            Effect::Write(value) => Effect::Write(merge(value)),
            Effect::Cas { expected, new } => Effect::Cas {
                expected,
                new: merge(new),
            },
            read => read,
        };
    }
}

/// The two simplifications of the module docs: an unknown write of a unique value that a
/// definite answer observed becomes definite, returning when its earliest observer
/// completed; an unknown write nothing observes, and that no later cas mismatch could
/// depend on, is left out.
fn tighten_unknown_writes(p: &mut Prepared) {
    let mut writers = vec![0usize; p.values.len()];
    let mut first_observer_complete_ns: Vec<Option<u64>> = vec![None; p.values.len()];
    let mut observed = vec![false; p.values.len()];
    let mut last_mismatch_complete_ns = None;
    for (i, effect) in p.effects.iter().enumerate() {
        if let Some(value) = effect.written() {
            writers[value as usize] += 1;
        }
        if let Some(value) = effect.observed() {
            observed[value as usize] = true;
            if let Some(complete_ns) = p.complete_ns[i] {
                let first = &mut first_observer_complete_ns[value as usize];
                *first = Some(first.map_or(complete_ns, |t: u64| t.min(complete_ns)));
            }
        }
        if let (Effect::CasMismatch { .. }, Some(complete_ns)) = (effect, p.complete_ns[i]) {
            last_mismatch_complete_ns = last_mismatch_complete_ns.max(Some(complete_ns));
        }
    }
    let mut keep = vec![true; p.effects.len()];
    for (i, effect) in p.effects.iter().enumerate() {
        let Some(value) = effect.written() else {
            continue;
        };
        if p.complete_ns[i].is_some() || value == ABSENT {
            continue;
        }
        let value = value as usize;
        if let (1, Some(first)) = (writers[value], first_observer_complete_ns[value]) {
            // If the observer completed before this write was invoked, the history is not
            // linearizable; leave the write unknown and let the search find out.
            if first >= p.invoke_ns[i] {
                p.complete_ns[i] = Some(first);
            }
        } else if !observed[value] && last_mismatch_complete_ns < Some(p.invoke_ns[i]) {
            keep[i] = false;
        }
    }
    fn kept<T: Copy>(items: &[T], keep: &[bool]) -> Vec<T> {
        items
            .iter()
            .zip(keep)
            .filter(|(_, &k)| k)
            .map(|(&x, _)| x)
            .collect()
    }
    p.effects = kept(&p.effects, &keep);
    p.invoke_ns = kept(&p.invoke_ns, &keep);
    p.complete_ns = kept(&p.complete_ns, &keep);
    p.origin = kept(&p.origin, &keep);
}

// ---------------------------------------------------------------------------------------
// The search.

const NONE: usize = usize::MAX;
/// The head sentinel of the event list.
const HEAD: usize = 0;

/// A node of the event list.
#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    /// The prepared operation this event belongs to.
    op: usize,
    is_call: bool,
    /// For a call, its return node.
    return_node: usize,
    /// A call's invocation time or a return's completion time.
    time_ns: u64,
}

/// The calls and returns of the definite operations sorted by time, as a doubly linked
/// list. (Unknown operations have no return; [`UnknownClasses`] holds them.)
struct EventList {
    nodes: Vec<Node>,
}

impl EventList {
    fn new(p: &Prepared) -> EventList {
        // (time, return after call at equal times, op) — calls first makes touching
        // intervals concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for op in 0..p.effects.len() {
            if let Some(complete_ns) = p.complete_ns[op] {
                events.push((p.invoke_ns[op], false, op));
                events.push((complete_ns, true, op));
            }
        }
        events.sort_unstable();
        let head = Node {
            prev: NONE,
            next: NONE,
            op: NONE,
            is_call: false,
            return_node: NONE,
            time_ns: 0,
        };
        let mut nodes = vec![head];
        let mut call_node = vec![NONE; p.effects.len()];
        for (time_ns, is_return, op) in events {
            let index = nodes.len();
            nodes.push(Node {
                prev: index - 1,
                next: NONE,
                op,
                is_call: !is_return,
                return_node: NONE,
                time_ns,
            });
            nodes[index - 1].next = index;
            if is_return {
                nodes[call_node[op]].return_node = index;
            } else {
                call_node[op] = index;
            }
        }
        EventList { nodes }
    }

    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != NONE {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != NONE {
            self.nodes[next].prev = node;
        }
    }

    /// Removes a call and its return from the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.nodes[call].return_node);
    }

    /// Undoes [`EventList::lift`] (in reverse order, so the links are exact).
    fn unlift(&mut self, call: usize) {
        self.relink(self.nodes[call].return_node);
        self.relink(call);
    }
}

/// The unknown operations grouped by effect. Of the members of a class that are
/// candidates, linearizing the last invoked is never worse than linearizing another one:
/// the others stay candidates in every configuration where it would have been one, so a
/// configuration tries one member a class (see [`search`]).
struct UnknownClasses {
    /// Per class: its members, sorted by invocation.
    members: Vec<Vec<usize>>,
    /// The classes of unknown puts and deletes.
    writes: Vec<usize>,
    /// The classes of unknown cas, by the state they expect.
    cas_by_expected: HashMap<State, Vec<usize>>,
}

impl UnknownClasses {
    fn new(p: &Prepared) -> UnknownClasses {
        let mut unknown: Vec<usize> = (0..p.effects.len())
            .filter(|&op| p.complete_ns[op].is_none())
            .collect();
        unknown.sort_unstable_by_key(|&op| (p.invoke_ns[op], op));
        let mut class_of: HashMap<Effect, usize> = HashMap::new();
        let mut classes = UnknownClasses {
            members: Vec::new(),
            writes: Vec::new(),
            cas_by_expected: HashMap::new(),
        };
        for op in unknown {
            let effect = p.effects[op];
            let class = *class_of.entry(effect).or_insert_with(|| {
                match effect {
                    Effect::Cas { expected, .. } => classes
                        .cas_by_expected
                        .entry(expected)
                        .or_default()
                        .push(classes.members.len()),
                    _ => classes.writes.push(classes.members.len()),
                }
                classes.members.push(Vec::new());
                classes.members.len() - 1
            });
            classes.members[class].push(op);
        }
        classes
    }

    /// The `index`th class worth trying from `state`: the writes unless inside a block
    /// (see [`search`]), then the cas that fit.
    fn class(&self, state: State, in_block: bool, index: usize) -> Option<usize> {
        let writes: &[usize] = if in_block { &[] } else { &self.writes };
        let cas = self
            .cas_by_expected
            .get(&state)
            .map_or(&[][..], Vec::as_slice);
        match index.checked_sub(writes.len()) {
            None => Some(writes[index]),
            Some(index) => cas.get(index).copied(),
        }
    }
}

/// A configuration's linearized operations: bitsets over the definite operations and over
/// the unknown ones, and a Zobrist hash of the definite set.
struct Linearized {
    /// The operation's index among the definite operations or among the unknown ones.
    slot: Vec<usize>,
    is_unknown: Vec<bool>,
    zobrist: Vec<u64>,
    definite: Vec<u64>,
    unknown: Vec<u64>,
    definite_hash: u64,
}

impl Linearized {
    fn new(p: &Prepared) -> Linearized {
        let is_unknown: Vec<bool> = p.complete_ns.iter().map(Option::is_none).collect();
        let mut counts = [0usize; 2];
        let slot = is_unknown
            .iter()
            .map(|&unknown| {
                counts[usize::from(unknown)] += 1;
                counts[usize::from(unknown)] - 1
            })
            .collect();
        Linearized {
            slot,
            zobrist: (0..is_unknown.len() as u64).map(splitmix64).collect(),
            is_unknown,
            definite: vec![0; counts[0].div_ceil(64)],
            unknown: vec![0; counts[1].div_ceil(64)],
            definite_hash: 0,
        }
    }

    /// Adds or removes operation `op`.
    fn flip(&mut self, op: usize) {
        let slot = self.slot[op];
        if self.is_unknown[op] {
            self.unknown[slot / 64] ^= 1 << (slot % 64);
        } else {
            self.definite[slot / 64] ^= 1 << (slot % 64);
            self.definite_hash ^= self.zobrist[op];
        }
    }

    fn contains(&self, op: usize) -> bool {
        let slot = self.slot[op];
        let words = if self.is_unknown[op] {
            &self.unknown
        } else {
            &self.definite
        };
        words[slot / 64] & (1 << (slot % 64)) != 0
    }

    fn hash(&self, state: State) -> u64 {
        self.definite_hash ^ splitmix64(u64::from(state) ^ 0x5bd1_e995)
    }
}

/// A hasher for keys that are already uniformly distributed hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("the cache's keys are u64 hashes")
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// No older cache entry.
const END: u32 = u32::MAX;
/// A cache entry's block start when it was not inside a block of unknown operations.
const NO_BLOCK: State = State::MAX;

/// The memo of visited configurations, with dominance (see [`search`]): a configuration
/// is covered by a cached one with the same state, the same linearized definite
/// operations and a subset of its linearized unknown operations, if the cached one was
/// outside a block of unknown operations or in a block that started from the same state.
struct Cache {
    definite_words: usize,
    /// The newest entry for each hash of (definite set, state).
    newest: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    /// Per entry: its state, its block start and the next older entry with that hash.
    entries: Vec<(State, State, u32)>,
    /// Per entry: its definite words, then its unknown words.
    words: Vec<u64>,
}

impl Cache {
    fn new(linearized: &Linearized) -> Cache {
        Cache {
            definite_words: linearized.definite.len(),
            newest: HashMap::default(),
            entries: Vec::new(),
            words: Vec::new(),
        }
    }

    /// Records the configuration unless a cached one covers it; true if recorded.
    fn insert(
        &mut self,
        state: State,
        block_start: Option<State>,
        linearized: &Linearized,
    ) -> bool {
        let block_start = block_start.unwrap_or(NO_BLOCK);
        let hash = linearized.hash(state);
        let stride = self.definite_words + linearized.unknown.len();
        let newest = self.newest.get(&hash).copied().unwrap_or(END);
        let mut entry = newest;
        while entry != END {
            let (entry_state, entry_block_start, older) = self.entries[entry as usize];
            let (definite, unknown) =
                self.words[entry as usize * stride..][..stride].split_at(self.definite_words);
            let covers = entry_state == state
                && (entry_block_start == NO_BLOCK || entry_block_start == block_start)
                && definite == linearized.definite.as_slice()
                && unknown
                    .iter()
                    .zip(&linearized.unknown)
                    .all(|(cached, current)| cached & !current == 0);
            if covers {
                return false;
            }
            entry = older;
        }
        let index = u32::try_from(self.entries.len()).expect("fewer than 2^32 cache entries");
        self.entries.push((state, block_start, newest));
        self.words.extend_from_slice(&linearized.definite);
        self.words.extend_from_slice(&linearized.unknown);
        self.newest.insert(hash, index);
        true
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d1_049b_1331_11eb);
    x ^ (x >> 31)
}

/// The result of one search.
enum Search {
    Linearizable,
    /// Not linearizable; the deepest order reached (prepared indices) and its final state.
    Violation(Deepest),
    GaveUp,
}

#[derive(Default)]
struct Deepest {
    order: Vec<usize>,
    state: State,
}

struct Budget {
    limits: Limits,
    used: u64,
}

impl Budget {
    fn exhausted(&self) -> bool {
        self.used >= self.limits.total_steps_max
    }

    /// Prepares and searches one key's window; `explain` records the deepest order.
    fn search(&mut self, window: &[Operation], explain: bool) -> Search {
        self.search_prepared(&prepare(window), explain)
    }

    fn search_prepared(&mut self, p: &Prepared, explain: bool) -> Search {
        let steps_max = self
            .limits
            .search_steps_max
            .min(self.limits.total_steps_max.saturating_sub(self.used));
        let mut steps = 0u64;
        let result = search(p, steps_max, &mut steps, explain);
        self.used += steps;
        result
    }
}

/// Where the search is among a configuration's candidates.
#[derive(Clone, Copy)]
enum Cursor {
    /// At this node of the event list.
    Definite(usize),
    /// At this index of the unknown classes worth trying, the first remaining return
    /// being at `deadline_ns`.
    Unknown { index: usize, deadline_ns: u64 },
}

/// A linearized operation on the search's stack, and what it changed.
struct Frame {
    op: usize,
    /// Its call node; `NONE` for an unknown operation.
    call: usize,
    /// Where to go on among the candidates of the configuration before it.
    resume: Cursor,
    /// The state before it.
    state: State,
    /// The block start before it.
    block_start: Option<State>,
}

/// What one step of the search did.
enum Step {
    /// Moved to the next candidate.
    Next,
    /// Linearized a candidate.
    Pushed,
    /// The configuration is a dead end.
    DeadEnd,
}

/// The Wing–Gong–Lowe depth-first search over one key's prepared operations.
///
/// A configuration is the set of linearized operations and the state they leave. From
/// one, the search tries the definite calls that come before the first remaining return,
/// in list order, then the unknown operations invoked by that return.
///
/// Unknown operations are where configurations multiply, so the search only looks for
/// linearizations of a canonical form, which exist whenever any linearization does. An
/// unknown operation has no return, so it can always be moved later or left out. So a run
/// of unknown operations (a block) that comes right before a write, or right before an
/// operation that fits the state before the block, can be left out or moved after that
/// operation without changing any answer; and whatever a block did before a put or delete
/// of its own is overwritten. In the canonical form every block therefore starts with at
/// most one put or delete, goes on with cas only, and ends right before a get, cas or cas
/// mismatch that does not fit the state before the block. The search starts a block only
/// when some definite candidate does not fit the state, and inside a block takes only the
/// definite candidates that the block made fit. `block_start` is the state before the
/// current block. Unknown operations with the same effect are interchangeable except for
/// their invocation, so a configuration tries one of each class (see [`UnknownClasses`]).
///
/// Two more prunings. The cache covers a configuration by one with fewer unknown
/// operations linearized (and otherwise equal): leaving an unknown operation out adds no
/// return to wait for, so whatever completes the larger set completes the smaller one.
/// And a read (a get or a cas mismatch) that fits the state may be linearized at once: it
/// leaves the state as it is and taking it out only lifts its return's constraint, so
/// when the configuration after it fails, the one before it fails too and its other
/// candidates are not tried.
///
/// All of these keep the search complete: a successful configuration the search skips is
/// always covered by one it explores whose shortest completion is no longer. The test
/// `search_agrees_with_a_naive_oracle` checks it against a search with no pruning.
fn search(p: &Prepared, steps_max: u64, steps: &mut u64, explain: bool) -> Search {
    let mut searcher = Searcher::new(p);
    let mut deepest = Deepest::default();
    while searcher.definite_left > 0 {
        if *steps >= steps_max {
            return Search::GaveUp;
        }
        *steps += 1;
        match searcher.step(steps) {
            Step::Next => {}
            Step::Pushed => {
                if explain && searcher.stack.len() > deepest.order.len() {
                    deepest.order = searcher.stack.iter().map(|f| f.op).collect();
                    deepest.state = searcher.state;
                }
            }
            Step::DeadEnd => {
                if !searcher.backtrack() {
                    return Search::Violation(deepest);
                }
            }
        }
    }
    Search::Linearizable
}

/// The search's position: a configuration and the next candidate to try from it.
struct Searcher<'p> {
    p: &'p Prepared,
    list: EventList,
    unknown: UnknownClasses,
    linearized: Linearized,
    cache: Cache,
    state: State,
    /// The state before the current block of unknown operations; `None` outside one.
    block_start: Option<State>,
    definite_left: usize,
    stack: Vec<Frame>,
    cursor: Cursor,
}

impl<'p> Searcher<'p> {
    fn new(p: &'p Prepared) -> Searcher<'p> {
        let list = EventList::new(p);
        let linearized = Linearized::new(p);
        let cache = Cache::new(&linearized);
        let definite_left = linearized.is_unknown.iter().filter(|&&u| !u).count();
        let cursor = Cursor::Definite(list.nodes[HEAD].next);
        Searcher {
            p,
            list,
            unknown: UnknownClasses::new(p),
            linearized,
            cache,
            state: ABSENT,
            block_start: None,
            definite_left,
            stack: Vec::new(),
            cursor,
        }
    }

    /// Tries the next candidate; `steps` counts the extra work of finding one.
    fn step(&mut self, steps: &mut u64) -> Step {
        match self.cursor {
            Cursor::Definite(entry) => self.step_definite(entry),
            Cursor::Unknown { index, deadline_ns } => self.step_unknown(index, deadline_ns, steps),
        }
    }

    fn step_definite(&mut self, entry: usize) -> Step {
        let node = self.list.nodes[entry];
        if !node.is_call {
            // The first remaining return: no definite call after it may come next, but
            // the unknown operations invoked by then may, if they may start or go on a
            // block.
            if self.block_start.is_none() && !self.some_candidate_unfit() {
                return Step::DeadEnd;
            }
            let deadline_ns = node.time_ns;
            self.cursor = Cursor::Unknown {
                index: 0,
                deadline_ns,
            };
            return Step::Next;
        }
        let effect = self.p.effects[node.op];
        // Inside a block, a definite candidate must need the block.
        let canonical = self
            .block_start
            .is_none_or(|start| effect.apply(start).is_none());
        let resume = Cursor::Definite(node.next);
        if let (true, Some(next_state)) = (canonical, effect.apply(self.state)) {
            if self.try_push(node.op, entry, next_state, resume) {
                return Step::Pushed;
            }
            if effect.is_read_only() {
                // Covered: a fitting read's configuration decides its parent's.
                return Step::DeadEnd;
            }
        }
        self.cursor = resume;
        Step::Next
    }

    fn step_unknown(&mut self, index: usize, deadline_ns: u64, steps: &mut u64) -> Step {
        let in_block = self.block_start.is_some();
        let Some(class) = self.unknown.class(self.state, in_block, index) else {
            return Step::DeadEnd;
        };
        let resume = Cursor::Unknown {
            index: index + 1,
            deadline_ns,
        };
        self.cursor = resume;
        // The class's last-invoked member among the candidates that is still pending.
        let members = &self.unknown.members[class];
        let candidates = members.partition_point(|&op| self.p.invoke_ns[op] <= deadline_ns);
        let mut pending = None;
        for &op in members[..candidates].iter().rev() {
            if !self.linearized.contains(op) {
                pending = Some(op);
                break;
            }
            *steps += 1;
        }
        let Some(op) = pending else {
            return Step::Next;
        };
        let next_state = self.p.effects[op]
            .apply(self.state)
            .expect("the classes worth trying fit the state");
        if self.try_push(op, NONE, next_state, resume) {
            Step::Pushed
        } else {
            Step::Next
        }
    }

    /// Is some definite candidate a get, cas or cas mismatch that does not fit the state?
    fn some_candidate_unfit(&self) -> bool {
        let mut entry = self.list.nodes[HEAD].next;
        while self.list.nodes[entry].is_call {
            let effect = self.p.effects[self.list.nodes[entry].op];
            if !matches!(effect, Effect::Write(_)) && effect.apply(self.state).is_none() {
                return true;
            }
            entry = self.list.nodes[entry].next;
        }
        false
    }

    /// Linearizes `op` (whose call node is `call`, `NONE` if unknown) unless the cache
    /// covers the configuration it leads to; true if it did.
    fn try_push(&mut self, op: usize, call: usize, next_state: State, resume: Cursor) -> bool {
        let block_start = (call == NONE).then(|| self.block_start.unwrap_or(self.state));
        self.linearized.flip(op);
        if !self.cache.insert(next_state, block_start, &self.linearized) {
            self.linearized.flip(op);
            return false;
        }
        self.stack.push(Frame {
            op,
            call,
            resume,
            state: self.state,
            block_start: self.block_start,
        });
        if call != NONE {
            self.definite_left -= 1;
            self.list.lift(call);
        }
        self.state = next_state;
        self.block_start = block_start;
        self.cursor = Cursor::Definite(self.list.nodes[HEAD].next);
        true
    }

    /// Undoes the last linearization and moves past it, and past the configuration before
    /// it too if it was a fitting read (see [`search`]); false if none is left.
    fn backtrack(&mut self) -> bool {
        loop {
            let Some(frame) = self.stack.pop() else {
                return false;
            };
            self.linearized.flip(frame.op);
            if frame.call != NONE {
                self.definite_left += 1;
                self.list.unlift(frame.call);
            }
            self.state = frame.state;
            self.block_start = frame.block_start;
            self.cursor = frame.resume;
            if !self.p.effects[frame.op].is_read_only() {
                return true;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shrinking to a minimal window, and the explanation.

fn violation(key: &[u8], mut ops: Vec<Operation>, budget: &mut Budget) -> Violation {
    let total = ops.len();
    ops.sort_by_key(|op| (op.invoke_ns, op.complete_ns));
    let mut notes = Vec::new();
    let mut window = shortest_failing_prefix(&ops, budget);
    window = remove_greedily(window, budget);
    if budget.exhausted() {
        notes.push("the step budget ran out while shrinking: the window may not be minimal");
    }
    let p = prepare(&window);
    let explanation = match budget.search_prepared(&p, true) {
        Search::Violation(deepest) => explain(&window, &p, &deepest, total),
        // Shrinking only keeps windows that failed, so this is only reachable when the
        // budget ran out during the final search.
        _ => format!(
            "key {}: not linearizable ({} operations); the budget ran out before an explanation",
            show_bytes(key),
            window.len()
        ),
    };
    let mut explanation = explanation;
    for note in notes {
        explanation.push_str(note);
        explanation.push('\n');
    }
    Violation {
        key: key.to_vec(),
        window,
        explanation,
    }
}

/// True if the budget proves `window` not linearizable (a give-up counts as not proven).
fn fails(window: &[Operation], budget: &mut Budget) -> bool {
    !budget.exhausted() && matches!(budget.search(window, false), Search::Violation(_))
}

fn is_read(op: &Operation) -> bool {
    matches!(op.call, Call::Get) || op.ret == Ret::CasMismatch
}

/// The operations invoked by `t_ns`; those still running then become unknown writes, or
/// are dropped if they only read.
fn prefix(ops: &[Operation], t_ns: u64) -> Vec<Operation> {
    let mut window = Vec::new();
    for op in ops.iter().filter(|op| op.invoke_ns <= t_ns) {
        let done = op.ret != Ret::Unknown && op.complete_ns.is_some_and(|c| c <= t_ns);
        if op.ret == Ret::Failed || (!done && is_read(op)) {
            continue;
        }
        let mut op = op.clone();
        if !done {
            op.ret = Ret::Unknown;
            op.complete_ns = None;
        }
        window.push(op);
    }
    window
}

fn shortest_failing_prefix(ops: &[Operation], budget: &mut Budget) -> Vec<Operation> {
    let mut times: Vec<u64> = ops
        .iter()
        .filter(|op| matches!(op.ret, Ret::Ok | Ret::Value(_) | Ret::CasMismatch))
        .filter_map(|op| op.complete_ns)
        .collect();
    times.sort_unstable();
    times.dedup();
    let Some(&last) = times.last() else {
        return ops.to_vec();
    };
    // prefix(last) fails (see the module docs); find the first failing time.
    let (mut lo, mut hi) = (0, times.len() - 1);
    let mut best = prefix(ops, last);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let candidate = prefix(ops, times[mid]);
        if fails(&candidate, budget) {
            hi = mid;
            best = candidate;
        } else {
            lo = mid + 1;
        }
    }
    best
}

/// May these operations be removed from the window without inventing a violation? Reads
/// always. Writes only if every remaining operation that could see the register after one
/// of them (one that observes a value it writes, or any cas mismatch) completed before it
/// was invoked (see the module docs).
fn removal_sound(remaining: &[Operation], removed: &[Operation]) -> bool {
    removed.iter().filter(|op| !is_read(op)).all(|write| {
        let value = match &write.call {
            Call::Put(value) | Call::Cas { new: value, .. } => Some(value),
            Call::Delete => None,
            Call::Get => unreachable!("a get is a read"),
        };
        let could_see_it = |op: &Operation| match (&op.call, &op.ret) {
            (_, Ret::CasMismatch) => true,
            (Call::Get, Ret::Value(seen)) => seen.as_ref() == value,
            (Call::Cas { expected, .. }, _) => expected.as_ref() == value,
            _ => false,
        };
        remaining
            .iter()
            .filter(|op| could_see_it(op))
            .all(|op| op.ret != Ret::Unknown && op.complete_ns.is_some_and(|c| c < write.invoke_ns))
    })
}

/// Greedy removal (see the module docs): reads first, which may always go and usually
/// go in a few large chunks, then any operation.
fn remove_greedily(window: Vec<Operation>, budget: &mut Budget) -> Vec<Operation> {
    let window = remove_chunks(window, budget, is_read);
    remove_chunks(window, budget, |_| true)
}

/// Removes the operations `removable` selects, in chunks of halving size down to one at
/// a time, wherever the removal is sound and the window still fails.
fn remove_chunks(
    mut window: Vec<Operation>,
    budget: &mut Budget,
    removable: fn(&Operation) -> bool,
) -> Vec<Operation> {
    let mut chunk = (window.iter().filter(|op| removable(op)).count() / 2).max(1);
    loop {
        let mut changed = false;
        // Chunks are counted among the removable operations.
        let mut start = 0;
        while !budget.exhausted() {
            let eligible: Vec<usize> = (0..window.len())
                .filter(|&i| removable(&window[i]))
                .collect();
            if start >= eligible.len() {
                break;
            }
            let chunk_ops = &eligible[start..(start + chunk).min(eligible.len())];
            let (mut candidate, mut removed) = (Vec::new(), Vec::new());
            for (i, op) in window.iter().enumerate() {
                let target = if chunk_ops.binary_search(&i).is_ok() {
                    &mut removed
                } else {
                    &mut candidate
                };
                target.push(op.clone());
            }
            if removal_sound(&candidate, &removed) && fails(&candidate, budget) {
                window = candidate;
                changed = true;
            } else {
                start += chunk_ops.len();
            }
        }
        if budget.exhausted() || (chunk == 1 && !changed) {
            return window;
        }
        chunk = (chunk / 2).max(1);
    }
}

/// The register's value after the operations of `order` (prepared indices), in the
/// window's own values: the search's states merge the values no answer compares with.
fn value_after(window: &[Operation], p: &Prepared, order: &[usize]) -> Option<Vec<u8>> {
    let mut value = None;
    for &i in order {
        let op = &window[p.origin[i]];
        match (&op.call, &op.ret) {
            (Call::Put(written) | Call::Cas { new: written, .. }, Ret::Ok | Ret::Unknown) => {
                value = Some(written.clone());
            }
            (Call::Delete, _) => value = None,
            _ => {}
        }
    }
    value
}

fn explain(window: &[Operation], p: &Prepared, deepest: &Deepest, total: usize) -> String {
    let state = show_value(&value_after(window, p, &deepest.order));
    let key = window
        .first()
        .map(|op| show_bytes(&op.key))
        .unwrap_or_default();
    let mut out = format!(
        "key {key}: no linearization of these {} operations exists (a minimal window of the \
         key's {total}).\n",
        window.len()
    );
    let placed: Vec<String> = deepest
        .order
        .iter()
        .map(|&i| format!("#{}", p.origin[i]))
        .collect();
    out.push_str(&format!(
        "The longest valid order places {}: [{}], leaving the register {state}.\n",
        placed.len(),
        placed.join(", "),
    ));
    // The earliest return among definite operations not placed: nothing invoked after it
    // may come next.
    let unplaced: Vec<usize> = (0..p.effects.len())
        .filter(|i| !deepest.order.contains(i))
        .collect();
    let deadline = unplaced
        .iter()
        .filter_map(|&i| p.complete_ns[i].map(|c| (c, i)))
        .min();
    out.push_str("None of the others can come next:\n");
    for &i in &unplaced {
        let reason = match deadline {
            Some((deadline_ns, first)) if p.invoke_ns[i] > deadline_ns => format!(
                "must follow #{}, which returned at {deadline_ns} before this was invoked",
                p.origin[first]
            ),
            _ => match p.effects[i].apply(deepest.state) {
                None => format!("its answer needs another state than {state}"),
                Some(_) if p.complete_ns[i].is_none() => {
                    "unknown: placing it or leaving it out both lead to a dead end".to_string()
                }
                Some(_) => "placing it next leads to a dead end".to_string(),
            },
        };
        out.push_str(&format!(
            "  #{} {}: {reason}\n",
            p.origin[i], window[p.origin[i]]
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Display and reports.

/// A byte string for people: quoted if it is printable UTF-8, else `0x` and hex.
fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

fn show_value(value: &Option<Vec<u8>>) -> String {
    value.as_deref().map_or("absent".to_string(), show_bytes)
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Put(value) => write!(f, "put {}", show_bytes(value)),
            Call::Delete => write!(f, "delete"),
            Call::Get => write!(f, "get"),
            Call::Cas { expected, new } => {
                write!(f, "cas {} -> {}", show_value(expected), show_bytes(new))
            }
        }
    }
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ret::Ok => write!(f, "ok"),
            Ret::Value(value) => write!(f, "{}", show_value(value)),
            Ret::CasMismatch => write!(f, "mismatch"),
            Ret::Failed => write!(f, "failed"),
            Ret::Unknown => write!(f, "unknown"),
        }
    }
}

/// One line: `c1 key "k" put "v" => ok [100, 250]`; an unknown ends at `inf`.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "c{} key {} {} => {} [{}, ",
            self.client,
            show_bytes(&self.key),
            self.call,
            self.ret,
            self.invoke_ns
        )?;
        match (&self.ret, self.complete_ns) {
            (Ret::Unknown, _) | (_, None) => write!(f, "inf]"),
            (_, Some(complete_ns)) => write!(f, "{complete_ns}]"),
        }
    }
}

fn json_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("{{\"hex\":\"{hex}\"}}")
        }
    }
}

fn json_value(value: &Option<Vec<u8>>) -> String {
    value.as_deref().map_or("null".to_string(), json_bytes)
}

/// One JSON object per operation. Byte strings are JSON strings when they are UTF-8,
/// else `{"hex": "..."}`; an absent value is `null`.
fn json_line(op: &Operation) -> String {
    let call = match &op.call {
        Call::Put(value) => format!("\"call\":\"put\",\"value\":{}", json_bytes(value)),
        Call::Delete => "\"call\":\"delete\"".to_string(),
        Call::Get => "\"call\":\"get\"".to_string(),
        Call::Cas { expected, new } => format!(
            "\"call\":\"cas\",\"expected\":{},\"new\":{}",
            json_value(expected),
            json_bytes(new)
        ),
    };
    let ret = match &op.ret {
        Ret::Ok => "\"ret\":\"ok\"".to_string(),
        Ret::Value(value) => format!("\"ret\":\"value\",\"ret_value\":{}", json_value(value)),
        Ret::CasMismatch => "\"ret\":\"cas_mismatch\"".to_string(),
        Ret::Failed => "\"ret\":\"failed\"".to_string(),
        Ret::Unknown => "\"ret\":\"unknown\"".to_string(),
    };
    let complete = op.complete_ns.map_or("null".to_string(), |c| c.to_string());
    format!(
        "{{\"client\":{},\"key\":{},{call},\"invoke_ns\":{},\"complete_ns\":{complete},{ret}}}",
        op.client,
        json_bytes(&op.key),
        op.invoke_ns
    )
}

/// Writes the violation to `dir` (created if missing) and returns the path of the
/// human-readable report `linearizability-<key in hex>.txt`: the explanation, the window,
/// then the whole history, one operation a line, sorted by invocation. Beside it,
/// `….window.jsonl` and `….history.jsonl` hold the same operations as JSON lines.
pub fn write_report(dir: &Path, history: &[Operation], v: &Violation) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let key_hex: String = v.key.iter().map(|b| format!("{b:02x}")).collect();
    let stem = format!("linearizability-{key_hex}");
    let mut sorted: Vec<&Operation> = history.iter().collect();
    sorted.sort_by_key(|op| (op.invoke_ns, op.complete_ns));

    let path = dir.join(format!("{stem}.txt"));
    let mut text = io::BufWriter::new(fs::File::create(&path)?);
    writeln!(text, "{}", v.explanation)?;
    writeln!(text, "Window ({} operations):", v.window.len())?;
    for (i, op) in v.window.iter().enumerate() {
        writeln!(text, "  #{i} {op}")?;
    }
    writeln!(text, "\nHistory ({} operations, all keys):", history.len())?;
    for op in &sorted {
        writeln!(text, "  {op}")?;
    }
    text.flush()?;

    let mut window =
        io::BufWriter::new(fs::File::create(dir.join(format!("{stem}.window.jsonl")))?);
    for op in &v.window {
        writeln!(window, "{}", json_line(op))?;
    }
    window.flush()?;
    let mut all = io::BufWriter::new(fs::File::create(dir.join(format!("{stem}.history.jsonl")))?);
    for op in sorted {
        writeln!(all, "{}", json_line(op))?;
    }
    all.flush()?;
    Ok(path)
}
