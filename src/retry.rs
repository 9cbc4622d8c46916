//! One retry policy for every loop that calls Slack again after a failure: the caller says
//! what a failure means ([`Verdict`]); [`Retry`] decides whether there is a next attempt and
//! waits for it, bounded by a deadline, an attempt count and a shutdown token.

use crate::backoff::Backoff;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a failed attempt means for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retrying cannot help.
    Stop,
    /// The other side said how long to wait.
    After(Duration),
    /// Try again after the next backoff step.
    Backoff,
}

/// The state of one retried operation.
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    deadline: Option<Instant>,
    attempts_left: Option<u32>,
    shutdown: Option<CancellationToken>,
}

impl Retry {
    /// Full-jitter backoff from `base` up to `max`, with no bound yet.
    pub fn new(base: Duration, max: Duration) -> Self {
        Retry {
            backoff: Backoff::new(base, max),
            deadline: None,
            attempts_left: None,
            shutdown: None,
        }
    }

    /// No attempt starts, and no wait ends, at or after `deadline`.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// At most `attempts` attempts in all.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts_left = Some(attempts.saturating_sub(1));
        self
    }

    /// Stops waiting (and retrying) when `shutdown` is cancelled.
    pub fn until(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Back to the first backoff step, after a success in a long-running loop.
    pub fn reset(&mut self) {
        self.backoff.reset();
    }

    /// Straight to the longest backoff step, for a failure that will not clear soon.
    pub fn saturate(&mut self) {
        self.backoff.saturate();
    }

    /// Waits before the next attempt. Returns false, at once, when there is none: the verdict
    /// is `Stop`, the attempts are used up, the wait would end past the deadline, or shutdown
    /// came first.
    pub async fn wait(&mut self, verdict: Verdict) -> bool {
        let wait = match verdict {
            Verdict::Stop => return false,
            Verdict::After(wait) => wait,
            Verdict::Backoff => self.backoff.next_delay(),
        };
        if let Some(left) = &mut self.attempts_left {
            if *left == 0 {
                return false;
            }
            *left -= 1;
        }
        let past_deadline = |deadline| {
            Instant::now()
                .checked_add(wait)
                .is_none_or(|end| end >= deadline)
        };
        if self.deadline.is_some_and(past_deadline) {
            return false;
        }
        match &self.shutdown {
            Some(shutdown) => tokio::select! {
                _ = shutdown.cancelled() => false,
                _ = tokio::time::sleep(wait) => true,
            },
            None => {
                tokio::time::sleep(wait).await;
                true
            }
        }
    }

    /// Runs `call` until it succeeds or `classify` and the bounds say to stop; returns the
    /// last error then.
    pub async fn run<T, E, F, Fut>(
        mut self,
        classify: impl Fn(&E) -> Verdict,
        mut call: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    if !self.wait(classify(&error)).await {
                        return Err(error);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn attempts_until<T>(result: &Result<T, u32>) -> u32 {
        match result {
            Ok(_) => 0,
            Err(n) => *n,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stops_on_a_stop_verdict_at_once() {
        let calls = Cell::new(0);
        let started = Instant::now();
        let result: Result<(), u32> = Retry::new(Duration::from_secs(1), Duration::from_secs(8))
            .run(
                |_| Verdict::Stop,
                || {
                    calls.set(calls.get() + 1);
                    async { Err(calls.get()) }
                },
            )
            .await;
        assert_eq!(attempts_until(&result), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_attempts() {
        let calls = Cell::new(0);
        let result: Result<(), u32> = Retry::new(Duration::from_secs(1), Duration::from_secs(8))
            .attempts(5)
            .run(
                |_| Verdict::Backoff,
                || {
                    calls.set(calls.get() + 1);
                    async { Err(calls.get()) }
                },
            )
            .await;
        assert_eq!(attempts_until(&result), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn never_waits_past_the_deadline() {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        let calls = Cell::new(0);
        let result: Result<(), u32> = Retry::new(Duration::from_secs(1), Duration::from_secs(8))
            .deadline(deadline)
            .run(
                |_| Verdict::After(Duration::from_secs(3)),
                || {
                    calls.set(calls.get() + 1);
                    async { Err(calls.get()) }
                },
            )
            .await;
        // Attempts at 0, 3, 6 and 9 s; a fifth would start at 12 s.
        assert_eq!(attempts_until(&result), 4);
        assert!(Instant::now() < deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_wait() {
        let shutdown = CancellationToken::new();
        let mut retry =
            Retry::new(Duration::from_secs(1), Duration::from_secs(8)).until(shutdown.clone());
        let started = Instant::now();
        let cancel = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            shutdown.cancel();
        };
        let (waited, ()) =
            tokio::join!(retry.wait(Verdict::After(Duration::from_secs(600))), cancel);
        assert!(!waited);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_failures() {
        let calls = Cell::new(0);
        let result: Result<u32, u32> =
            Retry::new(Duration::from_millis(10), Duration::from_secs(1))
                .run(
                    |_| Verdict::Backoff,
                    || {
                        calls.set(calls.get() + 1);
                        let n = calls.get();
                        async move {
                            if n < 3 {
                                Err(n)
                            } else {
                                Ok(n)
                            }
                        }
                    },
                )
                .await;
        assert_eq!(result, Ok(3));
    }
}
