//! Which address an attempt is counted against.
//!
//! The client is the TCP peer, unless the peer is a configured trusted proxy: then the
//! forwarding header (`server.forwarded_header`: `X-Forwarded-For`, or RFC 7239 `Forwarded`)
//! is read from the right (the entry the nearest proxy appended) past every trusted proxy, and
//! the first untrusted address is the client. The leftmost entry is whatever the client chose
//! to send and is never believed on its own.
//!
//! Headers are read as raw bytes: an entry a trusted proxy passed on that is not an address
//! (non-ASCII bytes, garbage, an obfuscated `for=_hidden`) is an error, answered 400. It never
//! falls back to the proxy's own address, which would give every client behind it one fresh
//! budget.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The most proxy hops walked; a longer chain is a forgery or a loop.
const MAX_HOPS: usize = 16;

/// Which header trusted proxies forward the client address in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx's `$proxy_add_x_forwarded_for`).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"`.
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// A trusted proxy forwarded an entry that names no address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unreadable {header} entry from a trusted proxy: {entry}")]
pub struct UnreadableForwarded {
    /// The header's name.
    pub header: &'static str,
    /// The entry, printable (non-ASCII bytes escaped).
    pub entry: String,
}

/// Resolves the client address from the peer and the forwarding header's values (raw bytes,
/// in the order received; several headers count as one comma-separated list).
pub fn resolve<'a>(
    peer: IpAddr,
    values: impl DoubleEndedIterator<Item = &'a [u8]>,
    header: ForwardedHeader,
    trusted: &[IpNet],
) -> Result<IpAddr, UnreadableForwarded> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return Ok(client);
    }
    let entries = values
        .rev()
        .flat_map(|value| split_list(value).into_iter().rev());
    for entry in entries.take(MAX_HOPS) {
        let hop = match header {
            ForwardedHeader::XForwardedFor => parse_node(entry),
            ForwardedHeader::Forwarded => forwarded_for(entry).and_then(parse_node),
        }
        .ok_or_else(|| UnreadableForwarded {
            header: header.name(),
            entry: entry.escape_ascii().to_string(),
        })?;
        client = hop;
        if !is_trusted(&client) {
            break;
        }
    }
    Ok(client)
}

/// Splits a header value on commas outside quoted strings.
fn split_list(value: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &byte) in value.iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// The `for=` value of one RFC 7239 forwarded-element, unquoted.
fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    element.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let (name, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        if !name.eq_ignore_ascii_case(b"for") {
            return None;
        }
        let value = value.get(1..)?.trim_ascii();
        Some(
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value),
        )
    })
}

