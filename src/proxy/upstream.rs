//! The pooled upstream client and the mapping of its failures.

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::answer::UpstreamKind;
use crate::config::Limits;

/// The pooled client every route shares.
pub type UpstreamClient = Client<HttpConnector, Incoming>;

/// How long an idle pooled connection is kept; below common upstream keep-alive timeouts
/// (nginx 75 s, Node 5 s is the outlier) so we rarely reuse a connection the upstream closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// Builds the pooled client.
pub fn client(limits: &Limits) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(limits.upstream_connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .build(http)
}

/// Classifies a client error.
pub fn classify(err: &hyper_util::client::legacy::Error) -> UpstreamKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return UpstreamKind::Timeout;
            }
        }
        source = e.source();
    }
    if err.is_connect() {
        UpstreamKind::Connect
    } else {
        UpstreamKind::Reset
    }
}
