//! Where each fact lives in Redis: every key name the store uses, and so which Cluster slot
//! holds it.
//!
//! Redis Cluster places a key by its hash tag (the part in `{}`), and a function call may only
//! touch keys of one slot. Two layouts:
//! - `single_slot`: every key is `{prefix}:...`, so one call decides a whole attempt, and a
//!   Cluster buys failover but no capacity (one primary serves the deployment);
//! - `per_subject`: a counter is tagged with its subject ([`AttemptKey::subject`]): the
//!   account's keys with its username digest, so its lockout stays atomic in one slot; an
//!   address, a subnet or a network with the address block it lies in (an IPv4 /16, an IPv6
//!   /32), so an attempt's source counters share a slot too. An attempt is then two calls (source and
//!   account), and a botnet's addresses, spread over many blocks, spread over every primary.
//!   A subnet or network wider than its block (an IPv4 subnet shorter than /16) lands in a
//!   slot of its own: one call more, the same decisions.
//!
//! The challenge proofs and the signal's counters are spread too; the restrictions index, the
//! event stream and the change channel stay single keys (they see a call per lockout or event,
//! not per attempt).

use std::borrow::Cow;

use portcullis_core::AttemptKey;
use serde::{Deserialize, Serialize};

/// How the store's keys are spread over Cluster slots (`store.redis.sharding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharding {
    /// Every key in the slot of the prefix.
    SingleSlot,
    /// Each subject's keys in a slot of their own.
    PerSubject,
}

/// How many counters the under-attack signal is spread over (`per_subject`: as many slots).
pub const SIGNAL_SHARDS: u64 = 8;

/// The names of a deployment's keys.
#[derive(Clone, Debug)]
pub struct Keyspace {
    /// The deployment's prefix, without braces.
    prefix: String,
    sharding: Sharding,
}

impl Keyspace {
    /// The keyspace of `prefix` under `sharding`.
    pub fn new(prefix: &str, sharding: Sharding) -> Self {
        Self {
            prefix: prefix.to_owned(),
            sharding,
        }
    }

    /// A key tagged with `subject` (`per_subject`) or with the prefix (`single_slot`).
    fn tagged(&self, kind: &str, subject: &str, rest: &str) -> String {
        match self.sharding {
            Sharding::SingleSlot => format!("{{{}}}:{kind}:{subject}{rest}", self.prefix),
            Sharding::PerSubject => format!("{}:{kind}:{{{subject}}}{rest}", self.prefix),
        }
    }

    /// A single key of the deployment (in the prefix's slot either way).
    pub fn single(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.prefix)
    }

    /// The slot-group of a counter: keys with the same group are decided by one call.
    pub fn group<'k>(&self, key: &'k AttemptKey) -> Cow<'k, str> {
        match self.sharding {
            Sharding::SingleSlot => Cow::Borrowed(""),
            Sharding::PerSubject => key.subject(),
        }
    }

    /// A counter: one packed string (`state`).
    pub fn counter(&self, key: &AttemptKey) -> String {
        match self.sharding {
            Sharding::SingleSlot => self.tagged("c", "", &key.key),
            Sharding::PerSubject => self.tagged("c", &key.subject(), &format!(":{}", key.key)),
        }
    }

    /// The store key (as [`AttemptKey::key`]) of a counter's Redis key, if it is one.
    pub fn store_key<'a>(&self, counter: &'a str) -> Option<&'a str> {
        let rest = match self.sharding {
            Sharding::SingleSlot => counter.strip_prefix(&format!("{{{}}}:c:", self.prefix))?,
            Sharding::PerSubject => {
                let tagged = counter.strip_prefix(&format!("{}:c:{{", self.prefix))?;
                tagged.split_once("}:")?.1
            }
        };
        Some(rest)
    }

    /// The marker of a consumed challenge proof.
    pub fn proof(&self, nonce: &str) -> String {
        self.tagged("proof", nonce, "")
    }

    /// One shard of the under-attack signal's counts for one window (the floor's, `w`) or
    /// bucket (the detectors', `b`).
    pub fn signal(&self, shard: u64, period: &str) -> String {
        self.tagged("signal", &shard.to_string(), &format!(":{period}"))
    }

    /// The distinct failed accounts of one of the signal's buckets (a HyperLogLog).
    pub fn failed_accounts(&self, bucket: u64) -> String {
        self.tagged("failed", &bucket.to_string(), "")
    }

    /// The fan-out's counts in one fan-out window: a count-min sketch of the distinct usernames
    /// failed passwords (their keyed digests) failed on, one string of byte counters.
    pub fn fan_out(&self, window: u64) -> String {
        self.tagged("fanout", &window.to_string(), "")
    }

    /// The signal's shared history: its baseline, and each replica's last trip.
    pub fn signal_history(&self) -> String {
        self.single("signal:history")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::{KeyDeriver, Username};

    fn keys() -> Vec<AttemptKey> {
        let deriver = KeyDeriver::new(b"k", 24, 64, 48).unwrap();
        let name = Username::parse("alice").unwrap();
        deriver.keys("2001:db8::1".parse().unwrap(), &name, None)
    }

    #[test]
    fn single_slot_keys_all_carry_the_prefix_tag() {
        let space = Keyspace::new("p", Sharding::SingleSlot);
        for key in keys() {
            let counter = space.counter(&key);
            assert!(counter.starts_with("{p}:c:"), "{counter}");
            assert_eq!(space.store_key(&counter), Some(key.key.as_str()));
            assert_eq!(space.group(&key), "");
        }
        assert_eq!(space.proof("n1"), "{p}:proof:n1");
        assert_eq!(space.signal(3, "w7"), "{p}:signal:3:w7");
    }

    #[test]
    fn per_subject_keys_carry_their_subject_and_read_back() {
        let space = Keyspace::new("p", Sharding::PerSubject);
        for key in keys() {
            let counter = space.counter(&key);
            let tag = if key.dimension.is_source() {
                Cow::Borrowed("2001:db8") // the address's /32
            } else {
                key.subject()
            };
            assert!(counter.starts_with(&format!("p:c:{{{tag}}}:")), "{counter}");
            assert_eq!(space.store_key(&counter), Some(key.key.as_str()));
            assert_eq!(space.group(&key), tag);
        }
        let deriver = KeyDeriver::new(b"k", 24, 64, 48).unwrap();
        let source = deriver.source_keys("198.51.100.7".parse().unwrap());
        let groups: Vec<_> = source.iter().map(|k| space.group(k)).collect();
        assert_eq!(groups, ["198.51", "198.51"], "an IPv4 address and its /24");
        let wide = KeyDeriver::new(b"k", 8, 64, 48).unwrap();
        let source = wide.source_keys("198.51.100.7".parse().unwrap());
        let groups: Vec<_> = source.iter().map(|k| space.group(k)).collect();
        assert_eq!(
            groups,
            ["198.51", "198.0"],
            "a /8 subnet wider than the block"
        );
        assert_eq!(space.proof("n1"), "p:proof:{n1}");
        assert_eq!(space.signal(3, "w7"), "p:signal:{3}:w7");
        assert_eq!(space.fan_out(2), "p:fanout:{2}");
        assert_eq!(space.store_key("{p}:c:ip:x"), None);
        assert_eq!(space.single("events"), "{p}:events");
    }
}