/// Parses one node: `203.0.113.7`, `2001:db8::1`, `[2001:db8::1]`, or either with a port.
/// `unknown`, obfuscated identifiers and anything non-ASCII name no address.
fn parse_node(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry.trim_ascii()).ok()?;
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

    fn xff(peer: &str, values: &[&str], trusted: &[&str]) -> Result<IpAddr, UnreadableForwarded> {
        let values = values.iter().map(|v| v.as_bytes());
        resolve(
            ip(peer),
            values,
            ForwardedHeader::XForwardedFor,
            &nets(trusted),
        )
    }

    fn forwarded(values: &[&str]) -> Result<IpAddr, UnreadableForwarded> {
        let values = values.iter().map(|v| v.as_bytes());
        resolve(
            ip("10.0.0.1"),
            values,
            ForwardedHeader::Forwarded,
            &nets(&["10.0.0.0/8"]),
        )
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            xff("198.51.100.9", &["1.2.3.4"], &["10.0.0.0/8"]),
            Ok(ip("198.51.100.9"))
        );
        let garbage: &[&[u8]] = &[b"\xff\xfe"];
        let got = resolve(
            ip("198.51.100.9"),
            garbage.iter().copied(),
            ForwardedHeader::XForwardedFor,
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got, Ok(ip("198.51.100.9")));
    }

    #[test]
    fn a_trusted_proxy_is_read_from_the_right_past_other_trusted_proxies() {
        let got = xff(
            "10.0.0.1",
            &["6.6.6.6, 203.0.113.7, 10.1.1.1"],
            &["10.0.0.0/8"],
        );
        assert_eq!(got, Ok(ip("203.0.113.7")));
    }

    #[test]
    fn several_headers_are_one_list() {
        let got = xff(
            "10.0.0.1",
            &["6.6.6.6", "203.0.113.7", "10.1.1.1"],
            &["10.0.0.0/8"],
        );
        assert_eq!(got, Ok(ip("203.0.113.7")));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        for (entry, expect) in [
            ("203.0.113.7:5555", "203.0.113.7"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::ffff:198.51.100.1", "198.51.100.1"),
        ] {
            assert_eq!(
                xff("::ffff:127.0.0.1", &[entry], &["127.0.0.1/32"]),
                Ok(ip(expect)),
                "{entry}"
            );
        }
    }

    #[test]
    fn a_non_ascii_byte_behind_a_trusted_proxy_is_an_error_not_the_proxy() {
        // What nginx forwards when a client sent `X-Forwarded-For: \xff`: its own entry after.
        let raw: &[&[u8]] = &[b"\xff, 203.0.113.7"];
        let got = resolve(
            ip("10.0.0.1"),
            raw.iter().copied(),
            ForwardedHeader::XForwardedFor,
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(
            got,
            Ok(ip("203.0.113.7")),
            "the nearest untrusted entry is readable"
        );
        let raw: &[&[u8]] = &[b"203.0.113.7, \xff"];
        let got = resolve(
            ip("10.0.0.1"),
            raw.iter().copied(),
            ForwardedHeader::XForwardedFor,
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got.map_err(|e| e.entry), Err(" \\xff".to_owned()));
    }

    #[test]
    fn garbage_behind_a_trusted_proxy_is_an_error() {
        assert!(xff("10.0.0.1", &["not-an-ip, 10.0.0.2"], &["10.0.0.0/8"]).is_err());
        assert!(xff("10.0.0.1", &[""], &["10.0.0.0/8"]).is_err());
    }

    #[test]
    fn a_missing_header_leaves_the_peer() {
        assert_eq!(xff("10.0.0.1", &[], &["10.0.0.0/8"]), Ok(ip("10.0.0.1")));
    }

    #[test]
    fn forwarded_for_values_quoted_with_ports_and_ipv6_are_understood() {
        assert_eq!(
            forwarded(&["for=192.0.2.60;proto=http;by=203.0.113.43"]),
            Ok(ip("192.0.2.60"))
        );
        assert_eq!(
            forwarded(&["For=\"[2001:db8:cafe::17]:4711\""]),
            Ok(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            forwarded(&["for=198.51.100.17, for=\"10.1.2.3:80\";proto=https"]),
            Ok(ip("198.51.100.17"))
        );
        assert_eq!(
            forwarded(&["proto=https;for=\"192.0.2.1\""]),
            Ok(ip("192.0.2.1"))
        );
    }

    #[test]
    fn obfuscated_unknown_or_missing_forwarded_for_values_are_errors() {
        for value in [
            "for=_hidden",
            "for=unknown",
            "proto=https",
            "for=\"_x\", for=10.0.0.9",
            "for=\"[::1\"",
        ] {
            assert!(forwarded(&[value]).is_err(), "{value}");
        }
    }

    proptest! {
        /// Whatever bytes a client puts in the header, an untrusted peer is never replaced, and
        /// a trusted peer resolves to an address or an error without panicking.
        #[test]
        fn hostile_headers_never_panic_or_override_an_untrusted_peer(
            header in proptest::collection::vec(any::<u8>(), 0..64),
            forwarded in any::<bool>(),
        ) {
            let kind = if forwarded { ForwardedHeader::Forwarded } else { ForwardedHeader::XForwardedFor };
            let trusted = nets(&["10.0.0.0/8"]);
            let values: [&[u8]; 1] = [&header];
            prop_assert_eq!(resolve(ip("198.51.100.1"), values.into_iter(), kind, &trusted), Ok(ip("198.51.100.1")));
            let _ = resolve(ip("10.0.0.1"), values.into_iter(), kind, &trusted);
        }
    }
}
