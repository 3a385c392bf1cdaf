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
//! Knossos: the calls and returns of one key's operations, sorted by time, form a doubly
//! linked list; a depth-first search repeatedly picks a call that comes before the first
//! remaining return (a "minimal" operation), applies it to the model if the model agrees
//! with its answer, and lifts its call and return out of the list. When a return reaches
//! the head of the list, that operation should have been linearized already, so the search
//! backtracks. A cache of (set of linearized operations as a bitset, model state) prunes
//! configurations already explored. Unknown operations have no return event (their return
//! is at +infinity), so they never force a backtrack and the search succeeds once every
//! operation with a definite answer is linearized: an unknown write left out "never
//! happened".
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
//! A search step is one visit of a list entry (trying a call or backtracking at a return).
//! One search (one key, or one candidate window while shrinking) stops after
//! [`Limits::search_steps_max`] steps (default [`SEARCH_STEPS_MAX_DEFAULT`], 1,000,000) and
//! the whole [`check`] after [`Limits::total_steps_max`] steps (default
//! [`TOTAL_STEPS_MAX_DEFAULT`], 20,000,000); then the outcome is [`Outcome::GaveUp`]. The
//! cache holds at most one entry per step, each a bitset of the key's operations, so one
//! search on a key with 2,000 operations holds at most about 300 MB. Steps are counted
//! rather than time so that an outcome never depends on the machine's speed; a step costs
//! about 0.2 µs in the test profile, so the defaults bound a check to a few seconds.
//!
//! The search's known weak spot, shared with porcupine and Knossos: refuting a history
//! means exploring every configuration before the violation, and each unknown write still
//! pending (one the simplifications above could not settle) doubles them. A violation late
//! in a long history with dozens of such writes therefore ends in [`Outcome::GaveUp`]
//! rather than a verdict; a linearizable one is still accepted quickly, because the search
//! stops at the first order that works. Shorter histories per check (per run phase, say)
//! avoid it.
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
//! 2. Greedy removal, chunks first then single operations, while the window still fails.
//!    Reads (gets, cas mismatches) may always be removed. A set of writes may be removed
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
#[derive(Clone, Copy, Debug)]
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
        let state = State::try_from(values.len() - 1).expect("fewer than 2^32 values a key");
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
    p
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

/// A node of the event list. Node 0 is the head sentinel.
#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    /// The prepared operation this event belongs to.
    op: usize,
    is_call: bool,
    /// For a call, its return node (`NONE` for an unknown operation).
    return_node: usize,
}

struct EventList {
    nodes: Vec<Node>,
}

impl EventList {
    fn new(p: &Prepared) -> EventList {
        // (time, return after call at equal times, op) — calls first makes touching
        // intervals concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for op in 0..p.effects.len() {
            events.push((p.invoke_ns[op], false, op));
            if let Some(complete_ns) = p.complete_ns[op] {
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
        };
        let mut nodes = vec![head];
        let mut call_node = vec![NONE; p.effects.len()];
        for (i, &(_, is_return, op)) in events.iter().enumerate() {
            let index = i + 1;
            nodes.push(Node {
                prev: index - 1,
                next: if i + 1 < events.len() {
                    index + 1
                } else {
                    NONE
                },
                op,
                is_call: !is_return,
                return_node: NONE,
            });
            if is_return {
                nodes[call_node[op]].return_node = index;
            } else {
                call_node[op] = index;
            }
        }
        nodes[0].next = if events.is_empty() { NONE } else { 1 };
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
        let ret = self.nodes[call].return_node;
        if ret != NONE {
            self.unlink(ret);
        }
    }

