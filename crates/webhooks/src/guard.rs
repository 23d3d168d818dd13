//! The SSRF guard. A webhook URL is chosen by a merchant, so Till must never be made to
//! call its own network: only global unicast addresses are allowed, in IPv4 and IPv6,
//! and everything else (loopback, private, link-local and cloud metadata, CGNAT,
//! multicast, reserved, and the IPv4-in-IPv6 forms: mapped to a non-global address,
//! compatible, translated, NAT64, 6to4, Teredo) is refused. The rule is an allow-list, so
//! a special range nobody thought of is refused rather than reached. The check runs at registration and again at every
//! delivery, on the addresses the name resolves to at that moment, and the connection is
//! made to a checked address (the resolver below is the only one the client uses), so a
//! DNS answer that changes after registration (rebinding) is caught.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

pub const URL_CHARS_MAX: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("the URL is not valid")]
    Invalid,
    #[error("webhook URLs must use https")]
    Scheme,
    #[error("webhook URLs must not contain credentials")]
    Credentials,
    #[error("webhook URLs must not point at loopback, private, link-local or other internal addresses")]
    InternalAddress,
}

/// Whether `ip` is a global unicast IPv4 address: the only kind a webhook may reach.
/// Everything else is refused, so a range left off this list is refused rather than
/// allowed (in the spirit of the standard library's unstable `IpAddr::is_global`, and
/// stricter: the whole IETF block 192.0.0.0/24 and the 6to4 relay anycast block
/// 192.88.99.0/24 are out).
fn global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata included
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved, and the broadcast address
}

/// Whether `ip` is a global unicast IPv6 address: inside 2000::/3 (the only block IANA
/// allocates for global unicast) and outside the special blocks carved from it. An
/// IPv4-mapped address (`::ffff:a.b.c.d`) is the IPv4 address it maps. Everything else —
/// loopback, unspecified, IPv4-compatible and IPv4-translated forms, NAT64 (64:ff9b::/96
/// and the local-use 64:ff9b:1::/48), unique local, link-local, multicast — lies outside
/// 2000::/3 and is refused without a list.
fn global_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return global_v4(v4);
    }
    let segments = ip.segments();
    let in_global_unicast = (segments[0] & 0xe000) == 0x2000;
    let special = match segments[0] {
        // IETF protocol assignments 2001::/23 (Teredo, ORCHID, benchmarking), and the
        // documentation block 2001:db8::/32.
        0x2001 => segments[1] < 0x0200 || segments[1] == 0x0db8,
        // 6to4: an IPv4 address inside, relayed.
        0x2002 => true,
        // Documentation 3fff::/20.
        first => (first & 0xfff0) == 0x3ff0,
    };
    in_global_unicast && !special
}

/// Whether delivering to `ip` could reach something that is not on the public internet.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !global_v4(v4),
        IpAddr::V6(v6) => !global_v6(v6),
    }
}

/// Parses and checks a webhook URL. With `allow_private`, http and internal addresses
/// are allowed (local development).
pub fn check_url(text: &str, allow_private: bool) -> Result<Url, UrlRefusal> {
    if text.len() > URL_CHARS_MAX {
        return Err(UrlRefusal::Invalid);
    }
    let url = Url::parse(text).map_err(|_| UrlRefusal::Invalid)?;
    match (url.scheme(), allow_private) {
        ("https", _) | ("http", true) => {}
        _ => return Err(UrlRefusal::Scheme),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefusal::Credentials);
    }
    // The WHATWG parser normalizes decimal, octal and hex IPv4 forms to dotted quads.
    match url.host() {
        None => Err(UrlRefusal::Invalid),
        Some(url::Host::Ipv4(ip)) if !allow_private && !global_v4(ip) => Err(UrlRefusal::InternalAddress),
        Some(url::Host::Ipv6(ip)) if !allow_private && !global_v6(ip) => Err(UrlRefusal::InternalAddress),
        Some(url::Host::Domain(name)) if !allow_private && is_internal_name(name) => Err(UrlRefusal::InternalAddress),
        Some(_) => Ok(url),
    }
}

/// Names that are internal by definition, refused without asking DNS.
fn is_internal_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.ends_with(".local")
        || name.ends_with(".internal")
        || name == "metadata.google.internal"
}

/// The only DNS resolver of the webhook client: it resolves, then drops every internal
/// address, and fails when none is left, so the client can only connect to checked
/// addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            if !allow_private && is_internal_name(&host) {
                return Err(Box::new(GuardError(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                resolved.into_iter().filter(|address| allow_private || !is_forbidden(address.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(GuardError(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to internal addresses")]
struct GuardError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_forbidden_in_every_spelling() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::808:808",
            "64:ff9b:1::a9fe:a9fe",
            "::ffff:0:7f00:1",
            "::ffff:0:808:808",
            "192.88.99.1",
            "192.0.0.9",
            "2001::1",
            "2001:2::1",
            "2001:10::1",
            "3fff::1",
            "100::1",
            "2002:7f00:1::",
            "2002:808:808::",
            "fd00:ec2::254",
            "fe80::1",
            "fc00::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            let parsed: IpAddr = ip.parse().expect("address");
            assert!(is_forbidden(parsed), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2a00:1450:4009:81e::200e"] {
            let parsed: IpAddr = ip.parse().expect("address");
            assert!(!is_forbidden(parsed), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_lookup() {
        for url in [
            "http://example.com/hook",
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://[::1]/",
            "https://[::ffff:7f00:1]/",
            "https://169.254.169.254/latest/meta-data/",
            "https://localhost/",
            "https://user:pass@example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "ftp://example.com/",
            "javascript:alert(1)",
            "https://metadata.google.internal/",
            "not a url",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
        }
        assert!(check_url("https://hooks.example.com/till", false).is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok(), "allowed for local development");
    }
}
