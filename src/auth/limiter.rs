//! Failed logins, counted per user and per client address over a sliding window; past the limit
//! further attempts are refused (429 with `Retry-After`) until the oldest failure ages out.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);
pub const PER_USER: usize = 5;
pub const PER_ADDRESS: usize = 20;

#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    /// Seconds until `user` from `address` may try again, if it is blocked now.
    pub fn blocked(&self, user: Option<&str>, address: &str) -> Option<u64> {
        let mut failures = self.failures.lock().expect("limiter lock");
        let now = Instant::now();
        let mut wait = None;
        let keys = [user.map(|u| (format!("user:{u}"), PER_USER)), Some((format!("addr:{address}"), PER_ADDRESS))];
        for (key, limit) in keys.into_iter().flatten() {
            if let Some(times) = failures.get_mut(&key) {
                while times.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                    times.pop_front();
                }
                if times.len() >= limit {
                    let left = WINDOW - now.duration_since(times[0]);
                    wait = wait.max(Some(left.as_secs() + 1));
                }
            }
        }
        wait
    }

    pub fn failed(&self, user: Option<&str>, address: &str) {
        let mut failures = self.failures.lock().expect("limiter lock");
        let now = Instant::now();
        for key in [user.map(|u| format!("user:{u}")), Some(format!("addr:{address}"))].into_iter().flatten() {
            failures.entry(key).or_default().push_back(now);
        }
        if failures.len() > 100_000 {
            failures.retain(|_, t| t.back().is_some_and(|last| now.duration_since(*last) < WINDOW));
        }
    }

    pub fn succeeded(&self, user: &str) {
        self.failures.lock().expect("limiter lock").remove(&format!("user:{user}"));
    }
}
