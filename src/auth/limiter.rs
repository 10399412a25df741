//! Password attempts, counted per (user, address) and per address over a sliding window, with a
//! back-off that doubles each time a key reaches its limit again. An attempt is counted *before*
//! its password is checked, so concurrent guesses cannot all slip past the check; a success takes
//! its count back.
//!
//! Keys never include the user alone: guessing bob's password from one address must not lock bob
//! out from his own. Tokens are not limited at all (they cannot be guessed, and checking one is a
//! hash of 32 bytes).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);
pub const PER_USER_AND_ADDRESS: usize = 5;
pub const PER_ADDRESS: usize = 20;
/// The back-off doubles up to this many times (64 minutes at most).
const MAX_DOUBLINGS: u32 = 6;
/// Keys remembered at most; past it, the quiet ones are forgotten first.
const MAX_KEYS: usize = 100_000;

#[derive(Default)]
struct Key {
    attempts: VecDeque<Instant>,
    /// How many times the limit was reached recently, and until when the key is blocked.
    strikes: u32,
    blocked_until: Option<Instant>,
    last: Option<Instant>,
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

#[derive(Default)]
pub struct Limiter {
    keys: Mutex<HashMap<String, Key>>,
}

fn keys(user: &str, address: &str) -> [(String, usize); 2] {
    [(format!("user:{user}@{address}"), PER_USER_AND_ADDRESS), (format!("addr:{address}"), PER_ADDRESS)]
}

impl Limiter {
    /// Counts an attempt by `user` from `address`, or refuses it: Err(seconds to wait).
    pub fn attempt(&self, user: &str, address: &str) -> Result<(), u64> {
        let mut map = self.keys.lock().expect("limiter lock");
        let now = Instant::now();
        let mut wait = None;
        for (name, limit) in keys(user, address) {
            let key = map.entry(name).or_default();
            while key.attempts.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                key.attempts.pop_front();
            }
            // A long quiet spell forgives past strikes.
            if key.last.is_some_and(|l| now.duration_since(l) >= WINDOW * 60) {
                key.strikes = 0;
            }
            if let Some(until) = key.blocked_until.filter(|u| *u > now) {
                wait = wait.max(Some(secs_ceil(until - now)));
                continue;
            }
            if key.attempts.len() >= limit {
                key.strikes = (key.strikes + 1).min(MAX_DOUBLINGS);
                let until = now + WINDOW * 2u32.pow(key.strikes - 1);
                key.blocked_until = Some(until);
                wait = wait.max(Some(secs_ceil(until - now)));
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        for (name, _) in keys(user, address) {
            let key = map.entry(name).or_default();
            key.attempts.push_back(now);
            key.last = Some(now);
        }
        if map.len() > MAX_KEYS {
            map.retain(|_, k| k.last.is_some_and(|l| now.duration_since(l) < WINDOW) || k.blocked_until.is_some_and(|u| u > now));
        }
        Ok(())
    }

    /// The attempt counted last for `user` from `address` succeeded: it does not count.
    pub fn succeeded(&self, user: &str, address: &str) {
        let mut map = self.keys.lock().expect("limiter lock");
        let [(pair, _), (addr, _)] = keys(user, address);
        map.remove(&pair);
        if let Some(k) = map.get_mut(&addr) {
            k.attempts.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_user_and_address_never_the_user_alone() {
        let l = Limiter::default();
        for _ in 0..PER_USER_AND_ADDRESS {
            l.attempt("bob", "10.0.0.1").unwrap();
        }
        assert!(l.attempt("bob", "10.0.0.1").is_err(), "the guesser is blocked");
        assert!(l.attempt("bob", "10.0.0.2").is_ok(), "bob from elsewhere is not");
        // The address limit covers guessing many users from one address.
        let l = Limiter::default();
        let refused = (0..100).filter(|i| l.attempt(&format!("u{i}"), "10.0.0.9").is_err()).count();
        assert_eq!(refused, 100 - PER_ADDRESS);
    }

    #[test]
    fn success_gives_the_attempt_back_and_blocks_back_off() {
        let l = Limiter::default();
        for _ in 0..20 {
            l.attempt("amy", "10.0.0.3").unwrap();
            l.succeeded("amy", "10.0.0.3");
        }
        for _ in 0..PER_USER_AND_ADDRESS {
            l.attempt("eve", "10.0.0.4").unwrap();
        }
        let first = l.attempt("eve", "10.0.0.4").unwrap_err();
        assert!((59..=60).contains(&first), "{first}");
        // Blocked again after the first block ends: twice as long.
        let l = Limiter::default();
        l.keys.lock().unwrap().insert("user:eve@10.0.0.5".into(), Key { strikes: 1, ..Default::default() });
        for _ in 0..PER_USER_AND_ADDRESS {
            l.attempt("eve", "10.0.0.5").unwrap();
        }
        let second = l.attempt("eve", "10.0.0.5").unwrap_err();
        assert!((119..=120).contains(&second), "{second}");
    }
}
