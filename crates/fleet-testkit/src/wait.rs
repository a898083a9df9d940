//! The one way tests wait: for a positive signal, polled, within a bound (never a sleep
//! followed by an assertion). [`eventually`] fails the test with what was awaited and the last
//! thing the probe said; [`within`] gives that back for callers that report it themselves.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often the probes are asked, unless a caller says otherwise.
pub const EVERY: Duration = Duration::from_millis(20);

/// Polls `probe` every `every` until it gives a value; after `limit`, `Err` with the last thing
/// it reported.
pub fn within<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() > deadline => return Err(last),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Polls `probe` every 20 ms until it gives a value, failing the test after `limit` with
/// `what` and the last thing `probe` reported.
pub fn eventually<T>(what: &str, limit: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    poll(what, limit, EVERY, probe, String::new)
}

/// [`eventually`], polling every `every`, with what `explain` adds (logs, say) on failure.
pub fn poll<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    probe: impl FnMut() -> Result<T, String>,
    explain: impl FnOnce() -> String,
) -> T {
    within(limit, every, probe)
        .unwrap_or_else(|last| panic!("{what} (not within {limit:?}): {last}\n{}", explain()))
}

/// [`eventually`] for async probes, sleeping on the tokio clock (so a paused clock runs it
/// at once).
pub async fn eventually_async<T, F>(what: &str, limit: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() > deadline => {
                panic!("{what} (not within {limit:?}): {last}")
            }
            Err(_) => tokio::time::sleep(EVERY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_asked_until_it_answers_or_the_bound_passes() {
        let mut asked = 0;
        let answered = within(Duration::from_secs(5), Duration::ZERO, || {
            asked += 1;
            if asked == 3 {
                Ok(asked)
            } else {
                Err(format!("try {asked}"))
            }
        });
        assert_eq!(answered, Ok(3));
        let started = Instant::now();
        let never = within::<()>(Duration::from_millis(50), Duration::from_millis(5), || {
            Err("no".into())
        });
        assert_eq!(never, Err("no".to_owned()));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn an_async_probe_runs_on_the_tokio_clock() {
        let began = tokio::time::Instant::now();
        let mut asked = 0;
        let value = eventually_async("the tenth try", Duration::from_secs(60), || {
            asked += 1;
            let now = asked;
            async move {
                if now == 10 {
                    Ok(now)
                } else {
                    Err("not yet".into())
                }
            }
        })
        .await;
        assert_eq!(value, 10);
        // Nine sleeps of 20 ms, on a paused clock: no real time passed.
        assert_eq!(began.elapsed(), EVERY * 9);
    }
}
