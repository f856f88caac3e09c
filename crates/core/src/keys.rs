//! The dimensions an attempt is counted under, and the store key of each.
//!
//! A login attempt is counted against its client IP, the IP's subnet (IPv4 /24 and IPv6 /64 by
//! default: one host, one home network, one cloud allocation), for IPv6 the wider network (/48: what
//! one customer or tunnel broker hands out), the normalised username, the username from that IP,
//! and the whole service. 6to4 and Teredo addresses count as the IPv4 address they carry. Usernames enter keys only as a keyed hash
//! (HMAC-SHA-256 with a server secret, truncated to 128 bits), so a store dump reveals no names.

use std::borrow::Cow;
use std::fmt::Write;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::device::DeviceId;
use crate::username::Username;

/// What a counter counts attempts of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Every attempt the service sees.
    Global,
    /// One client address.
    Ip,
    /// The client's subnet.
    Subnet,
    /// An IPv6 client's wider network (its /48 by default); IPv4 clients have none.
    Network,
    /// One (normalised) username, from anywhere.
    Username,
    /// One username from one client address.
    UsernameIp,
    /// One device that proved a past login to the username (a device cookie); its key names
    /// the account too, so it lives with the account's other keys.
    Device,
}

impl Dimension {
    /// Every dimension, in the order keys are derived.
    pub const ALL: [Dimension; 7] = [
        Dimension::Global,
        Dimension::Ip,
        Dimension::Subnet,
        Dimension::Network,
        Dimension::Username,
        Dimension::UsernameIp,
        Dimension::Device,
    ];

    /// Whether a successful login clears this dimension's failures. Only the account's own
    /// dimensions do: an attacker must not reset an IP's or subnet's counters by logging into an
    /// account of their own.
    pub fn resets_on_success(self) -> bool {
        matches!(
            self,
            Dimension::Username | Dimension::UsernameIp | Dimension::Device
        )
    }

    /// Whether the dimension counts a source of attempts (an address or a network of them),
    /// whose failures make its next attempts risky (see [`crate::challenge`]).
    pub fn is_source(self) -> bool {
        matches!(self, Dimension::Ip | Dimension::Subnet | Dimension::Network)
    }

    /// Whether the dimension's limits tighten while the service is under attack.
    pub fn tightens_under_attack(self) -> bool {
        self == Dimension::Ip
    }

    /// The dimension's name in keys, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Global => "global",
            Dimension::Ip => "ip",
            Dimension::Subnet => "subnet",
            Dimension::Network => "network",
            Dimension::Username => "username",
            Dimension::UsernameIp => "username_ip",
            Dimension::Device => "device",
        }
    }

    /// What its store keys start with (the global key is `g` itself).
    fn key_prefix(self) -> &'static str {
        match self {
            Dimension::Global => "g",
            Dimension::Ip => "ip:",
            Dimension::Subnet => "net:",
            Dimension::Network => "nw:",
            Dimension::Username => "u:",
            Dimension::UsernameIp => "ui:",
            Dimension::Device => "dev:",
        }
    }
}

/// One counter an attempt touches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptKey {
    /// What the key counts.
    pub dimension: Dimension,
    /// The store key, without any deployment prefix.
    pub key: String,
}

impl AttemptKey {
    /// The one key of the whole service (the under-attack signal's).
    pub fn global() -> Self {
        Self::new(Dimension::Global, &[])
    }

    /// The key of `dimension` for what `parts` name, joined: concatenated, not formatted, since
    /// every attempt derives several, refused floods included.
    fn new(dimension: Dimension, parts: &[&str]) -> Self {
        let prefix = dimension.key_prefix();
        let mut key =
            String::with_capacity(prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        key.push_str(prefix);
        for part in parts {
            key.push_str(part);
        }
        AttemptKey { dimension, key }
    }

    /// What the key counts attempts of, so that related keys can be kept together (one Redis
    /// Cluster slot decides them atomically): the account's username digest for the account's
    /// own keys (username, username and address, device); the address block an address, a
    /// subnet or a network lies in (an IPv4 /16 as `a.b`, an IPv6 /32 as `x:y`), so an
    /// attempt's source keys share one too (a subnet or network wider than a block is the block
    /// of its first address); the whole key otherwise.
    pub fn subject(&self) -> Cow<'_, str> {
        let rest = self
            .key
            .strip_prefix(self.dimension.key_prefix())
            .unwrap_or(&self.key);
        match self.dimension {
            Dimension::Username | Dimension::UsernameIp | Dimension::Device => {
                Cow::Borrowed(rest.split(':').next().unwrap_or(rest))
            }
            Dimension::Ip | Dimension::Subnet | Dimension::Network => {
                let address = rest.split_once('/').map_or(rest, |(address, _)| address);
                match address.parse::<IpAddr>() {
                    Ok(IpAddr::V4(v4)) => {
                        let [a, b, ..] = v4.octets();
                        Cow::Owned(format!("{a}.{b}"))
                    }
                    Ok(IpAddr::V6(v6)) => {
                        let [a, b, ..] = v6.segments();
                        Cow::Owned(format!("{a:x}:{b:x}"))
                    }
                    // Not a key the deriver makes: a subject of its own.
                    Err(_) => Cow::Borrowed(&self.key),
                }
            }
            Dimension::Global => Cow::Borrowed(&self.key),
        }
    }

