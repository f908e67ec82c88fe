//! Request and connection limits (`limits:`).

use canopy::ttl::Ttl;
use serde::Deserialize;

/// Request and connection limits: what one identity, one peer address and the whole
/// listener may cost before and after authentication.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per second per identity (sustained).
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// Requests per identity in a burst.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Largest request body in bytes.
    #[serde(default = "default_body_bytes")]
    pub body_bytes: usize,
    /// Time limit of a request.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Ttl,
    /// Open connections in total; more are closed at accept.
    #[serde(default = "default_max_open_connections")]
    pub max_connections: usize,
    /// Open connections from one peer address (an IPv6 /64 counts as one); more are
    /// closed at accept.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Requests per second per peer address, counted before authentication (sustained).
    #[serde(default = "default_peer_rate")]
    pub peer_rate_per_second: u32,
    /// Requests per peer address in a burst, counted before authentication.
    #[serde(default = "default_peer_burst")]
    pub peer_burst: u32,
    /// Bytes of request bodies held in memory at once, all requests together. Bodies
    /// are read whole before authentication, so this bounds what unauthenticated
    /// clients can make the issuer hold; a body that does not fit is answered 503.
    #[serde(default = "default_buffered_body_bytes")]
    pub buffered_body_bytes: usize,
    /// HTTP/2 streams open at once on one connection.
    #[serde(default = "default_http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// Interval of the HTTP/2 keep-alive PING.
    #[serde(default = "default_http2_keep_alive_interval")]
    pub http2_keep_alive_interval: Ttl,
    /// Time a PING may go unanswered before the connection is closed.
    #[serde(default = "default_http2_keep_alive_timeout")]
    pub http2_keep_alive_timeout: Ttl,
    /// A connection with no request in flight for this long is closed (HTTP/1 and HTTP/2).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Ttl,
    /// Time for an HTTP/1 request head to arrive whole (slowloris).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Ttl,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate_per_second: default_rate(),
            burst: default_burst(),
            body_bytes: default_body_bytes(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_open_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            peer_rate_per_second: default_peer_rate(),
            peer_burst: default_peer_burst(),
            buffered_body_bytes: default_buffered_body_bytes(),
            http2_max_concurrent_streams: default_http2_max_concurrent_streams(),
            http2_keep_alive_interval: default_http2_keep_alive_interval(),
            http2_keep_alive_timeout: default_http2_keep_alive_timeout(),
            idle_timeout: default_idle_timeout(),
            header_read_timeout: default_header_read_timeout(),
        }
    }
}

fn default_rate() -> u32 {
    50
}
fn default_burst() -> u32 {
    200
}
fn default_body_bytes() -> usize {
    64 * 1024
}
fn default_request_timeout() -> Ttl {
    Ttl::from_seconds(30).expect("positive")
}
fn default_max_open_connections() -> usize {
    1024
}
fn default_max_connections_per_peer() -> usize {
    64
}
fn default_peer_rate() -> u32 {
    1000
}
fn default_peer_burst() -> u32 {
    2000
}
fn default_buffered_body_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_http2_max_concurrent_streams() -> u32 {
    32
}
fn default_http2_keep_alive_interval() -> Ttl {
    Ttl::from_seconds(30).expect("positive")
}
fn default_http2_keep_alive_timeout() -> Ttl {
    Ttl::from_seconds(20).expect("positive")
}
fn default_idle_timeout() -> Ttl {
    Ttl::from_seconds(120).expect("positive")
}
fn default_header_read_timeout() -> Ttl {
    Ttl::from_seconds(10).expect("positive")
}