    /// Undoes [`EventList::lift`] (in reverse order, so the links are exact).
    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].return_node;
        if ret != NONE {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// The memo of visited configurations: (linearized set, state), keyed by a Zobrist hash
/// of the set mixed with the state.
#[derive(Default)]
struct Cache {
    entries: HashMap<u64, Vec<CacheEntry>>,
}

/// A state and a linearized set.
type CacheEntry = (State, Box<[u64]>);

impl Cache {
    /// Inserts; false if the configuration was already there.
    fn insert(&mut self, hash: u64, state: State, bits: &[u64]) -> bool {
        let bucket = self.entries.entry(hash).or_default();
        if bucket.iter().any(|(s, b)| *s == state && **b == *bits) {
            return false;
        }
        bucket.push((state, bits.into()));
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

/// Flips operation `op` in the linearized set and its Zobrist hash.
fn flip(bits: &mut [u64], set_hash: &mut u64, zobrist: &[u64], op: usize) {
    bits[op / 64] ^= 1 << (op % 64);
    *set_hash ^= zobrist[op];
}

fn config_hash(set_hash: u64, state: State) -> u64 {
    set_hash ^ splitmix64(u64::from(state) ^ 0x5bd1_e995)
}

/// The Wing–Gong–Lowe depth-first search over one key's prepared operations.
///
/// Candidates are tried in list order, so an unknown write is tried as soon as it is
/// invoked: a write that did happen is usually needed by the next reads.
fn search(p: &Prepared, steps_max: u64, steps: &mut u64, explain: bool) -> Search {
    let n = p.effects.len();
    let mut list = EventList::new(p);
    let zobrist: Vec<u64> = (0..n as u64).map(splitmix64).collect();
    let mut bits = vec![0u64; n.div_ceil(64)];
    let mut set_hash = 0u64;
    let mut cache = Cache::default();
    let mut state = ABSENT;
    let is_unknown = |op: usize| p.complete_ns[op].is_none();
    let mut definite_left = (0..n).filter(|&op| !is_unknown(op)).count();
    // (call node, state before it)
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut deepest = Deepest::default();
    let mut entry = list.nodes[0].next;
    while definite_left > 0 {
        if *steps >= steps_max {
            return Search::GaveUp;
        }
        *steps += 1;
        // The list always holds a return while a definite operation is left.
        assert!(
            entry != NONE,
            "linearizability search ran off the event list"
        );
        let node = list.nodes[entry];
        if node.is_call {
            if let Some(next_state) = p.effects[node.op].apply(state) {
                flip(&mut bits, &mut set_hash, &zobrist, node.op);
                if cache.insert(config_hash(set_hash, next_state), next_state, &bits) {
                    stack.push((entry, state));
                    if !is_unknown(node.op) {
                        definite_left -= 1;
                    }
                    state = next_state;
                    list.lift(entry);
                    if explain && stack.len() > deepest.order.len() {
                        deepest.order = stack.iter().map(|&(e, _)| list.nodes[e].op).collect();
                        deepest.state = state;
                    }
                    entry = list.nodes[0].next;
                    continue;
                }
                flip(&mut bits, &mut set_hash, &zobrist, node.op);
            }
            entry = node.next;
        } else {
            // A return at the front: its operation had to be linearized by now.
            let Some((call, previous_state)) = stack.pop() else {
                return Search::Violation(deepest);
            };
            let op = list.nodes[call].op;
            flip(&mut bits, &mut set_hash, &zobrist, op);
            state = previous_state;
            list.unlift(call);
            if !is_unknown(op) {
                definite_left += 1;
            }
            entry = list.nodes[call].next;
        }
    }
    Search::Linearizable
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

fn remove_greedily(mut window: Vec<Operation>, budget: &mut Budget) -> Vec<Operation> {
    let mut chunk = (window.len() / 2).max(1);
    loop {
        let mut changed = false;
        let mut start = 0;
        while start < window.len() && !budget.exhausted() {
            let end = (start + chunk).min(window.len());
            let mut candidate = window[..start].to_vec();
            candidate.extend_from_slice(&window[end..]);
            if removal_sound(&candidate, &window[start..end]) && fails(&candidate, budget) {
                window = candidate;
                changed = true;
            } else {
                start = end;
            }
        }
        if budget.exhausted() || (chunk == 1 && !changed) {
            return window;
        }
        chunk = (chunk / 2).max(1);
    }
}

fn explain(window: &[Operation], p: &Prepared, deepest: &Deepest, total: usize) -> String {
    let show_state = |state: State| {
        if state == ABSENT {
            "absent".to_string()
        } else {
            show_bytes(&p.values[state as usize])
        }
    };
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
        "The longest valid order places {}: [{}], leaving the register {}.\n",
        placed.len(),
        placed.join(", "),
        show_state(deepest.state)
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
                None => format!(
                    "its answer needs another state than {}",
                    show_state(deepest.state)
                ),
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