    /// The key a store key names (as `/admin/v1/lockouts` lists them), or `None` when it is
    /// not one [`KeyDeriver`] makes.
    pub fn from_store_key(key: &str) -> Option<AttemptKey> {
        // Longest prefixes first: `u:` is a prefix of `ui:`.
        let dimension = [
            Dimension::UsernameIp,
            Dimension::Username,
            Dimension::Device,
            Dimension::Network,
            Dimension::Subnet,
            Dimension::Ip,
        ]
        .into_iter()
        .find(|d| key.len() > d.key_prefix().len() && key.starts_with(d.key_prefix()))?;
        Some(AttemptKey {
            dimension,
            key: key.to_owned(),
        })
    }
}

/// Refused subnet prefix lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// IPv4 prefixes are 0..=32.
    #[error("IPv4 subnet prefix {0} is not in 0..=32")]
    V4(u8),
    /// IPv6 prefixes are 0..=128.
    #[error("IPv6 subnet prefix {0} is not in 0..=128")]
    V6(u8),
    /// An IPv6 network is no longer than the subnets in it.
    #[error("IPv6 network prefix {0} is not in 0..=the IPv6 subnet prefix")]
    V6Network(u8),
}

/// Derives an attempt's keys: subnet widths and the secret that hashes usernames.
#[derive(Clone)]
pub struct KeyDeriver {
    mac: Hmac<Sha256>,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    ipv6_network_prefix: u8,
}

impl KeyDeriver {
    /// A deriver with the given username-hashing secret and the prefix lengths of IPv4 subnets,
    /// IPv6 subnets and IPv6 networks.
    pub fn new(
        hmac_key: &[u8],
        ipv4_prefix: u8,
        ipv6_prefix: u8,
        ipv6_network_prefix: u8,
    ) -> Result<Self, PrefixError> {
        if ipv4_prefix > 32 {
            return Err(PrefixError::V4(ipv4_prefix));
        }
        if ipv6_prefix > 128 {
            return Err(PrefixError::V6(ipv6_prefix));
        }
        if ipv6_network_prefix > ipv6_prefix {
            return Err(PrefixError::V6Network(ipv6_network_prefix));
        }
        Ok(Self {
            mac: crate::keyed_mac(hmac_key),
            ipv4_prefix,
            ipv6_prefix,
            ipv6_network_prefix,
        })
    }

    /// The subnet an address is counted in (see [`counted_address`]).
    pub fn subnet(&self, ip: IpAddr) -> IpNet {
        let ip = counted_address(ip);
        let prefix = match ip {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        };
        truncate(ip, prefix)
    }

    /// The wider network of an IPv6 address (none for an address counted as IPv4).
    pub fn network(&self, ip: IpAddr) -> Option<IpNet> {
        match counted_address(ip) {
            IpAddr::V4(_) => None,
            ip @ IpAddr::V6(_) => Some(truncate(ip, self.ipv6_network_prefix)),
        }
    }

    /// The keyed hash that stands for a username in keys (32 hex characters).
    pub fn username_digest(&self, username: &Username) -> String {
        let mut mac = self.mac.clone();
        mac.update(username.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        crate::hex_string(&digest[..16])
    }

    /// The keyed digest that stands for a passkey's credential id where a username's would (a
    /// source's distinct accounts), domain-separated from usernames' hashes.
    pub fn credential_digest(&self, credential_id: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"passkey credential\0");
        mac.update(credential_id);
        let digest = mac.finalize().into_bytes();
        crate::hex_string(&digest[..16])
    }

