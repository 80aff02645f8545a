//! Bounded polling until an object reaches a state.

use std::future::Future;
use std::time::{Duration, Instant};

use prov_provider::ProviderError;

/// How long to wait for an object to settle, and how often to look.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitPolicy {
    /// Give up after this long.
    pub timeout: Duration,
    /// Pause between two looks.
    pub interval: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            interval: Duration::from_secs(2),
        }
    }
}

impl WaitPolicy {
    /// Calls `check` until it returns `Some`, an error, or the timeout passes.
    /// The first look happens at once.
    pub async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, ProviderError>>,
    {
        let start = Instant::now();
        loop {
            if let Some(value) = check().await? {
                return Ok(value);
            }
            let elapsed = start.elapsed();
            if elapsed >= self.timeout {
                return Err(ProviderError::Timeout {
                    what: what.to_owned(),
                    seconds: self.timeout.as_secs(),
                });
            }
            tracing::debug!(what, elapsed = ?elapsed, "still waiting");
            tokio::time::sleep(self.interval.min(self.timeout - elapsed)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn times_out_and_succeeds() {
        let policy = WaitPolicy {
            timeout: Duration::from_millis(50),
            interval: Duration::from_millis(10),
        };
        let err = policy
            .until("nothing", || async { Ok::<Option<()>, _>(None) })
            .await;
        assert!(matches!(err, Err(ProviderError::Timeout { .. })));
        let mut n = 0;
        let got = policy
            .until("third look", || {
                n += 1;
                let n = n;
                async move { Ok((n == 3).then_some(n)) }
            })
            .await;
        assert_eq!(got.ok(), Some(3));
    }
}
