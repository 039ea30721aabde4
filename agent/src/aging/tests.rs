use super::*;

fn map(max: usize) -> (AgingMap<u32, &'static str, ManualNow>, ManualNow) {
    let clock = ManualNow::default();
    (
        AgingMap::with_clock(max, Duration::from_secs(10), clock.clone()),
        clock,
    )
}

fn none(_: u32, _: &str) {}

#[test]
fn retired_entries_stay_for_the_grace_period_then_expire() {
    let (mut m, clock) = map(100);
    m.insert(1, "a", none);
    m.insert(2, "b", none);
    assert!(m.retire(&1).is_some());
    clock.advance(Duration::from_secs(9));
    m.expire(none);
    assert_eq!(m.get(&1), Some(&"a"), "still in its grace period");
    clock.advance(Duration::from_secs(1));
    let mut gone = Vec::new();
    m.expire(|k, v| gone.push((k, v)));
    assert_eq!(gone, [(1, "a")]);
    assert_eq!((m.len(), m.evicted()), (1, 1));
    // A live entry never expires.
    clock.advance(Duration::from_secs(3600));
    m.expire(none);
    assert_eq!(m.get(&2), Some(&"b"));
}

#[test]
fn a_revived_or_replaced_entry_is_not_expired_by_its_old_retirement() {
    let (mut m, clock) = map(100);
    m.insert(1, "a", none);
    m.retire(&1);
    // The same key again (a cgroup id re-used, a re-walk): live again.
    m.insert(1, "a2", none);
    assert_eq!(m.retired_at(&1), None);
    clock.advance(Duration::from_secs(11));
    m.expire(none);
    assert_eq!(m.get(&1), Some(&"a2"));
    // Removed and inserted anew: the old queue items do not match the new generation.
    m.retire(&1);
    m.remove(&1);
    m.insert(1, "a3", none);
    clock.advance(Duration::from_secs(11));
    m.expire(none);
    assert_eq!(m.get(&1), Some(&"a3"));
}

#[test]
fn full_evicts_the_oldest_retired_first_then_the_oldest_inserted() {
    let (mut m, _clock) = map(3);
    m.insert(1, "a", none);
    m.insert(2, "b", none);
    m.insert(3, "c", none);
    m.retire(&2);
    let mut gone = Vec::new();
    m.insert(4, "d", |k, _| gone.push(k));
    assert_eq!(gone, [2], "the retired entry goes first");
    m.insert(5, "e", |k, _| gone.push(k));
    assert_eq!(gone, [2, 1], "then the oldest inserted");
    assert_eq!(m.len(), 3);
    assert_eq!(m.evicted(), 2);
    // Updating a key in place never evicts.
    m.insert(5, "e2", |k, _| gone.push(k));
    assert_eq!(gone, [2, 1]);
}

#[test]
fn idle_entries_are_evicted_only_when_allowed() {
    let (mut m, clock) = map(100);
    m.insert(1, "busy", none);
    m.insert(2, "idle", none);
    m.insert(3, "pinned", none);
    clock.advance(Duration::from_secs(30));
    m.touch(&1);
    *m.get_or_insert_with(&4, || "new", none) = "new!";
    let mut gone = Vec::new();
    let n = m.evict_idle(
        Duration::from_secs(20),
        |_, v| *v != "pinned",
        |k, _| gone.push(k),
    );
    assert_eq!((n, gone), (1, vec![2]));
    assert_eq!(m.get(&4), Some(&"new!"));
    assert_eq!(m.len(), 3);
}

#[test]
fn queues_stay_bounded_under_churn() {
    let (mut m, clock) = map(1000);
    for i in 0..100_000u32 {
        m.insert(i, "x", none);
        m.retire(&i);
        if i % 1000 == 0 {
            clock.advance(Duration::from_secs(11));
            m.expire(none);
        }
    }
    assert!(m.len() <= 1000);
    assert!(
        m.inserted.len() <= 2 * m.len() + 1025,
        "{}",
        m.inserted.len()
    );
    assert!(m.retired.len() <= 2 * m.len() + 1025, "{}", m.retired.len());
}