    /// The keyed 64-bit digest that stands for a failed password in the signal's password
    /// fan-out (domain-separated from usernames' hashes, so the two never meet). Never logged;
    /// stores keep it only for the fan-out's window.
    pub fn password_digest(&self, password: &str) -> u64 {
        let mut mac = self.mac.clone();
        mac.update(b"password fan-out\0");
        mac.update(password.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    /// The key counting one username from anywhere.
    pub fn username_key(&self, username: &Username) -> AttemptKey {
        username_key(&self.username_digest(username))
    }

    /// The key counting one client address.
    pub fn ip_key(&self, ip: IpAddr) -> AttemptKey {
        AttemptKey::new(Dimension::Ip, &[&address_text(counted_address(ip))])
    }

    /// The key counting one subnet (given as any network; it is truncated to its prefix).
    pub fn subnet_key(&self, net: IpNet) -> AttemptKey {
        AttemptKey::new(Dimension::Subnet, &[&network_text(net)])
    }

    /// The key counting one IPv6 network (given as any network; it is truncated to its prefix).
    pub fn network_key(&self, net: IpNet) -> AttemptKey {
        AttemptKey::new(Dimension::Network, &[&network_text(net)])
    }

    /// The keys of the source alone: address, subnet and, for IPv6, network (what a registration
    /// counts against).
    pub fn source_keys(&self, ip: IpAddr) -> Vec<AttemptKey> {
        let ip = counted_address(ip);
        let mut keys = Vec::with_capacity(3);
        self.push_source_keys(ip, &address_text(ip), &mut keys);
        keys
    }

    /// Pushes the source's keys of a counted address `ip`, written out as `ip_text` (an
    /// attempt's keys write it out once).
    fn push_source_keys(&self, ip: IpAddr, ip_text: &str, keys: &mut Vec<AttemptKey>) {
        keys.push(AttemptKey::new(Dimension::Ip, &[ip_text]));
        keys.push(self.subnet_key(self.subnet(ip)));
        keys.extend(self.network(ip).map(|net| self.network_key(net)));
    }

    /// Every key an attempt by `username` from `ip` touches. A trusted device (a valid device
    /// cookie for this username) is counted per device alone: neither the account's counters,
    /// which an attacker can drive into lockout, nor the source's, which an attacker sharing the
    /// address (an office or carrier NAT) can get banned, apply to it.
    pub fn keys(
        &self,
        ip: IpAddr,
        username: &Username,
        device: Option<&DeviceId>,
    ) -> Vec<AttemptKey> {
        self.keys_for_digest(ip, &self.username_digest(username), device)
    }

    /// [`KeyDeriver::keys`] for a username already hashed with [`KeyDeriver::username_digest`]
    /// (the server hashes once per attempt and passes the digest to the store as well).
    pub fn keys_for_digest(
        &self,
        ip: IpAddr,
        user: &str,
        device: Option<&DeviceId>,
    ) -> Vec<AttemptKey> {
        let mut keys = Vec::with_capacity(6);
        keys.push(AttemptKey::global());
        match device {
            Some(device) => keys.push(AttemptKey::new(
                Dimension::Device,
                &[user, ":", device.as_str()],
            )),
            None => {
                let ip = counted_address(ip);
                let ip_text = address_text(ip);
                self.push_source_keys(ip, &ip_text, &mut keys);
                keys.push(username_key(user));
                keys.push(AttemptKey::new(
                    Dimension::UsernameIp,
                    &[user, ":", &ip_text],
                ));
            }
        }
        keys
    }
}

/// The address an attempt is counted under: IPv4-mapped IPv6 addresses, 6to4 addresses
/// (2002::/16) and Teredo addresses (2001::/32) count as the IPv4 address they carry, so a client
/// cannot leave its IPv4 budgets by wrapping its address.
pub fn counted_address(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip.to_canonical() else {
        return ip.to_canonical();
    };
    let s = v6.segments();
    let embedded =
        |high: u16, low: u16| IpAddr::V4(((u32::from(high) << 16) | u32::from(low)).into());
    match s {
        [0x2002, high, low, ..] => embedded(high, low),
        // Teredo keeps the client's public address in the last 32 bits, inverted.
        [0x2001, 0, _, _, _, _, high, low] => embedded(!high, !low),
        _ => IpAddr::V6(v6),
    }
}

/// `ip`'s network of `prefix` bits (validated by [`KeyDeriver::new`]).
fn truncate(ip: IpAddr, prefix: u8) -> IpNet {
    IpNet::new(ip, prefix)
        .map(|net| net.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

/// `ip` as its `Display` writes it; an IPv4 address by hand, since the formatter's padding goes
/// through a buffer and every attempt writes its address out twice (its address and subnet
/// keys), refused floods included.
fn address_text(ip: IpAddr) -> String {
    let mut text = String::with_capacity(15);
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                push_decimal(&mut text, octet);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(text, "{v6}");
        }
    }
    text
}

/// `net` truncated to its prefix, as its `Display` writes it (`address/prefix`).
fn network_text(net: IpNet) -> String {
    let net = net.trunc();
    let mut text = address_text(net.addr());
    text.push('/');
    push_decimal(&mut text, net.prefix_len());
    text
}

fn push_decimal(text: &mut String, n: u8) {
    if n >= 100 {
        text.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        text.push(char::from(b'0' + n / 10 % 10));
    }
    text.push(char::from(b'0' + n % 10));
}

/// The username key from the username's keyed hash.
fn username_key(digest: &str) -> AttemptKey {
    AttemptKey::new(Dimension::Username, &[digest])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Keys write addresses and networks out as their `Display` does (the store's keys
        /// from before were written that way), and hex as `hex::encode` does.
        #[test]
        fn addresses_networks_and_hex_are_written_as_display_writes_them(
            v4 in any::<[u8; 4]>(),
            v6 in any::<[u16; 8]>(),
            v4_prefix in 0u8..=32,
            v6_prefix in 0u8..=128,
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let v4 = IpAddr::from(v4);
            let v6 = IpAddr::from(v6);
            prop_assert_eq!(address_text(v4), v4.to_string());
            prop_assert_eq!(address_text(v6), v6.to_string());
            for net in [IpNet::new(v4, v4_prefix)?, IpNet::new(v6, v6_prefix)?] {
                prop_assert_eq!(network_text(net), net.trunc().to_string());
            }
            prop_assert_eq!(crate::hex_string(&bytes), hex::encode(&bytes));
        }
    }

    fn deriver() -> KeyDeriver {
        KeyDeriver::new(b"secret", 24, 64, 48).unwrap()
    }

    /// alice, and a device that proved a past login to her account.
    fn alice_and_her_device() -> (Username, DeviceId) {
        let name = Username::parse("alice").unwrap();
        let cookies = crate::DeviceCookies::new(b"device key");
        let device = cookies
            .verify(&cookies.issue(&name, [7; 16]), &name)
            .unwrap();
        (name, device)
    }

    fn key(keys: &[AttemptKey], dimension: Dimension) -> &str {
        &keys.iter().find(|k| k.dimension == dimension).unwrap().key
    }

    #[test]
    fn every_derived_key_but_the_global_one_is_read_back_from_its_store_key() {
        let d = deriver();
        let (username, device) = alice_and_her_device();
        let mut keys = d.keys("2001:db8::1".parse().unwrap(), &username, None);
        keys.extend(d.keys("203.0.113.7".parse().unwrap(), &username, Some(&device)));
        for key in keys {
            let read = AttemptKey::from_store_key(&key.key);
            if key.dimension == Dimension::Global {
                assert_eq!(read, None);
            } else {
                assert_eq!(read, Some(key));
            }
        }
        for not_a_key in ["", "u:", "x:1", "g", "ip"] {
            assert_eq!(AttemptKey::from_store_key(not_a_key), None, "{not_a_key}");
        }
    }

    #[test]
    fn subnets_are_slash_24_and_slash_64_by_default() {
        let d = deriver();
        assert_eq!(
            d.subnet("203.0.113.77".parse().unwrap()).to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            d.subnet("2001:db8:1:2:3:4:5:6".parse().unwrap())
                .to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            d.subnet("::ffff:203.0.113.77".parse().unwrap()).to_string(),
            "203.0.113.0/24"
        );
    }

    #[test]
    fn usernames_appear_in_keys_only_as_a_keyed_hash() {
        let name = Username::parse("alice").unwrap();
        let keys = deriver().keys("198.51.100.1".parse().unwrap(), &name, None);
        assert!(keys.iter().all(|k| !k.key.contains("alice")));
        let other_secret = KeyDeriver::new(b"other", 24, 64, 48).unwrap();
        assert_ne!(
            deriver().username_digest(&name),
            other_secret.username_digest(&name)
        );
        let digest = deriver().username_digest(&name);
        let written: Vec<_> = keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(
            written,
            [
                "g".to_owned(),
                "ip:198.51.100.1".to_owned(),
                "net:198.51.100.0/24".to_owned(),
                format!("u:{digest}"),
                format!("ui:{digest}:198.51.100.1"),
            ]
        );
    }

    #[test]
    fn variants_of_one_username_share_its_keys() {
        let d = deriver();
        let ip = "198.51.100.1".parse().unwrap();
        let a = d.keys(ip, &Username::parse("Admin").unwrap(), None);
        let b = d.keys(ip, &Username::parse(" ＡＤＭＩＮ").unwrap(), None);
        assert_eq!(a, b);
    }

    #[test]
    fn prefixes_out_of_range_are_refused() {
        assert_eq!(
            KeyDeriver::new(b"k", 33, 64, 48).err(),
            Some(PrefixError::V4(33))
        );
        assert_eq!(
            KeyDeriver::new(b"k", 24, 129, 48).err(),
            Some(PrefixError::V6(129))
        );
        assert_eq!(
            KeyDeriver::new(b"k", 24, 64, 65).err(),
            Some(PrefixError::V6Network(65))
        );
    }

    #[test]
    fn ipv6_addresses_also_count_under_their_network() {
        let d = deriver();
        let name = Username::parse("alice").unwrap();
        let keys = d.keys("2001:db8:7:42::9".parse().unwrap(), &name, None);
        assert_eq!(key(&keys, Dimension::Subnet), "net:2001:db8:7:42::/64");
        assert_eq!(key(&keys, Dimension::Network), "nw:2001:db8:7::/48");
        let v4 = d.keys("198.51.100.1".parse().unwrap(), &name, None);
        assert!(v4.iter().all(|k| k.dimension != Dimension::Network));
    }

    #[test]
    fn six_to_four_and_teredo_addresses_count_as_their_ipv4_address() {
        let d = deriver();
        let name = Username::parse("alice").unwrap();
        let plain = d.keys("192.0.2.33".parse().unwrap(), &name, None);
        // 6to4: 2002:c000:0221::/48 carries 192.0.2.33.
        let six_to_four = d.keys("2002:c000:221:5::1".parse().unwrap(), &name, None);
        // Teredo: the last 32 bits are 192.0.2.33 inverted (3f ff fd de).
        let teredo = d.keys(
            "2001:0:4136:e378:8000:63bf:3fff:fdde".parse().unwrap(),
            &name,
            None,
        );
        assert_eq!(plain, six_to_four);
        assert_eq!(plain, teredo);
    }

    #[test]
    fn a_trusted_device_is_counted_per_device_alone() {
        let d = deriver();
        let (name, device) = alice_and_her_device();
        let keys = d.keys("198.51.100.1".parse().unwrap(), &name, Some(&device));
        let dimensions: Vec<_> = keys.iter().map(|k| k.dimension).collect();
        assert_eq!(dimensions, [Dimension::Global, Dimension::Device]);
        let digest = d.username_digest(&name);
        assert_eq!(keys[1].key, format!("dev:{digest}:{}", device.as_str()));
    }

    #[test]
    fn an_accounts_keys_share_its_subject_and_a_sources_its_address_block() {
        let d = deriver();
        let (name, device) = alice_and_her_device();
        let ip = "2001:db8::1".parse().unwrap();
        let mut keys = d.keys(ip, &name, None);
        keys.extend(d.keys(ip, &name, Some(&device)));
        let digest = d.username_digest(&name);
        for key in &keys {
            let expected = match key.dimension {
                Dimension::Username | Dimension::UsernameIp | Dimension::Device => &digest,
                Dimension::Ip | Dimension::Subnet | Dimension::Network => "2001:db8",
                Dimension::Global => &key.key,
            };
            assert_eq!(key.subject(), expected, "{key:?}");
        }
        let v4: Vec<_> = d
            .source_keys("198.51.100.7".parse().unwrap())
            .iter()
            .map(|k| k.subject().into_owned())
            .collect();
        assert_eq!(v4, ["198.51", "198.51"], "an IPv4 address and its /24");
    }
}
