//! Connection admission: caps on open connections, in total and per peer address,
//! checked at accept before any TLS work, so unauthenticated clients cannot hold more
//! than their share of sockets, memory and handshakes.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A peer as the limits count it: an IPv4 address, or an IPv6 /64 (one host usually
/// holds a whole /64, so counting single IPv6 addresses would count nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey(IpAddr);

impl From<IpAddr> for PeerKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => PeerKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    PeerKey(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Which cap a refused connection hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections`.
    Total,
    /// `limits.max_connections_per_peer`.
    PerPeer,
}

impl Refusal {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerPeer => "per_peer",
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_peer: HashMap<PeerKey, usize>,
}

/// Counts open connections against the caps.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_peer: usize,
    open: Mutex<Open>,
}

/// An admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    peer: PeerKey,
}

impl Admission {
    /// At most `max_total` connections, `max_per_peer` of them from one peer.
    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_peer,
            open: Mutex::new(Open::default()),
        })
    }

    /// Takes a place for a connection from `peer`, or says which cap is reached.
    pub fn admit(self: &Arc<Self>, peer: PeerKey) -> Result<Slot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let from_peer = open.per_peer.entry(peer).or_insert(0);
        if *from_peer >= self.max_per_peer {
            return Err(Refusal::PerPeer);
        }
        *from_peer += 1;
        open.total += 1;
        Ok(Slot {
            admission: self.clone(),
            peer,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Slot {
    /// The peer this place was taken for.
    pub fn peer(&self) -> PeerKey {
        self.peer
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Lets one log line through per `every`, counting the ones held back, so a flood of
/// refused connections costs a line every few seconds, not one per connection.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// One line per `every`.
    pub fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether to log an event at `now`; if so, how many were held back since the last.
    pub fn check(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held) = &mut *state;
        match last {
            Some(t) if now.saturating_duration_since(*t) < self.every => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> PeerKey {
        PeerKey::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn caps_per_peer_and_in_total_and_frees_on_drop() {
        let a = Admission::new(3, 2);
        let x1 = a.admit(peer("10.0.0.1")).unwrap();
        let _x2 = a.admit(peer("10.0.0.1")).unwrap();
        assert_eq!(a.admit(peer("10.0.0.1")).unwrap_err(), Refusal::PerPeer);
        let _y1 = a.admit(peer("10.0.0.2")).unwrap();
        assert_eq!(a.admit(peer("10.0.0.3")).unwrap_err(), Refusal::Total);
        drop(x1);
        assert_eq!(a.open(), 2);
        let _x3 = a.admit(peer("10.0.0.1")).unwrap();
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_peer_and_mapped_ipv4_is_ipv4() {
        assert_eq!(peer("2001:db8:1:2::1"), peer("2001:db8:1:2:ffff::9"));
        assert_ne!(peer("2001:db8:1:2::1"), peer("2001:db8:1:3::1"));
        assert_eq!(peer("::ffff:192.0.2.7"), peer("192.0.2.7"));
        assert_eq!(peer("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        let a = Admission::new(10, 1);
        let _held = a.admit(peer("2001:db8::1")).unwrap();
        assert_eq!(a.admit(peer("2001:db8::2")).unwrap_err(), Refusal::PerPeer);
    }

    #[test]
    fn throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let t = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.check(t0), Some(0));
        assert_eq!(t.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.check(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.check(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.check(t0 + Duration::from_secs(11)), None);
    }
}
