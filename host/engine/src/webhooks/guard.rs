//! Where a webhook may point. A tenant's URL must not reach the platform's
//! own network: private, loopback, link-local and other non-public
//! addresses are refused unless the operator allows them. Checked at
//! registration and again at every delivery by the resolver the client
//! connects through (so a name that resolves to a public address when
//! registered and to a private one later, DNS rebinding, is refused too).

use super::WebhookError;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What non-public addresses the operator allows webhooks to reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow {
    /// 127.0.0.0/8 and ::1.
    pub loopback: bool,
    /// Every other non-public range (private, link-local, unique local, …).
    pub private: bool,
}

impl Allow {
    /// From `loopback`, `private` (comma-separated; empty: neither).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut allow = Self::default();
        for word in raw.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "loopback" => allow.loopback = true,
                "private" => allow.private = true,
                other => return Err(format!("`{other}`: allowed are loopback, private")),
            }
        }
        Ok(allow)
    }

    /// Whether a webhook may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        match class(ip) {
            Class::Public => true,
            Class::Loopback => self.loopback,
            Class::Private => self.private,
        }
    }
}

enum Class {
    Public,
    Loopback,
    Private,
}

fn class(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return class_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Class::Loopback
            } else if v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::UNSPECIFIED
            {
                Class::Private
            } else {
                Class::Public
            }
        }
    }
}

fn class_v4(ip: Ipv4Addr) -> Class {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240
    {
        Class::Private
    } else {
        Class::Public
    }
}

/// Refuses a URL whose host is, or resolves only to, addresses not allowed.
pub(super) async fn check_target(url: &url::Url, allow: Allow) -> Result<(), WebhookError> {
    let refused = |ip: IpAddr| {
        WebhookError::Forbidden(format!(
            "{ip} is not a public address; the operator does not allow webhooks to reach it"
        ))
    };
    match url.host() {
        Some(url::Host::Ipv4(ip)) if !allow.permits(ip.into()) => Err(refused(ip.into())),
        Some(url::Host::Ipv6(ip)) if !allow.permits(ip.into()) => Err(refused(ip.into())),
        Some(url::Host::Domain(name)) => {
            let port = url.port_or_known_default().unwrap_or(443);
            // A name that does not resolve now may later; one that resolves
            // only to refused addresses is refused now.
            if let Ok(found) = tokio::net::lookup_host((name, port)).await {
                let found: Vec<SocketAddr> = found.collect();
                if let Some(first) = found.first()
                    && found.iter().all(|a| !allow.permits(a.ip()))
                {
                    return Err(refused(first.ip()));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The resolver webhook requests connect through: the allowed addresses of
/// a name only, resolved at connection time.
pub(super) struct Guarded(pub Allow);

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.0;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow.permits(a.ip()))
                .collect();
            if found.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves to no address webhooks may reach (private, loopback or link-local)"
                )
                .into();
                return Err(e);
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_allowed() {
        let none = Allow::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap_or_else(|_| panic!("{ip}"));
            assert!(!none.permits(ip), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap_or_else(|_| panic!("{ip}"));
            assert!(none.permits(ip), "{ip}");
        }
        let loopback = Allow::parse("loopback").expect("parses");
        assert!(loopback.permits("127.0.0.1".parse().expect("ip")));
        assert!(!loopback.permits("10.0.0.1".parse().expect("ip")));
        assert!(Allow::parse("everything").is_err());
    }
}
