//! A budget of failed authentications per client address: past it, the
//! address is refused (429, with the real wait in `Retry-After`) before any
//! credential it sends is looked at, until its minute is over, so keys and
//! tokens cannot be guessed at speed. Only the peer address counts (a
//! forwarded-for header is the client's to forge).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const WINDOW_MS: i64 = 60_000;
/// Past this many addresses, windows that are over are dropped.
const PRUNE_ABOVE: usize = 10_000;

pub struct AuthFailures {
    per_minute: u32,
    seen: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl AuthFailures {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            seen: Mutex::default(),
        }
    }

    /// Seconds the address must wait, if it is over its budget now.
    pub fn blocked(&self, ip: IpAddr, now: i64) -> Option<u64> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = *seen.get(&ip)?;
        let left = start + WINDOW_MS - now;
        (left > 0 && count >= self.per_minute).then(|| (left as u64).div_ceil(1000))
    }

    /// Counts a failed authentication from the address.
    pub fn record(&self, ip: IpAddr, now: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > PRUNE_ABOVE {
            seen.retain(|_, (start, _)| *start + WINDOW_MS > now);
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if entry.0 + WINDOW_MS <= now {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_for_the_rest_of_its_minute_only() {
        let f = AuthFailures::new(3);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for t in [0, 10, 20] {
            assert_eq!(f.blocked(a, t), None);
            f.record(a, t);
        }
        assert_eq!(f.blocked(a, 1_000), Some(59));
        assert_eq!(f.blocked(b, 1_000), None);
        assert_eq!(f.blocked(a, 59_999), Some(1));
        assert_eq!(f.blocked(a, 60_000), None);
        f.record(a, 60_001);
        assert_eq!(f.blocked(a, 60_002), None);
    }
}
