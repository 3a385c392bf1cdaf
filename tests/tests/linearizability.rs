//! The linearizability checker's own tests: hand-written known-good histories must pass,
//! known-bad ones (stale read, lost write, cas applied twice, a value never written, a
//! non-monotonic read) must be rejected with a small window holding the offending
//! operations, histories generated from a real sequential execution must pass and their
//! stale mutations must fail, and a history of 10,000 operations must check in well under
//! the budget. Jepsen's etcd histories (`tests/data/jepsen`) must be decided as porcupine
//! decides them, a search cut by the limits must be reported as GaveUp, and on small random
//! histories the search must agree with a naive one that prunes nothing. Randomized tests
//! take `LIN_SEED` (default 1) and `LIN_SEEDS` (default 20).

use raftd_tests::linearizability::{
    check, check_with, write_report, Call, Limits, Operation, Outcome, Ret, Violation,
    SEARCH_STEPS_MAX_DEFAULT, TOTAL_STEPS_MAX_DEFAULT,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// Builders for hand-written histories on key "k".

fn op(client: u64, call: Call, invoke_ns: u64, complete_ns: u64, ret: Ret) -> Operation {
    Operation {
        client,
        key: b"k".to_vec(),
        call,
        invoke_ns,
        complete_ns: Some(complete_ns),
        ret,
    }
}

fn put(client: u64, value: &str, invoke_ns: u64, complete_ns: u64) -> Operation {
    op(
        client,
        Call::Put(value.into()),
        invoke_ns,
        complete_ns,
        Ret::Ok,
    )
}

fn delete(client: u64, invoke_ns: u64, complete_ns: u64) -> Operation {
    op(client, Call::Delete, invoke_ns, complete_ns, Ret::Ok)
}

fn get(client: u64, value: Option<&str>, invoke_ns: u64, complete_ns: u64) -> Operation {
    let ret = Ret::Value(value.map(Into::into));
    op(client, Call::Get, invoke_ns, complete_ns, ret)
}

fn cas(
    client: u64,
    expected: Option<&str>,
    new: &str,
    applied: bool,
    invoke_ns: u64,
    complete_ns: u64,
) -> Operation {
    let call = Call::Cas {
        expected: expected.map(Into::into),
        new: new.into(),
    };
    let ret = if applied { Ret::Ok } else { Ret::CasMismatch };
    op(client, call, invoke_ns, complete_ns, ret)
}

fn timed_out(mut op: Operation) -> Operation {
    op.ret = Ret::Unknown;
    op.complete_ns = None;
    op
}

fn failed(mut op: Operation) -> Operation {
    op.ret = Ret::Failed;
    op
}

fn assert_linearizable(history: &[Operation]) {
    match check(history) {
        Outcome::Linearizable => {}
        other => panic!("expected linearizable, got {other:#?}"),
    }
}

/// Checks that `history` is rejected with a window of `window_len` operations holding
/// every operation of `offending`, and returns the violation.
fn assert_violation(
    history: &[Operation],
    window_len: usize,
    offending: &[&Operation],
) -> Violation {
    let v = match check(history) {
        Outcome::Violation(v) => v,
        other => panic!("expected a violation, got {other:?}"),
    };
    println!("{}", v.explanation);
    assert_eq!(v.key, b"k".to_vec());
    assert_eq!(v.window.len(), window_len, "window:\n{}", show(&v.window));
    for op in offending {
        assert!(
            holds(&v.window, op),
            "window lacks {op}:\n{}",
            show(&v.window)
        );
    }
    v
}

/// Does the window hold this operation? Operations still running at the window's end
/// appear there as unknown, so the answer is not compared.
fn holds(window: &[Operation], op: &Operation) -> bool {
    window.iter().any(|w| {
        (w.client, &w.key, &w.call, w.invoke_ns) == (op.client, &op.key, &op.call, op.invoke_ns)
    })
}

fn show(window: &[Operation]) -> String {
    window.iter().map(|op| format!("  {op}\n")).collect()
}

/// Checks that the violation's window holds `op` and has at most 8 operations; `context`
/// heads the failure message.
fn assert_small_window_holds(v: &Violation, op: &Operation, context: &str) {
    assert!(
        holds(&v.window, op),
        "{context}: window lacks {op}:\n{}",
        show(&v.window)
    );
    assert!(
        v.window.len() <= 8,
        "{context}: window of {}:\n{}",
        v.window.len(),
        show(&v.window)
    );
}

// ---------------------------------------------------------------------------------------
// Known-good histories.

#[test]
fn sequential_history_passes() {
    // Proves the model of a register: a strictly sequential history of every call kind,
    // whose answers follow the register's rules, is accepted.
    assert_linearizable(&[
        get(1, None, 0, 10),
        put(1, "a", 20, 30),
        get(2, Some("a"), 40, 50),
        cas(1, Some("a"), "b", true, 60, 70),
        cas(2, Some("a"), "c", false, 80, 90),
        get(2, Some("b"), 100, 110),
        delete(1, 120, 130),
        get(1, None, 140, 150),
        cas(2, None, "d", true, 160, 170),
        get(1, Some("d"), 180, 190),
    ]);
}

#[test]
fn concurrent_put_and_get_pass_in_either_order() {
    // Proves the checker explores orders: a get overlapping a put may see the value
    // before or after it, and two overlapping puts may land in either order.
    let before = [
        put(1, "a", 0, 10),
        put(1, "b", 20, 60),
        get(2, Some("a"), 30, 40),
    ];
    let after = [
        put(1, "a", 0, 10),
        put(1, "b", 20, 60),
        get(2, Some("b"), 30, 40),
    ];
    assert_linearizable(&before);
    assert_linearizable(&after);
    for last in ["x", "y"] {
        assert_linearizable(&[
            put(1, "x", 0, 50),
            put(2, "y", 10, 40),
            get(3, Some(last), 60, 70),
        ]);
    }
}

#[test]
fn touching_intervals_count_as_concurrent() {
    // Proves the documented tie rule: an operation invoked at the instant another
    // completes may be ordered before it, so clock granularity never fabricates a violation.
    assert_linearizable(&[put(1, "a", 0, 10), get(2, None, 10, 20)]);
}

#[test]
fn cas_chains_pass() {
    // Proves cas is modelled as an atomic read-modify-write: of concurrent cas calls on
    // the same expected value exactly one succeeds, and chains of cas that each expect
    // the previous one's value are ordered by what they expected, not by invocation.
    assert_linearizable(&[
        put(1, "0", 0, 10),
        cas(1, Some("0"), "1", true, 20, 100),
        cas(2, Some("0"), "2", false, 25, 90),
        cas(3, Some("1"), "3", true, 30, 110),
        cas(4, Some("3"), "4", true, 35, 120),
        get(5, Some("4"), 130, 140),
    ]);
}

#[test]
fn timed_out_write_that_applied_passes() {
    // Proves an unknown write may take effect after invocation, even long after the
    // client gave up: a later read sees it.
    assert_linearizable(&[
        put(1, "a", 0, 10),
        timed_out(put(1, "b", 20, 0)),
        get(2, Some("a"), 30, 40),
        get(2, Some("b"), 1_000, 1_010),
        get(3, Some("b"), 2_000, 2_010),
    ]);
}

#[test]
fn timed_out_write_that_never_applied_passes() {
    // Proves an unknown write may never take effect: no read ever sees it.
    assert_linearizable(&[
        put(1, "a", 0, 10),
        timed_out(put(1, "b", 20, 0)),
        timed_out(delete(2, 25, 0)),
        get(2, Some("a"), 30, 40),
        get(2, Some("a"), 1_000, 1_010),
        timed_out(cas(3, Some("a"), "c", true, 1_100, 0)),
        get(2, Some("a"), 2_000, 2_010),
    ]);
}

#[test]
fn unknown_cas_needed_by_a_mismatch_passes() {
    // Proves an unknown write nobody reads is still kept when a cas mismatch may depend on
    // it: the mismatch only fits if the timed-out put of "b" happened.
    assert_linearizable(&[
        put(1, "a", 0, 10),
        timed_out(put(2, "b", 20, 0)),
        cas(3, Some("a"), "c", false, 30, 40),
    ]);
}

#[test]
fn deletes_pass() {
    // Proves delete makes the key absent for gets and for cas expecting absence, and
    // that a get overlapping a delete may see either side.
    assert_linearizable(&[
        put(1, "a", 0, 10),
        delete(1, 20, 60),
        get(2, Some("a"), 25, 30),
        get(3, None, 40, 50),
        cas(2, None, "b", true, 70, 80),
        delete(3, 90, 100),
        delete(1, 110, 120),
        get(2, None, 130, 140),
    ]);
}

#[test]
fn failed_and_unknown_reads_are_dropped() {
    // Proves failed operations never happened (a read of a failed put's value is a
    // violation) and unknown gets say nothing.
    assert_linearizable(&[
        failed(put(1, "a", 0, 10)),
        get(2, None, 20, 30),
        timed_out(get(3, None, 40, 0)),
    ]);
    let read = get(2, Some("a"), 20, 30);
    assert_violation(&[failed(put(1, "a", 0, 10)), read.clone()], 1, &[&read]);
}

#[test]
fn keys_are_checked_independently() {
    // Proves the per-key partition: interleaved keys that are each linearizable pass,
    // and a violation on one key names that key and keeps other keys out of its window.
    let on = |key: &str, mut op: Operation| {
        op.key = key.into();
        op
    };
    let good = [
        on("x", put(1, "a", 0, 10)),
        on("y", put(2, "a", 5, 15)),
        on("x", get(1, Some("a"), 20, 30)),
        on("y", delete(2, 20, 30)),
        on("y", get(3, None, 40, 50)),
        on("x", get(3, Some("a"), 40, 50)),
    ];
    assert_linearizable(&good);
    let mut bad = good.to_vec();
    bad.push(on("y", get(1, Some("a"), 60, 70)));
    let Outcome::Violation(v) = check(&bad) else {
        panic!("the stale read on y must be found");
    };
    assert_eq!(v.key, b"y".to_vec());
    assert!(v.window.iter().all(|op| op.key == b"y"));
}

// ---------------------------------------------------------------------------------------
// Known-bad histories.

#[test]
fn stale_read_is_rejected() {
    // Proves a read that returns an older value after a newer write completed before the
    // read began is a violation, shrunk to those three operations despite unrelated ones.
    let (a, b, stale) = (
        put(1, "a", 0, 10),
        put(1, "b", 20, 30),
        get(2, Some("a"), 40, 50),
    );
    let history = [
        get(3, None, 0, 5),
        a.clone(),
        get(3, Some("a"), 12, 15),
        b.clone(),
        get(3, Some("b"), 32, 35),
        stale.clone(),
        put(3, "c", 60, 70),
        get(3, Some("c"), 80, 90),
    ];
    let v = assert_violation(&history, 3, &[&a, &b, &stale]);
    assert!(
        v.explanation.contains("needs another state"),
        "{}",
        v.explanation
    );
}

#[test]
fn lost_write_is_rejected() {
    // Proves an acknowledged put that is then overwritten as if it never happened (a cas
    // expecting the value before it succeeds) is a violation, shrunk to the three writes.
    let (a, b, lost) = (
        put(1, "a", 0, 10),
        put(2, "b", 20, 30),
        cas(3, Some("a"), "c", true, 40, 50),
    );
    let history = [
        a.clone(),
        get(1, Some("a"), 12, 18),
        b.clone(),
        lost.clone(),
        get(1, Some("c"), 60, 70),
        get(2, Some("c"), 65, 75),
    ];
    assert_violation(&history, 3, &[&a, &b, &lost]);
}

#[test]
fn lost_write_seen_as_absent_is_rejected() {
    // Proves an acknowledged put followed by reads that never see it is a violation.
    let (a, absent) = (put(1, "a", 0, 10), get(2, None, 20, 30));
    assert_violation(
        &[absent.clone(), a.clone(), absent.clone()],
        2,
        &[&a, &absent],
    );
}

#[test]
fn cas_applied_twice_is_rejected() {
    // Proves two concurrent cas calls expecting the same value cannot both succeed.
    let (a, first, second) = (
        put(1, "a", 0, 10),
        cas(2, Some("a"), "b", true, 20, 40),
        cas(3, Some("a"), "c", true, 25, 45),
    );
    let history = [
        a.clone(),
        first.clone(),
        second.clone(),
        get(1, Some("c"), 50, 60),
    ];
    assert_violation(&history, 3, &[&a, &first, &second]);
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    // Proves a read of a value nobody wrote is a violation, and that the window is that
    // read alone (the puts it did not observe are removed).
    let ghost = get(2, Some("ghost"), 40, 50);
    let history = [put(1, "a", 0, 10), ghost.clone(), put(1, "b", 60, 70)];
    let v = assert_violation(&history, 1, &[&ghost]);
    assert!(v.explanation.contains("absent"), "{}", v.explanation);
}

#[test]
fn non_monotonic_reads_are_rejected() {
    // Proves that while a write is in flight, once a read has seen the new value a later
    // read may not see the old one; all four operations are needed to show it.
    let (a, b, new, old) = (
        put(1, "a", 0, 10),
        put(1, "b", 20, 200),
        get(2, Some("b"), 30, 40),
        get(3, Some("a"), 50, 60),
    );
    let history = [a.clone(), b.clone(), new.clone(), old.clone()];
    assert_violation(&history, 4, &[&a, &b, &new, &old]);
}

#[test]
fn unknown_write_cannot_explain_an_earlier_read() {
    // Proves an unknown write takes effect only after its invocation: a read that
    // completed before the write was invoked cannot have seen it, so the window is the
    // read alone (the shortest failing prefix ends before the write began).
    let read = get(1, Some("a"), 0, 10);
    let late = timed_out(put(2, "a", 20, 0));
    assert_violation(&[read.clone(), late.clone()], 1, &[&read]);
}

#[test]
#[should_panic(expected = "the answer does not fit the call")]
fn malformed_history_panics() {
    // Proves a history the recorder could not have produced (a put answered with a
    // value) is reported as the recorder's bug rather than judged.
    check(&[op(1, Call::Put(b"a".to_vec()), 0, 10, Ret::Value(None))]);
}

#[test]
fn report_holds_the_window_and_the_history() {
    // Proves write_report writes a readable report with the explanation, the window and
    // every operation of the history, plus one JSON line per operation.
    let history = [
        put(1, "a", 0, 10),
        put(1, "b", 20, 30),
        get(2, Some("a"), 40, 50),
    ];
    let Outcome::Violation(v) = check(&history) else {
        panic!("a stale read must be found");
    };
    let dir = std::env::temp_dir().join(format!("raftd-lin-report-{}", std::process::id()));
    let path = write_report(&dir, &history, &v).expect("report written");
    let text = std::fs::read_to_string(&path).expect("report readable");
    assert!(text.contains(&v.explanation));
    assert!(text.contains("Window (3 operations)"));
    assert!(text.contains(r#"c2 key "k" get => "a" [40, 50]"#), "{text}");
    let lines = std::fs::read_to_string(path.with_extension("history.jsonl")).expect("jsonl");
    assert_eq!(lines.lines().count(), history.len());
    assert!(
        lines.contains(
            r#""call":"get","invoke_ns":40,"complete_ns":50,"ret":"value","ret_value":"a""#
        ),
        "{lines}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn gives_up_when_the_budget_runs_out() {
    // Proves the bound: a budget too small for the history yields GaveUp, not a verdict.
    let history: Vec<Operation> = (0..100)
        .map(|i| put(1, &i.to_string(), i * 10, i * 10 + 5))
        .collect();
    let limits = Limits {
        search_steps_max: 50,
        total_steps_max: 50,
    };
    assert!(matches!(check_with(&history, &limits), Outcome::GaveUp(_)));
    assert_linearizable(&history);
}

// ---------------------------------------------------------------------------------------
// Randomized histories from a real sequential execution.

/// A workload recorded against a sequential register per key: each client runs one
/// operation at a time; each operation takes effect at a random instant inside its
/// interval, in that order. Values are unique, so a stale answer is unambiguous.
fn generate(
    seed: u64,
    clients: u64,
    ops_per_client: u64,
    keys: u64,
    timeout_probability: f64,
) -> Vec<Operation> {
    let mut rng = SmallRng::seed_from_u64(seed);
    // (effect instant, client, invoke, complete, key, timed out, applied if timed out)
    let mut slots = Vec::new();
    for client in 0..clients {
        let mut t = rng.gen_range(0..100u64);
        for _ in 0..ops_per_client {
            let point = t + rng.gen_range(1..100);
            let complete = point + rng.gen_range(0..100);
            let key = rng.gen_range(0..keys);
            let timed_out = rng.gen_bool(timeout_probability);
            slots.push((
                point,
                client,
                t,
                complete,
                key,
                timed_out,
                rng.gen_bool(0.5),
            ));
            t = complete + rng.gen_range(0..30);
        }
    }
    slots.sort_unstable();
    let mut registers: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
    let mut written: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    let mut history = Vec::new();
    for (n, (_, client, invoke_ns, complete_ns, key, timed_out, applied)) in
        slots.into_iter().enumerate()
    {
        let register = registers.entry(key).or_default();
        let values = written.entry(key).or_default();
        let fresh = format!("c{client}-{n}").into_bytes();
        let roll = rng.gen_range(0..100);
        let call = match roll {
            0..=29 => Call::Put(fresh.clone()),
            30..=69 => Call::Get,
            70..=89 => {
                // Half the time expect the current value, so many cas calls succeed.
                let expected = if rng.gen_bool(0.5) || values.is_empty() {
                    register.clone()
                } else {
                    Some(values[rng.gen_range(0..values.len())].clone())
                };
                Call::Cas {
                    expected,
                    new: fresh.clone(),
                }
            }
            _ => Call::Delete,
        };
        let takes_effect = !timed_out || applied;
        let ret = match &call {
            Call::Get => Ret::Value(register.clone()),
            Call::Cas { expected, new } if expected == register => {
                if takes_effect {
                    *register = Some(new.clone());
                }
                Ret::Ok
            }
            Call::Cas { .. } => Ret::CasMismatch,
            Call::Put(value) => {
                if takes_effect {
                    *register = Some(value.clone());
                }
                Ret::Ok
            }
            Call::Delete => {
                if takes_effect {
                    *register = None;
                }
                Ret::Ok
            }
        };
        if let Call::Put(value) | Call::Cas { new: value, .. } = &call {
            values.push(value.clone());
        }
        let (ret, complete_ns) = if timed_out {
            (Ret::Unknown, None)
        } else {
            (ret, Some(complete_ns))
        };
        history.push(Operation {
            client,
            key: format!("key{key}").into_bytes(),
            call,
            invoke_ns,
            complete_ns,
            ret,
        });
    }
    history
}

/// A definite write's value, if it sets one (put or successful cas).
fn set_value(op: &Operation) -> Option<&Vec<u8>> {
    match (&op.call, &op.ret) {
        (Call::Put(value) | Call::Cas { new: value, .. }, Ret::Ok) => Some(value),
        _ => None,
    }
}

/// Makes one get clearly stale: it returns a value W wrote although another definite
/// write began after W completed and finished before the get began. Returns the index
/// of the mutated get, or `None` if the history has no such triple.
fn make_stale_read(history: &mut [Operation]) -> Option<usize> {
    let definite_write = |op: &Operation| op.ret == Ret::Ok;
    for (r, read) in history.iter().enumerate().rev() {
        if read.call != Call::Get || !matches!(read.ret, Ret::Value(_)) {
            continue;
        }
        let same_key = |op: &&Operation| op.key == read.key;
        let before_read = |op: &&Operation| op.complete_ns.is_some_and(|c| c < read.invoke_ns);
        for w in history.iter().filter(same_key).filter(before_read) {
            let Some(old) = set_value(w) else { continue };
            let overwritten = history
                .iter()
                .filter(same_key)
                .filter(before_read)
                .any(|w2| definite_write(w2) && w2.invoke_ns > w.complete_ns.expect("definite"));
            if overwritten && read.ret != Ret::Value(Some(old.clone())) {
                let old = old.clone();
                history[r].ret = Ret::Value(Some(old));
                return Some(r);
            }
        }
    }
    None
}

fn seeds() -> std::ops::Range<u64> {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let first = env("LIN_SEED", 1);
    first..first + env("LIN_SEEDS", 20)
}

fn replay(seed: u64, test: &str) -> String {
    format!(
        "seed {seed}; replay: LIN_SEED={seed} LIN_SEEDS=1 cargo test -p raftd-tests \
         --test linearizability {test}"
    )
}

#[test]
fn generated_histories_pass_and_their_stale_reads_fail() {
    // Proves soundness and sensitivity on realistic histories: histories recorded from a
    // sequential execution with overlapping intervals and timed-out writes (applied or
    // not) always pass; making one read clearly stale always fails, with that read in a
    // small window; replacing one read's answer by another value of the key mostly fails.
    let (mut random_mutations, mut random_caught) = (0, 0);
    for seed in seeds() {
        let replay = replay(seed, "generated_histories");
        let history = generate(seed, 4, 60, 3, 0.03);
        match check(&history) {
            Outcome::Linearizable => {}
            other => panic!("{replay}: a sequential execution was rejected: {other:#?}"),
        }

        let mut stale = history.clone();
        let r = make_stale_read(&mut stale).unwrap_or_else(|| panic!("{replay}: no stale read"));
        let Outcome::Violation(v) = check(&stale) else {
            panic!("{replay}: the stale read {} was accepted", stale[r]);
        };
        assert_small_window_holds(&v, &stale[r], &replay);

        let mut rng = SmallRng::seed_from_u64(seed ^ 0xabcd);
        let gets: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].ret, Ret::Value(_)))
            .collect();
        for _ in 0..5 {
            let mut mutated = history.clone();
            let g = gets[rng.gen_range(0..gets.len())];
            let values: Vec<&Vec<u8>> = history
                .iter()
                .filter(|op| op.key == history[g].key)
                .filter_map(set_value)
                .collect();
            let value = Some(values[rng.gen_range(0..values.len())].clone());
            if history[g].ret == Ret::Value(value.clone()) {
                continue;
            }
            mutated[g].ret = Ret::Value(value);
            random_mutations += 1;
            if let Outcome::Violation(v) = check(&mutated) {
                random_caught += 1;
                assert!(
                    holds(&v.window, &mutated[g]),
                    "{replay}: window lacks the read:\n{}",
                    show(&v.window)
                );
            }
        }
    }
    println!("random mutations caught: {random_caught} of {random_mutations}");
    assert!(
        random_caught * 10 >= random_mutations * 7,
        "only {random_caught} of {random_mutations} random mutations caught"
    );
}

#[test]
fn large_history_checks_well_under_the_budget() {
    // Proves the search is fast on a realistic history: 5 clients x 2,000 operations on 5
    // keys with overlapping intervals and 3% timed-out writes pass within a tenth of the
    // default budget, and a stale read buried late in such a history without timeouts is
    // found and shrunk to a small window.
    let history = generate(7, 5, 2_000, 5, 0.03);
    let start = Instant::now();
    let outcome = check(&history);
    println!(
        "{} operations checked in {:?}",
        history.len(),
        start.elapsed()
    );
    assert_eq!(outcome, Outcome::Linearizable);
    let tenth = Limits {
        search_steps_max: SEARCH_STEPS_MAX_DEFAULT / 10,
        total_steps_max: TOTAL_STEPS_MAX_DEFAULT / 10,
    };
    assert_eq!(check_with(&history, &tenth), Outcome::Linearizable);

    let mut stale = generate(7, 5, 2_000, 5, 0.0);
    let r = make_stale_read(&mut stale).expect("a stale read can be made");
    let start = Instant::now();
    let outcome = check(&stale);
    println!("violation found and shrunk in {:?}", start.elapsed());
    let Outcome::Violation(v) = outcome else {
        panic!("the stale read {} was accepted: {outcome:?}", stale[r]);
    };
    println!("{}", v.explanation);
    assert_small_window_holds(&v, &stale[r], "one stale read");
}

#[test]
fn violation_among_many_unknown_writes_is_found_and_shrunk() {
    // Proves the search refutes a long history with many pending timed-out writes, the
    // case that used to end in GaveUp (each write may or may not have happened, which
    // multiplied the configurations to refute): a stale read buried in 10,000 operations
    // with 3% timeouts is found within the default limits and shrunk to a small window
    // holding it.
    let mut stale = generate(7, 5, 2_000, 5, 0.03);
    let r = make_stale_read(&mut stale).expect("a stale read can be made");
    let start = Instant::now();
    let outcome = check(&stale);
    println!("checked and shrunk in {:?}", start.elapsed());
    let Outcome::Violation(v) = outcome else {
        panic!("the stale read {} was not refuted: {outcome:?}", stale[r]);
    };
    assert_small_window_holds(&v, &stale[r], "one stale read");
}

// ---------------------------------------------------------------------------------------
// Jepsen's etcd histories, as porcupine's test suite checks them.

/// Parses a Jepsen log of single-register operations (porcupine's `test_data/jepsen`
/// format): one event a line, `INFO  jepsen.util - <process>\t<type>\t<f>\t<value>`,
/// where type is `:invoke`, `:ok`, `:fail` or `:info` and f is `:read`, `:write` or
/// `:cas`. Every operation is on key "r"; its times are the line numbers of its
/// invocation and completion.
///
/// - `:ok` is a definite answer: a read's value (`nil`: absent), a write or cas applied.
/// - `:fail` on a cas is Jepsen's "the compare did not match": a definite mismatch, as
///   porcupine's etcd model reads it. On a read or write it means it did not happen.
/// - `:info` (a timeout) is an unknown outcome, and so is an invocation never completed.
fn parse_jepsen(text: &str) -> Vec<Operation> {
    let mut running: HashMap<u64, Operation> = HashMap::new();
    let mut history = Vec::new();
    for (line_number, line) in text.lines().enumerate() {
        let time = line_number as u64;
        let Some((_, event)) = line.split_once("jepsen.util - ") else {
            continue;
        };
        let fields: Vec<&str> = event.split_whitespace().collect();
        let [process, kind, function, value @ ..] = fields.as_slice() else {
            panic!("line {}: too few fields: {line}", line_number + 1);
        };
        let process: u64 = process.parse().expect("a process number");
        let value = value.join(" ");
        if *kind == ":invoke" {
            let call = match *function {
                ":read" => Call::Get,
                ":write" => Call::Put(value.into_bytes()),
                ":cas" => {
                    let (expected, new) = value
                        .trim_matches(['[', ']'])
                        .split_once(' ')
                        .expect("cas [expected new]");
                    Call::Cas {
                        expected: Some(expected.into()),
                        new: new.into(),
                    }
                }
                other => panic!("line {}: unknown function {other}", line_number + 1),
            };
            let op = Operation {
                client: process,
                key: b"r".to_vec(),
                call,
                invoke_ns: time,
                complete_ns: None,
                ret: Ret::Unknown,
            };
            assert!(
                running.insert(process, op).is_none(),
                "process {process} invoked twice"
            );
            continue;
        }
        let mut op = running
            .remove(&process)
            .unwrap_or_else(|| panic!("line {}: completes nothing: {line}", line_number + 1));
        op.ret = match (*kind, &op.call) {
            (":info", _) => Ret::Unknown,
            (":ok", Call::Get) => Ret::Value((value != "nil").then(|| value.into_bytes())),
            (":ok", _) => Ret::Ok,
            (":fail", Call::Cas { .. }) => Ret::CasMismatch,
            (":fail", _) => Ret::Failed,
            (other, _) => panic!("line {}: unknown type {other}", line_number + 1),
        };
        if op.ret != Ret::Unknown {
            op.complete_ns = Some(time);
        }
        history.push(op);
    }
    history.extend(running.into_values());
    history
}

/// One of the Jepsen histories in `tests/data/jepsen`.
fn jepsen_history(name: &str) -> Vec<Operation> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/jepsen")
        .join(format!("{name}.log"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    parse_jepsen(&text)
}

/// Porcupine's verdicts on its etcd histories 0 to 7 (its `porcupine_test.go`).
const JEPSEN_ETCD: [(&str, bool); 8] = [
    ("etcd_000", false),
    ("etcd_001", false),
    ("etcd_002", true),
    ("etcd_003", false),
    ("etcd_004", false),
    ("etcd_005", true),
    ("etcd_006", false),
    ("etcd_007", true),
];

#[test]
fn jepsen_etcd_histories_are_decided_as_porcupine_decides_them() {
    // Proves the search decides real histories full of timeouts: each of Jepsen's etcd
    // histories from porcupine's test data (about 80 operations, up to 19 of them
    // unknown, values reused) is linearizable or not as porcupine says, within the
    // default limits.
    let mut failures = Vec::new();
    for (name, linearizable) in JEPSEN_ETCD {
        let history = jepsen_history(name);
        let unknown = history.iter().filter(|op| op.ret == Ret::Unknown).count();
        let start = Instant::now();
        let outcome = check(&history);
        let elapsed = start.elapsed();
        let verdict = match &outcome {
            Outcome::Linearizable => "linearizable",
            Outcome::Violation(_) => "violation",
            Outcome::GaveUp(_) => "gave up",
        };
        println!(
            "{name}: {} operations, {unknown} unknown: {verdict} in {elapsed:?}",
            history.len()
        );
        let decided = match outcome {
            Outcome::Linearizable => linearizable,
            Outcome::Violation(_) => !linearizable,
            Outcome::GaveUp(_) => false,
        };
        if !decided {
            failures.push(format!(
                "{name}: {verdict}, porcupine says linearizable={linearizable}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn search_cut_by_the_limits_is_gave_up_not_a_verdict() {
    // Proves a search the limits cut short is reported as GaveUp, naming the key, its
    // operations and the steps spent, for a linearizable history and for one with a
    // violation alike: the checker never turns an unfinished search into a pass or a
    // failure. (Its callers treat GaveUp as a failed run: the nemesis summary records
    // `gave_up`, its CI test asserts it is false and the nemesis binary exits 1.)
    let tight = Limits {
        search_steps_max: 20,
        total_steps_max: 20,
    };
    for (name, linearizable) in [("etcd_007", true), ("etcd_000", false)] {
        let history = jepsen_history(name);
        let Outcome::GaveUp(g) = check_with(&history, &tight) else {
            panic!("{name}: 20 steps decided a history of {}", history.len());
        };
        assert_eq!(g.key, b"r".to_vec());
        assert_eq!(g.operations, history.len());
        assert!(g.steps >= 20, "{g:?}");
        let decided = check(&history);
        assert_eq!(decided == Outcome::Linearizable, linearizable, "{name}");
    }
}

#[test]
fn many_timeouts_on_one_key_pass_quickly() {
    // Proves the search stays near-linear when a tenth of the operations time out: 4
    // clients x 300 operations on one key, each timed-out write applied or not, pass
    // within a tenth of the default budget for one search.
    let budget = Limits {
        search_steps_max: SEARCH_STEPS_MAX_DEFAULT / 10,
        total_steps_max: SEARCH_STEPS_MAX_DEFAULT / 10,
    };
    for seed in seeds() {
        let history = generate(seed, 4, 300, 1, 0.1);
        let outcome = check_with(&history, &budget);
        assert_eq!(
            outcome,
            Outcome::Linearizable,
            "{}",
            replay(seed, "many_timeouts")
        );
    }
}

// ---------------------------------------------------------------------------------------
// The search against a naive oracle.

/// The register state after `op` from `state`, or `None` if its answer does not fit.
fn naive_apply(op: &Operation, state: &Option<Vec<u8>>) -> Option<Option<Vec<u8>>> {
    match (&op.call, &op.ret) {
        (Call::Put(value), _) => Some(Some(value.clone())),
        (Call::Delete, _) => Some(None),
        (Call::Get, Ret::Value(value)) => (state == value).then(|| state.clone()),
        (Call::Cas { expected, new }, Ret::Ok | Ret::Unknown) => {
            (state == expected).then(|| Some(new.clone()))
        }
        (Call::Cas { expected, .. }, Ret::CasMismatch) => {
            (state != expected).then(|| state.clone())
        }
        _ => unreachable!("no such operation in a naive history: {op}"),
    }
}

/// Wing and Gong's search with no memo and no pruning, on one key: linearize any
/// operation invoked by the earliest return still pending, or end once every definite
/// operation is placed (unknown ones may be left out).
fn naive_linearizable(ops: &[&Operation], placed: &mut [bool], state: Option<Vec<u8>>) -> bool {
    let pending_returns = (0..ops.len())
        .filter(|&i| !placed[i] && ops[i].ret != Ret::Unknown)
        .filter_map(|i| ops[i].complete_ns);
    let Some(deadline_ns) = pending_returns.min() else {
        return true;
    };
    for i in 0..ops.len() {
        if placed[i] || ops[i].invoke_ns > deadline_ns {
            continue;
        }
        if let Some(next) = naive_apply(ops[i], &state) {
            placed[i] = true;
            if naive_linearizable(ops, placed, next) {
                return true;
            }
            placed[i] = false;
        }
    }
    false
}

/// A small history on key "k" from a register with three values, so values repeat:
/// recorded from a sequential execution with timeouts (applied or not) and failures, then,
/// one or two calls or answers replaced by random ones.
fn small_history(rng: &mut SmallRng) -> Vec<Operation> {
    let values = ["a", "b", "c"];
    let value = |rng: &mut SmallRng| values[rng.gen_range(0..values.len())].as_bytes().to_vec();
    let mut register: Option<Vec<u8>> = None;
    let mut history = Vec::new();
    // (effect instant, invoke, complete), ordered by effect instant.
    let mut slots: Vec<(u64, u64, u64)> = (0..rng.gen_range(1..=12))
        .map(|_| {
            let invoke = rng.gen_range(0..40u64);
            let point = invoke + rng.gen_range(0..10);
            (point, invoke, point + rng.gen_range(0..10))
        })
        .collect();
    slots.sort_unstable();
    for (client, (_, invoke_ns, complete_ns)) in slots.into_iter().enumerate() {
        let call = match rng.gen_range(0..4) {
            0 => Call::Put(value(rng)),
            1 => Call::Delete,
            2 => Call::Get,
            _ => Call::Cas {
                expected: rng.gen_bool(0.8).then(|| value(rng)),
                new: value(rng),
            },
        };
        let unknown = rng.gen_bool(0.4);
        let applies = !unknown || rng.gen_bool(0.5);
        let mut op = op(client as u64, call, invoke_ns, complete_ns, Ret::Ok);
        op.ret = match &op.call {
            Call::Get => Ret::Value(register.clone()),
            Call::Cas { expected, .. } if *expected != register => Ret::CasMismatch,
            _ => Ret::Ok,
        };
        if applies && op.ret == Ret::Ok {
            register = naive_apply(&op, &register).expect("the execution fits");
        }
        if unknown {
            op.ret = Ret::Unknown;
            op.complete_ns = None;
        } else if rng.gen_bool(0.05) && op.ret == Ret::Ok && !applies {
            op.ret = Ret::Failed;
        }
        history.push(op);
    }
    for _ in 0..rng.gen_range(1..=2) {
        let i = rng.gen_range(0..history.len());
        let op = &mut history[i];
        match (&mut op.call, &op.ret) {
            (Call::Get, Ret::Value(seen)) => {
                let other = rng.gen_bool(0.75).then(|| value(rng));
                op.ret = Ret::Value(if other == *seen { None } else { other });
            }
            (Call::Cas { .. }, Ret::Ok) => op.ret = Ret::CasMismatch,
            (Call::Cas { .. }, Ret::CasMismatch) => op.ret = Ret::Ok,
            (Call::Put(written), _) => *written = value(rng),
            _ => {}
        }
    }
    history
}

#[test]
fn search_agrees_with_a_naive_oracle() {
    // Proves the search's prunings (the cache's dominance, canonical blocks of unknown
    // operations, reads taken at once, twins, merged unseen values) and the preparation's
    // simplifications change no verdict: on thousands of small random histories with
    // repeated values, timeouts and failures, check is linearizable exactly when an
    // unpruned Wing–Gong search finds a linearization.
    let (mut linearizable, mut total) = (0, 0);
    for seed in seeds() {
        let mut rng = SmallRng::seed_from_u64(seed);
        for case in 0..500 {
            let history = small_history(&mut rng);
            let ops: Vec<&Operation> = history
                .iter()
                .filter(|op| op.ret != Ret::Failed)
                .filter(|op| !(op.call == Call::Get && op.ret == Ret::Unknown))
                .collect();
            let expected = naive_linearizable(&ops, &mut vec![false; ops.len()], None);
            let outcome = check(&history);
            assert!(
                !matches!(outcome, Outcome::GaveUp(_))
                    && (outcome == Outcome::Linearizable) == expected,
                "{} (case {case}): the oracle says linearizable={expected}, check says \
                 {outcome:?}; history:\n{}",
                replay(seed, "naive_oracle"),
                show(&history)
            );
            linearizable += usize::from(expected);
            total += 1;
        }
    }
    println!("{linearizable} of {total} histories linearizable");
    assert!(linearizable * 5 >= total && linearizable * 5 <= total * 4);
}
