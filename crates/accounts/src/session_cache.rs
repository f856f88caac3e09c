//! The per-replica cache of session lookups that forward authentication and introspection
//! answer from (`GET /v1/auth`, `GET /v1/session`): a proxy asks on every request it protects,
//! and a database query each time would make the check cost more than the page.
//!
//! An entry lives `session.cache_secs` at most, and never past its session's expiry. A session
//! that ends is forgotten at once on the replica that ended it and, through the change channel
//! the deny cache already uses, on every other replica within the channel's delay; a replica
//! whose subscription was away forgets everything when it resubscribes. A lookup that raced an
//! ending (read before it, answered after) is not kept: every ending moves an epoch, and a
//! result is cached only when the epoch it started under still stands.
//!
//! Unknown tokens are cached too ("no such session"): a token is never issued after it was
//! looked up, so the answer cannot go stale, and a client retrying a dead cookie costs no query.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_core::UnixMillis;
use portcullis_store::Clock;
use quick_cache::sync::Cache;

/// Who a live session belongs to, as a protected application is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The account's public id.
    pub subject: String,
    /// The account's normalised username.
    pub username: String,
    /// When the session ends.
    pub expires_at: UnixMillis,
    /// Whether it was opened with a breached password, not changed since.
    pub password_change_required: bool,
}

/// Entries kept at most (least used go first): about 200 bytes each.
const CAPACITY: usize = 50_000;

/// Session lookups by token digest, each until its deadline.
#[derive(Clone)]
pub struct SessionCache {
    entries: Arc<Cache<String, Entry>>,
    /// Moves on every ending; see the module header.
    epoch: Arc<AtomicU64>,
    ttl_ms: u64,
    clock: Arc<dyn Clock>,
}

#[derive(Clone)]
struct Entry {
    identity: Option<Identity>,
    until: UnixMillis,
}

/// Where a lookup started, to be handed back with its result.
#[derive(Clone, Copy, Debug)]
pub struct Ticket(u64);

impl SessionCache {
    /// A cache keeping lookups `ttl_ms` (0: none), on `clock`'s time.
    pub fn new(ttl_ms: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            entries: Arc::new(Cache::new(CAPACITY)),
            epoch: Arc::new(AtomicU64::new(0)),
            ttl_ms,
            clock,
        }
    }

    /// The cached answer for `digest` (`Some(None)`: known to be no live session), or the
    /// ticket a lookup must start under.
    pub fn get(&self, digest: &str) -> Result<Option<Identity>, Ticket> {
        let ticket = Ticket(self.epoch.load(Ordering::Acquire));
        let now = self.clock.now();
        match self.entries.get(digest) {
            Some(entry) if entry.until > now => {
                metrics::counter!("portcullis_session_cache_total", "result" => "hit").increment(1);
                Ok(entry.identity)
            }
            Some(_) => {
                self.entries.remove(digest);
                Err(ticket)
            }
            None => Err(ticket),
        }
    }

    /// Keeps the answer a lookup started under `ticket` found, unless a session ended since.
    pub fn put(&self, digest: &str, identity: Option<&Identity>, ticket: Ticket) {
        metrics::counter!("portcullis_session_cache_total", "result" => "miss").increment(1);
        if self.ttl_ms == 0 || self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        let mut until = self.clock.now().saturating_add(self.ttl_ms);
        if let Some(identity) = identity {
            until = until.min(identity.expires_at);
        }
        self.entries.insert(
            digest.to_owned(),
            Entry {
                identity: identity.cloned(),
                until,
            },
        );
    }

    /// Forgets the sessions of the account `subject`, or every session with `None`.
    pub fn forget(&self, subject: Option<&str>) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match subject {
            None => self.entries.clear(),
            Some(subject) => self.entries.retain(|_, entry| {
                entry
                    .identity
                    .as_ref()
                    .is_none_or(|identity| identity.subject != subject)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use portcullis_store::ManualClock;

    use super::*;

    const T0: UnixMillis = 1_700_000_000_000;

    fn identity(subject: &str, expires_at: UnixMillis) -> Identity {
        Identity {
            subject: subject.to_owned(),
            username: format!("user-{subject}"),
            expires_at,
            password_change_required: false,
        }
    }

    fn cache(ttl_ms: u64) -> (SessionCache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        (SessionCache::new(ttl_ms, clock.clone()), clock)
    }

    #[test]
    fn an_answer_is_kept_for_the_ttl_and_never_past_the_sessions_expiry() {
        let (cache, clock) = cache(5_000);
        let alice = identity("a", T0 + 3_000);
        let ticket = cache.get("d1").unwrap_err();
        cache.put("d1", Some(&alice), ticket);
        let ticket = cache.get("d2").unwrap_err();
        cache.put("d2", None, ticket);
        assert_eq!(cache.get("d1").unwrap(), Some(alice));
        assert_eq!(cache.get("d2").unwrap(), None, "no session, remembered");
        clock.advance(3_000);
        assert!(cache.get("d1").is_err(), "the session expired: asked again");
        assert!(cache.get("d2").is_ok());
        clock.advance(2_000);
        assert!(cache.get("d2").is_err(), "the ttl passed");
    }

    #[test]
    fn an_ending_forgets_the_accounts_sessions_only_and_a_raced_lookup_is_not_kept() {
        let (cache, _clock) = cache(5_000);
        for (digest, subject) in [("d1", "a"), ("d2", "a"), ("d3", "b")] {
            let ticket = cache.get(digest).unwrap_err();
            cache.put(digest, Some(&identity(subject, T0 + 60_000)), ticket);
        }
        cache.forget(Some("a"));
        assert!(cache.get("d1").is_err() && cache.get("d2").is_err());
        assert!(cache.get("d3").is_ok(), "another account's session stays");

        // A lookup that started before an ending and answers after it: not kept.
        let ticket = cache.get("d1").unwrap_err();
        cache.forget(Some("c"));
        cache.put("d1", Some(&identity("a", T0 + 60_000)), ticket);
        assert!(cache.get("d1").is_err());

        cache.forget(None);
        assert!(
            cache.get("d3").is_err(),
            "everything, after a resubscription"
        );
    }

    #[test]
    fn a_ttl_of_zero_keeps_nothing() {
        let (cache, _clock) = cache(0);
        let ticket = cache.get("d1").unwrap_err();
        cache.put("d1", Some(&identity("a", T0 + 60_000)), ticket);
        assert!(cache.get("d1").is_err());
    }
}
