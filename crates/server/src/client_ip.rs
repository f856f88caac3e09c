//! Which address an attempt is counted against.
//!
//! The client is the TCP peer, unless the peer is a configured trusted proxy: then
//! `X-Forwarded-For` is read from the right (the entry the nearest proxy appended) past every
//! trusted proxy, and the first untrusted address is the client. The leftmost entry is whatever
//! the client chose to send and is never believed on its own.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The most proxy hops walked; a longer chain is a forgery or a loop.
const MAX_HOPS: usize = 16;

/// Resolves the client address from the peer and the `X-Forwarded-For` header values (in the
/// order received; several headers count as one comma-separated list).
pub fn resolve<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let entries = forwarded_for.rev().flat_map(|value| value.rsplit(','));
    for entry in entries.take(MAX_HOPS) {
        let Some(hop) = parse_entry(entry) else {
            // A trusted proxy forwarded something that is not an address: stop at that proxy.
            break;
        };
        client = hop;
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// Parses one entry: `203.0.113.7`, `2001:db8::1`, `[2001:db8::1]`, or either with a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let got = resolve(
            ip("198.51.100.9"),
            ["1.2.3.4"].into_iter(),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got, ip("198.51.100.9"));
    }

    #[test]
    fn a_trusted_proxy_is_read_from_the_right_past_other_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let header = ["6.6.6.6, 203.0.113.7, 10.1.1.1"];
        assert_eq!(
            resolve(ip("10.0.0.1"), header.into_iter(), &trusted),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn several_headers_are_one_list() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = ["6.6.6.6", "203.0.113.7", "10.1.1.1"];
        assert_eq!(
            resolve(ip("10.0.0.1"), headers.into_iter(), &trusted),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        let trusted = nets(&["127.0.0.1/32"]);
        let peer = ip("::ffff:127.0.0.1");
        for (entry, expect) in [
            ("203.0.113.7:5555", "203.0.113.7"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::ffff:198.51.100.1", "198.51.100.1"),
        ] {
            assert_eq!(
                resolve(peer, [entry].into_iter(), &trusted),
                ip(expect),
                "{entry}"
            );
        }
    }

    #[test]
    fn garbage_behind_a_trusted_proxy_stops_at_that_proxy() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = resolve(
            ip("10.0.0.1"),
            ["not-an-ip, 10.0.0.2"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("10.0.0.2"));
    }

    #[test]
    fn a_missing_header_leaves_the_peer() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), std::iter::empty(), &trusted),
            ip("10.0.0.1")
        );
    }

    proptest! {
        /// Whatever a client puts in the header, an untrusted peer is never replaced, and a
        /// trusted peer resolves to an address without panicking.
        #[test]
        fn hostile_headers_never_panic_or_override_an_untrusted_peer(header in any::<String>()) {
            let trusted = nets(&["10.0.0.0/8"]);
            prop_assert_eq!(resolve(ip("198.51.100.1"), [header.as_str()].into_iter(), &trusted),
                ip("198.51.100.1"));
            let _ = resolve(ip("10.0.0.1"), [header.as_str()].into_iter(), &trusted);
        }
    }
}
