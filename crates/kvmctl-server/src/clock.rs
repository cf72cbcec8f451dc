//! Time as the daemon's background work sees it. Metering and the TTL and stopped-VM
//! cleanups read `Clock::now` and wait with `Clock::sleep_until`, so tests can move time
//! (`ManualClock`) and see hour boundaries pass without waiting for them.

use std::future::Future;
use std::pin::Pin;

pub trait Clock: Send + Sync + 'static {
    /// Unix seconds.
    fn now(&self) -> i64;
    /// Resolves once `now() >= t`.
    fn sleep_until(&self, t: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    fn sleep_until(&self, t: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // Short naps, so a wall-clock jump (NTP, suspend) is noticed within a minute.
            loop {
                let left = t - self.now();
                if left <= 0 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(left.clamp(1, 60) as u64)).await;
            }
        })
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now: tokio::sync::watch::Sender<i64>,
}

impl ManualClock {
    pub fn new(start: i64) -> Self {
        ManualClock { now: tokio::sync::watch::channel(start).0 }
    }

    pub fn set(&self, t: i64) {
        self.now.send_replace(t);
    }

    pub fn advance(&self, secs: i64) {
        self.now.send_modify(|t| *t += secs);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, t: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|now| *now >= t).await;
        })
    }
}
