//! Waiting on a signal, bounded: [`poll_until`] (and [`poll_until_async`] for tests on a tokio
//! runtime) asks a probe again and again until it answers, and fails the test with the last
//! state it saw when the answer never comes. Tests wait on READY=1, a status field, a log line,
//! a file or an event this way — never with a fixed sleep.

use std::{
    fmt::{self, Debug, Display},
    time::{Duration, Instant},
};

/// How long a probe rests between two tries.
pub const INTERVAL: Duration = Duration::from_millis(20);

/// Calls `probe` every [`INTERVAL`] until it returns `Ok(value)`, and returns that value. A
/// probe that is not there yet returns `Err(state)`: what it saw, shown when `timeout` passes
/// first: "timed out after 10s waiting for `what`; last seen: `state`".
#[track_caller]
pub fn poll_until<T, S: Debug>(
    what: impl Display,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> T {
    let deadline = Deadline::start(timeout);
    loop {
        match probe() {
            Ok(value) => return value,
            Err(state) => deadline.check(&what, state),
        }
        std::thread::sleep(INTERVAL);
    }
}

/// [`poll_until`] for async tests: rests on the tokio timer, so the runtime's other tasks (the
/// source under test) run while it waits.
#[track_caller]
pub fn poll_until_async<T, S: Debug>(
    what: impl Display,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> impl Future<Output = T> {
    // The caller's location, for the panic message (track_caller does not reach into async).
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Deadline::start(timeout).at(caller);
        loop {
            match probe() {
                Ok(value) => return value,
                Err(state) => deadline.check(&what, state),
            }
            tokio::time::sleep(INTERVAL).await;
        }
    }
}

/// `state` shown as its `Display` text in a timeout message: a log, a JSON document.
pub struct Shown<T>(pub T);

impl<T: Display> Debug for Shown<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Display::fmt(&self.0, f)
    }
}

struct Deadline {
    timeout: Duration,
    at: Instant,
    caller: Option<&'static std::panic::Location<'static>>,
}

impl Deadline {
    fn start(timeout: Duration) -> Self {
        Deadline {
            timeout,
            at: Instant::now() + timeout,
            caller: None,
        }
    }

    fn at(mut self, caller: &'static std::panic::Location<'static>) -> Self {
        self.caller = Some(caller);
        self
    }

    /// Fails the test once the deadline has passed, with `state`, the last thing seen.
    #[track_caller]
    fn check(&self, what: &impl Display, state: impl Debug) {
        if Instant::now() < self.at {
            return;
        }
        let from = self
            .caller
            .map(|c| format!(" (at {c})"))
            .unwrap_or_default();
        panic!(
            "timed out after {:?} waiting for {what}{from}; last seen: {state:#?}",
            self.timeout
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_probe_has_it() {
        let mut tries = 0;
        let got = poll_until("the third try", Duration::from_secs(5), || {
            tries += 1;
            if tries == 3 { Ok(tries) } else { Err(tries) }
        });
        assert_eq!(got, 3);
    }

    #[test]
    fn fails_with_the_last_state_seen() {
        let panic = std::panic::catch_unwind(|| {
            let mut n = 0;
            poll_until(
                "a probe that never answers",
                Duration::from_millis(100),
                || {
                    n += 1;
                    Err::<(), _>(Shown(format!("try {n}")))
                },
            )
        })
        .expect_err("a probe that never answers fails the test");
        let text = panic
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(
            text.starts_with(
                "timed out after 100ms waiting for a probe that never answers; last seen: try "
            ),
            "{text}"
        );
        let last: u32 = text
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count");
        assert!(last >= 2, "tried again before giving up: {text}");
    }

    #[tokio::test]
    async fn the_async_form_fails_the_same_way() {
        assert_eq!(
            poll_until_async("at once", Duration::from_secs(1), || Ok::<_, ()>(7)).await,
            7
        );
        let waited = tokio::spawn(poll_until_async("never", Duration::from_millis(50), || {
            Err::<(), _>("nothing")
        }))
        .await
        .expect_err("the task panicked");
        let text = waited.into_panic();
        let text = text.downcast_ref::<String>().expect("a formatted message");
        assert!(
            text.starts_with("timed out after 50ms waiting for never (at ")
                && text.ends_with("; last seen: \"nothing\""),
            "{text}"
        );
    }
}
