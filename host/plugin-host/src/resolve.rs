//! Name resolution for the `outbound-http` client, without a thread per
//! request.
//!
//! ureq resolves the host of every request, before it looks for a pooled
//! connection, and with a timeout set (every grant has one) its resolver
//! runs each lookup on a thread of its own so it can give up on it: two
//! threads started and torn down per acme saga (authorize, capture), each
//! with its stack, signal stack and allocator heap fresh from the kernel.
//! An address written as an IP is taken as it is; a name is looked up the
//! way ureq would (its resolver, with the timeout) and the answer kept for
//! a few seconds, so a burst of payments to one provider looks it up once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a looked-up name's addresses are used: short, so a provider
/// that moves is followed within seconds.
const KEEP: Duration = Duration::from_secs(5);
/// Names kept at most (a grant allows a handful of origins).
const MAX_NAMES: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Resolve {
    lookup: DefaultResolver,
    names: Mutex<HashMap<String, (Instant, Vec<SocketAddr>)>>,
}

impl Resolve {
    fn addresses(&self, addrs: &[SocketAddr]) -> ResolvedSocketAddrs {
        let mut out = self.empty();
        for a in addrs {
            if out.try_push(*a).is_err() {
                break;
            }
        }
        out
    }
}

/// The address of `uri` when its host is an IP (with the scheme's port
/// when it names none).
fn literal(uri: &Uri) -> Option<SocketAddr> {
    let authority = uri.authority()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let port = authority.port_u16().or_else(|| match uri.scheme_str()? {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some(SocketAddr::new(ip, port))
}

impl Resolver for Resolve {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let Some(addr) = literal(uri) {
            return Ok(self.addresses(&[addr]));
        }
        let key = uri.authority().map(|a| a.as_str().to_ascii_lowercase());
        let names = || self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = &key
            && let Some((at, addrs)) = names().get(key)
            && at.elapsed() < KEEP
        {
            return Ok(self.addresses(addrs));
        }
        let found = self.lookup.resolve(uri, config, timeout)?;
        if let Some(key) = key {
            let mut names = names();
            if names.len() >= MAX_NAMES {
                names.retain(|_, (at, _)| at.elapsed() < KEEP);
            }
            if names.len() < MAX_NAMES {
                names.insert(key, (Instant::now(), found.iter().copied().collect()));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn an_ip_is_its_own_address() {
        assert_eq!(
            literal(&uri("http://127.0.0.1:18190/v1/x")),
            Some("127.0.0.1:18190".parse().unwrap())
        );
        assert_eq!(
            literal(&uri("https://10.0.0.7/pay")),
            Some("10.0.0.7:443".parse().unwrap())
        );
        assert_eq!(
            literal(&uri("http://[::1]/pay")),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(literal(&uri("http://localhost:8080/")), None);
    }

    #[test]
    fn a_name_is_looked_up_and_kept() {
        let r = Resolve::default();
        let config = Config::default();
        let timeout = NextTimeout {
            after: Duration::from_secs(5).into(),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        let first = r
            .resolve(&uri("http://localhost:8080/"), &config, timeout)
            .unwrap();
        assert!(
            first
                .iter()
                .all(|a| a.port() == 8080 && a.ip().is_loopback())
        );
        assert!(r.names.lock().unwrap().contains_key("localhost:8080"));
        let again = r
            .resolve(&uri("http://LOCALHOST:8080/x"), &config, timeout)
            .unwrap();
        assert_eq!(first.to_vec(), again.to_vec());
    }
}
