//! The under-attack signal, shared by every replica off the attempt path.
//!
//! Each replica counts what finished attempts tell (`portcullis_core::attack`: what counts, and
//! how) in its own memory. Every [`FLUSH_EVERY`] it adds them to its shard of sharded counters
//! (`SIGNAL_SHARDS` hashes per floor window and per detector bucket, each in a slot of its own
//! under `per_subject`), the failed accounts' keyed hashes to a HyperLogLog per bucket, and the
//! usernames new to it that each failed password (its keyed digest) failed on to the fan-out
//! window's count-min sketch ([`fan_out_counters`]; a password's first username waits in the
//! replica until a second follows, [`Held`]);
//! in the same round trip it reads every shard of the current and the previous window and
//! bucket back, and the shared history: the baseline, folded by whichever replica got there
//! first, and each replica's last trip. Those are the service-wide counts, which the core judges
//! together with the counts the replica has not added yet. So no attempt waits on the signal,
//! no key is written by every attempt, a replica's own attempts count at once (the attempt
//! that tips it is the one judged), and it sees the others' within two flushes (0.5 s); while
//! failures pile up before an attack is seen, and once a replica judged a trip it has not
//! shared, replicas flush every [`FLUSH_EARLY_EVERY`] instead. A trip does not wait for a
//! flush: the replica that judges it announces it on [`TRIPS`], and every replica takes it as
//! it arrives. A flush that fails keeps its counts for the next one.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use portcullis_core::UnixMillis;
use portcullis_core::attack::{
    Assessment, AttackSignal, AttackState, Baseline, ChallengeStep, Counts, Detector,
    MAX_FAN_OUT_USERNAMES, Sign, Trip,
};

use super::calls::Calls;
use super::keyspace::{Keyspace, SIGNAL_SHARDS};
use crate::{Clock, StoreError, lock};

/// How often a replica adds its counts and reads the service's back.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// While failures pile up and the signal is still off, or a trip is not shared yet, a replica
/// flushes as often as this, so the others see an attack start sooner than [`FLUSH_EVERY`]
/// allows.
pub const FLUSH_EARLY_EVERY: Duration = Duration::from_millis(50);
/// The fields of a floor window's shard hash, in the order read: attempts, failures, challenges
/// issued and answered.
const FLOOR_FIELDS: &[&str] = &["a", "f", "c", "n"];
/// The fields of a bucket's shard hash: attempts, failures, unknown usernames, challenges issued
/// and answered (distinct failed accounts are a HyperLogLog of their own).
const BUCKET_FIELDS: &[&str] = &["a", "f", "u", "c", "n"];
/// How long the shared history outlives the last flush that wrote it.
const HISTORY_TTL_MS: u64 = 7 * 24 * 3_600_000;
/// How much longer than the periods they count the counting keys live in Redis: a replica whose
/// clock lags still reads them, and so does a test on an injected clock (which jumps and stands
/// still while Redis' runs on). Readers name the periods they want, so a key that lingers
/// changes nothing.
const LINGER_MS: u64 = 60_000;

/// The fan-out's shared counts: a count-min sketch per fan-out window, one Redis string of
/// `FAN_OUT_ROWS` rows of `FAN_OUT_WIDTH` byte counters (192 KiB) that saturate at 255
/// ([`MAX_FAN_OUT_USERNAMES`], the most the setting may be). A
/// password counts in one counter of each row, and its count is the least of them. Another
/// password sharing a counter can only add to it, so the fan-out trips sooner, never later: a
/// password counted twice reads `fan_out_usernames` (10) only if, in every row, passwords
/// failing on 8 more usernames share its counter. One `BITFIELD` adds a flush's passwords (up
/// to [`FAN_OUT_PER_COMMAND`]) and answers every counter they touched, where a count per
/// password (a hash field) took a command per password.
const FAN_OUT_ROWS: u64 = 3;
const FAN_OUT_WIDTH: u64 = 1 << 16;
/// Passwords per `BITFIELD`: a flush's longest command stays under a millisecond of Redis'
/// time (about 0.17 ms on one primary in redis_cost).
const FAN_OUT_PER_COMMAND: usize = 250;

/// The sketch's counters (as `BITFIELD`'s `#` index of a `u8`) that `password`, a keyed digest,
/// counts in: one per row, each row hashing it afresh (splitmix64's finaliser).
fn fan_out_counters(password: u64) -> impl Iterator<Item = u64> {
    (0..FAN_OUT_ROWS).map(move |row| {
        let mut x = password ^ (row + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        row * FAN_OUT_WIDTH + x % FAN_OUT_WIDTH
    })
}

/// Passwords held back per fan-out window, at most: beyond, a password's first username is
/// shared at once (as every one was before the hold).
const MAX_HELD: usize = 100_000;

/// The fan-out's passwords this replica saw fail in the current window.
///
/// Most failed passwords fail once, on one account: a typo, or a leaked list's pair. Sharing
/// each would cost Redis a write per failure. So a password's first username stays here
/// until another username fails with it; then both count, and every new one after. The shared
/// count of a password is what its replicas counted, added up: each replica counts a username
/// once, so the count is exact while no username reaches two replicas with the same wrong
/// password (one that does counts twice, which only trips sooner) and no other password shares
/// its counters in the sketch (likewise, [`FAN_OUT_ROWS`]), and a fleet of R replicas
/// may hold one first username each, so a fan-out of `fan_out_usernames` trips by
/// `fan_out_usernames + R - 1` at most.
struct Held {
    /// The fan-out's threshold (`fan_out_usernames`): a password this replica alone counted
    /// on as many usernames has tripped it.
    threshold: usize,
    /// The fan-out window held.
    window: u64,
    /// Each password as this replica holds it.
    passwords: HashMap<u64, HeldPassword>,
}

/// A failed password, as [`Held`] keeps it.
enum HeldPassword {
    /// Its first username, not counted yet.
    First(String),
    /// Counted: the usernames this replica counted for it, up to the fan-out's threshold
    /// (beyond, this replica alone has tripped it, and each failure counts).
    Counted(HashSet<String>),
}

impl Held {
    /// Nothing held yet, for a fan-out of `threshold` usernames.
    fn new(threshold: u32) -> Self {
        Self {
            threshold: usize::try_from(threshold).unwrap_or(usize::MAX),
            window: 0,
            passwords: HashMap::new(),
        }
    }

    /// How many usernames to add to `password`'s count now, as it fails on `username` in
    /// `window` (a later window starts afresh: a fan-out counts within its window).
    fn failed(&mut self, window: u64, password: u64, username: &str) -> u32 {
        if window > self.window {
            self.window = window;
            self.passwords.clear();
        }
        let full = self.passwords.len() >= MAX_HELD;
        match self.passwords.entry(password) {
            // A window already left (a clock behind), or a full hold: counted at once.
            _ if window < self.window => 1,
            Entry::Vacant(_) if full => 1,
            Entry::Vacant(slot) => {
                slot.insert(HeldPassword::First(username.to_owned()));
                0
            }
            Entry::Occupied(mut slot) => match slot.get_mut() {
                HeldPassword::First(first) if first.as_str() == username => 0,
                HeldPassword::First(first) => {
                    let counted = HashSet::from([std::mem::take(first), username.to_owned()]);
                    slot.insert(HeldPassword::Counted(counted));
                    2
                }
                HeldPassword::Counted(counted) if counted.len() >= self.threshold => 1,
                HeldPassword::Counted(counted) => u32::from(counted.insert(username.to_owned())),
            },
        }
    }
}

/// The signal as an attempt was judged.
#[derive(Clone, Copy, Debug)]
pub struct Judged {
    /// The trip the judgement left (in force or not).
    trip: Option<Trip>,
    /// Whether the service is under attack.
    pub under_attack: bool,
}

/// What a replica counted and has not added yet.
#[derive(Default)]
struct Pending {
    /// The floor's counts, by window.
    floor: BTreeMap<u64, Counts>,
    /// The detectors' counts, by bucket (`failed_accounts`: those new to `failed`).
    buckets: BTreeMap<u64, Counts>,
    /// The failed accounts' keyed hashes, by bucket.
    failed: BTreeMap<u64, BTreeSet<String>>,
    /// Failed passwords' keyed digests and fan-out windows, and how many usernames new to
    /// their count they failed on.
    passwords: HashMap<(u64, u64), u32>,
}

/// This replica's side of the shared signal.
pub struct SharedSignal {
    signal: AttackSignal,
    /// The shard this replica adds to.
    shard: u64,
    pending: Mutex<Pending>,
    /// Failed passwords' first usernames, not shared yet.
    held: Mutex<Held>,
    /// The service-wide state as last read back (and the trip this replica judged since).
    seen: Mutex<AttackState>,
    /// When the trip this replica last shared started (a trip extended keeps its start).
    trip_shared: Mutex<Option<UnixMillis>>,
    /// One flush at a time (the background task's and a test's), so none reads back before
    /// another's counts are added.
    flushing: tokio::sync::Mutex<()>,
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn small(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl SharedSignal {
    /// The signal of `signal`'s settings, adding to the shard `seed` picks.
    pub fn new(signal: AttackSignal, seed: u64) -> Self {
        Self {
            signal,
            shard: seed % SIGNAL_SHARDS,
            pending: Mutex::default(),
            held: Mutex::new(Held::new(signal.fan_out_usernames)),
            seen: Mutex::default(),
            trip_shared: Mutex::default(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts one finished attempt's `sign` at `now`; a failure of a verified attempt names
    /// its account (`username`, its keyed hash) and, for a wrong password, the password's keyed
    /// digest. The sign's `first_failure_of_account` is this store's to find (the buckets'
    /// HyperLogLogs).
    pub fn count(
        &self,
        now: UnixMillis,
        mut sign: Sign,
        username: Option<&str>,
        password: Option<u64>,
    ) {
        let window = now / self.signal.window_ms.max(1);
        let bucket = now / self.signal.bucket_ms.max(1);
        let mut pending = lock(&self.pending);
        pending.floor.entry(window).or_default().add(sign);
        if let (true, Some(username)) = (sign.failed, username) {
            sign.first_failure_of_account = pending
                .failed
                .entry(bucket)
                .or_default()
                .insert(username.to_owned());
            if let Some(password) = password {
                let fan_out = now / self.signal.fan_out_window_ms.max(1);
                let new = lock(&self.held).failed(fan_out, password, username);
                if new > 0 {
                    *pending.passwords.entry((password, fan_out)).or_default() += new;
                }
            }
        }
        pending.buckets.entry(bucket).or_default().add(sign);
    }

    /// Counts a challenge's step at `now`.
    pub fn count_challenge(&self, now: UnixMillis, step: ChallengeStep) {
        let window = now / self.signal.window_ms.max(1);
        let bucket = now / self.signal.bucket_ms.max(1);
        let mut pending = lock(&self.pending);
        pending.floor.entry(window).or_default().add_challenge(step);
        pending
            .buckets
            .entry(bucket)
            .or_default()
            .add_challenge(step);
    }

    /// The service-wide state last read back, with this replica's counts not yet added, at
    /// `now` (rolled: buckets that left the view folded).
    fn view(&self, seen: &AttackState, now: UnixMillis) -> AttackState {
        let mut view = *seen;
        self.signal.roll(&mut view, now);
        let window = now / self.signal.window_ms.max(1);
        let pending = lock(&self.pending);
        if let Some(counts) = pending.floor.get(&window) {
            view.floor.merge(counts);
        }
        if let Some(counts) = window.checked_sub(1).and_then(|w| pending.floor.get(&w)) {
            view.previous_floor.merge(counts);
        }
        if let Some(counts) = pending.buckets.get(&view.bucket) {
            view.current.merge(counts);
        }
        if let Some(counts) = view
            .bucket
            .checked_sub(1)
            .and_then(|b| pending.buckets.get(&b))
        {
            view.previous.merge(counts);
        }
        view
    }

    /// The trip in force at `now`, judged on the service-wide counts last read back with this
    /// replica's own not yet added (so a replica's own attempts count at once; only the others'
    /// wait for a flush). What it judged is kept once the attempt counts ([`Self::keep`]), as
    /// the core keeps it.
    pub fn judge(&self, now: UnixMillis) -> Judged {
        let seen = lock(&self.seen);
        let mut view = self.view(&seen, now);
        let trip = self.signal.judge(&mut view, now);
        Judged {
            trip: view.trip,
            under_attack: trip.is_some(),
        }
    }

    /// Keeps (and shares at the next flush) the trip an attempt that counted was judged with.
    /// Returns it when it starts a trip this replica did not know of, which the caller
    /// announces ([`announce`]) so the others need not wait for a flush.
    pub fn keep(&self, judged: Judged) -> Option<Trip> {
        let trip = judged.trip?;
        let mut seen = lock(&self.seen);
        let known = seen.trip.is_some_and(|own| own.since == trip.since);
        (take_trip(&mut seen, trip) && !known).then_some(trip)
    }

    /// Takes a trip another replica announced (`message`, as [`announce`] sends it).
    pub fn heard(&self, message: &str) {
        match serde_json::from_str::<Trip>(message) {
            Ok(trip) => {
                take_trip(&mut lock(&self.seen), trip);
            }
            Err(error) => tracing::warn!(%error, message, "unreadable trip announced; ignored"),
        }
    }

    /// Whether the service is under attack at `now` (nothing kept).
    fn under_attack(&self, now: UnixMillis) -> bool {
        self.judge(now).under_attack
    }

    /// The signal at `now`, as the admin API shows it.
    pub fn assess(&self, now: UnixMillis) -> Assessment {
        let seen = lock(&self.seen);
        self.signal.assess(&self.view(&seen, now), now)
    }

    /// Adds the pending counts to this replica's shards, and the baseline and trip it holds to
    /// the shared history, and reads every shard and the history back.
    pub async fn flush(
        &self,
        calls: &Calls,
        keyspace: &Keyspace,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let _one = self.flushing.lock().await;
        let taken = std::mem::take(&mut *lock(&self.pending));
        let signal = &self.signal;
        let window = now / signal.window_ms.max(1);
        let bucket = now / signal.bucket_ms.max(1);
        let (baseline, trip, last) = {
            let seen = lock(&self.seen);
            (seen.baseline, seen.trip, seen.bucket)
        };
        // The buckets read back: the current and the previous, and those the last read saw, whose
        // final counts fold into the baseline when the view moves past them.
        let mut buckets_read = vec![bucket, bucket.saturating_sub(1)];
        if last > 0 {
            for b in [last, last.saturating_sub(1)] {
                if !buckets_read.contains(&b) {
                    buckets_read.push(b);
                }
            }
        }
        let mut writes = Vec::new();
        // A period's counts matter for two periods; a third (and LINGER_MS) covers clocks apart.
        for (&w, counts) in taken.floor.iter().filter(|&(&w, _)| w + 1 >= window) {
            let key = keyspace.signal(self.shard, &format!("w{w}"));
            let ttl = 3 * signal.window_ms + LINGER_MS;
            writes.push(add_counts(&key, counts, FLOOR_FIELDS, ttl));
        }
        // Every bucket: those the view moves past fold into the baseline as they finally stand.
        for (&b, counts) in &taken.buckets {
            let key = keyspace.signal(self.shard, &format!("b{b}"));
            let ttl = 3 * signal.bucket_ms + LINGER_MS;
            writes.push(add_counts(&key, counts, BUCKET_FIELDS, ttl));
            // The HyperLogLog lives in a slot of its own: a pipeline of its own.
            if let Some(failed) = taken.failed.get(&b).filter(|f| !f.is_empty()) {
                let key = keyspace.failed_accounts(b);
                let mut pipe = redis::pipe();
                pipe.cmd("PFADD").arg(&key).arg(failed).ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&key)
                    .arg(3 * signal.bucket_ms + LINGER_MS)
                    .ignore();
                writes.push(pipe);
            }
        }
        let history = keyspace.signal_history();
        // Each shard's field holds the baseline and the trip its replicas last knew; readers
        // take the baseline folded furthest and the trip that lasts longest (`adopt`).
        let mut fields = Vec::new();
        if baseline.folded_through > 0 {
            fields.push((format!("baseline:{}", self.shard), json(&baseline)));
        }
        let trip = trip.filter(|trip| trip.until > now);
        if let Some(trip) = trip {
            fields.push((format!("trip:{}", self.shard), json(&trip)));
        }
        let mut shared = redis::pipe();
        if !fields.is_empty() {
            shared.cmd("HSET").arg(&history).arg(fields).ignore();
        }
        shared
            .cmd("PEXPIRE")
            .arg(&history)
            .arg(HISTORY_TTL_MS)
            .ignore();
        writes.push(shared);
        // The fan-out: each shared password's new usernames added to its window's sketch, whose
        // counters come back, a pipeline per window.
        let mut fan_outs: BTreeMap<u64, Vec<(u64, u32)>> = BTreeMap::new();
        for (&(password, w), &new) in &taken.passwords {
            fan_outs.entry(w).or_default().push((password, new));
        }
        let fan_out_ttl = 2 * signal.fan_out_window_ms + LINGER_MS;
        let fan_outs: Vec<redis::Pipeline> = fan_outs
            .iter()
            .map(|(&w, passwords)| {
                let key = keyspace.fan_out(w);
                let mut pipe = redis::pipe();
                for some in passwords.chunks(FAN_OUT_PER_COMMAND) {
                    pipe.cmd("BITFIELD").arg(&key).arg("OVERFLOW").arg("SAT");
                    for &(password, new) in some {
                        for counter in fan_out_counters(password) {
                            pipe.arg("INCRBY")
                                .arg("u8")
                                .arg(format!("#{counter}"))
                                .arg(new.min(MAX_FAN_OUT_USERNAMES));
                        }
                    }
                }
                pipe.cmd("PEXPIRE").arg(&key).arg(fan_out_ttl).ignore();
                pipe
            })
            .collect();
        let floor_reads: Vec<String> = [window, window.saturating_sub(1)]
            .into_iter()
            .flat_map(|w| (0..SIGNAL_SHARDS).map(move |shard| (shard, w)))
            .map(|(shard, w)| keyspace.signal(shard, &format!("w{w}")))
            .collect();
        let bucket_reads: Vec<String> = buckets_read
            .iter()
            .flat_map(|&b| (0..SIGNAL_SHARDS).map(move |shard| (shard, b)))
            .map(|(shard, b)| keyspace.signal(shard, &format!("b{b}")))
            .collect();
        let failed_reads: Vec<String> = buckets_read
            .iter()
            .map(|&b| keyspace.failed_accounts(b))
            .collect();
        let result = calls
            .call("sharing the attack signal", |conn| async move {
                let written = join_all(writes.iter().map(|pipe| {
                    let mut conn = conn.clone();
                    async move { pipe.query_async::<()>(&mut conn).await }
                }));
                let fanned = join_all(fan_outs.iter().map(|pipe| {
                    let mut conn = conn.clone();
                    async move { pipe.query_async::<Vec<Vec<u64>>>(&mut conn).await }
                }));
                let (written, fanned) = futures_util::future::join(written, fanned).await;
                written.into_iter().collect::<Result<Vec<_>, _>>()?;
                // Each password's rows in turn: its count is the least.
                let fanned = fanned
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?
                    .concat()
                    .concat()
                    .chunks(usize::try_from(FAN_OUT_ROWS).unwrap_or(1))
                    .filter_map(|rows| rows.iter().min().copied())
                    .collect::<Vec<_>>();
                let hmget = |key: &String, fields: &'static [&'static str]| {
                    let mut conn = conn.clone();
                    let mut cmd = redis::cmd("HMGET");
                    cmd.arg(key).arg(fields);
                    async move { cmd.query_async::<Vec<Option<u64>>>(&mut conn).await }
                };
                let floor = join_all(floor_reads.iter().map(|key| hmget(key, FLOOR_FIELDS)));
                let buckets = join_all(bucket_reads.iter().map(|key| hmget(key, BUCKET_FIELDS)));
                let failed = join_all(failed_reads.iter().map(|key| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("PFCOUNT")
                            .arg(key)
                            .query_async::<u64>(&mut conn)
                            .await
                    }
                }));
                let history = {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("HGETALL")
                            .arg(&history)
                            .query_async::<HashMap<String, String>>(&mut conn)
                            .await
                    }
                };
                let (floor, buckets, failed, history) =
                    futures_util::future::join4(floor, buckets, failed, history).await;
                Ok((
                    fanned,
                    floor.into_iter().collect::<Result<Vec<_>, _>>()?,
                    buckets.into_iter().collect::<Result<Vec<_>, _>>()?,
                    failed.into_iter().collect::<Result<Vec<_>, _>>()?,
                    history?,
                ))
            })
            .await;
        let (fanned, floor, buckets, failed, history) = match result {
            Ok(read) => read,
            Err(error) => {
                self.put_back(taken);
                return Err(error);
            }
        };
        let shards = usize::try_from(SIGNAL_SHARDS).unwrap_or(usize::MAX);
        let (floor_now, floor_before) = floor.split_at(shards.min(floor.len()));
        let counts_of = |b: u64| {
            let Some(at) = buckets_read.iter().position(|&read| read == b) else {
                return Counts::default();
            };
            let rows = buckets
                .get(at * shards..(at + 1) * shards)
                .unwrap_or_default();
            Counts {
                failed_accounts: small(failed.get(at).copied().unwrap_or(0)),
                ..counts_read(rows, BUCKET_FIELDS)
            }
        };
        if let Some(trip) = trip {
            *lock(&self.trip_shared) = Some(trip.since);
        }
        // A trip the fan-out started here, for the others to hear at once.
        let fanned_out = {
            let mut seen = lock(&self.seen);
            if seen.bucket == last && last > 0 {
                // The buckets the view moves past, as they finally stand.
                seen.current = counts_of(last);
                seen.previous = counts_of(last - 1);
            }
            signal.roll(&mut seen, now);
            adopt(&mut seen, &history);
            seen.window = window;
            seen.floor = counts_read(floor_now, FLOOR_FIELDS);
            seen.previous_floor = counts_read(floor_before, FLOOR_FIELDS);
            if seen.bucket == bucket {
                seen.current = counts_of(bucket);
                seen.previous = counts_of(bucket.saturating_sub(1));
            }
            if let Some(&most) = fanned.iter().max()
                && most >= u64::from(signal.fan_out_usernames)
            {
                let before = seen.tripped(now);
                let at = u64::from(signal.fan_out_usernames) * 1_000;
                signal.trip(&mut seen, Detector::PasswordFanOut, small(most), at, now);
                seen.tripped(now).filter(|_| before.is_none())
            } else {
                None
            }
        };
        if let Some(trip) = fanned_out {
            announce(calls, keyspace, trip).await;
        }
        Ok(())
    }

    /// Puts counts a failed flush took back into the pending ones, for the next flush.
    fn put_back(&self, taken: Pending) {
        let mut pending = lock(&self.pending);
        for (w, counts) in taken.floor {
            pending.floor.entry(w).or_default().merge(&counts);
        }
        for (b, counts) in taken.buckets {
            pending.buckets.entry(b).or_default().merge(&counts);
        }
        for (b, failed) in taken.failed {
            pending.failed.entry(b).or_default().extend(failed);
        }
        for (at, new) in taken.passwords {
            *pending.passwords.entry(at).or_default() += new;
        }
    }

    /// Whether a flush before [`FLUSH_EVERY`] is worth it: this replica judged a trip it has
    /// not shared (the others' queued guesses are challenged once they see it), or failures
    /// not yet shared reach a quarter of those that could start an attack at the floor while
    /// it does not see one yet.
    fn worth_flushing_early(&self, now: UnixMillis) -> bool {
        let trip = lock(&self.seen).trip.filter(|trip| trip.until > now);
        if trip.is_some_and(|trip| *lock(&self.trip_shared) != Some(trip.since)) {
            return true;
        }
        let enough = (u64::from(self.signal.min_attempts) * u64::from(self.signal.failure_percent))
            .div_ceil(400)
            .max(1);
        let failures: u64 = lock(&self.pending)
            .floor
            .values()
            .map(|counts| u64::from(counts.failures))
            .sum();
        failures >= enough && !self.under_attack(now)
    }
    /// Flushes every [`FLUSH_EVERY`] (every [`FLUSH_EARLY_EVERY`] while failures pile up before
    /// an attack is seen) until the store is dropped.
    pub fn share(
        signal: &Arc<SharedSignal>,
        calls: &Arc<Calls>,
        keyspace: Keyspace,
        clock: Arc<dyn Clock>,
    ) {
        let (signal, calls): (Weak<SharedSignal>, Weak<Calls>) =
            (Arc::downgrade(signal), Arc::downgrade(calls));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FLUSH_EARLY_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut flushed = std::time::Instant::now();
            loop {
                every.tick().await;
                let (Some(signal), Some(calls)) = (signal.upgrade(), calls.upgrade()) else {
                    return;
                };
                let now = clock.now();
                if flushed.elapsed() < FLUSH_EVERY && !signal.worth_flushing_early(now) {
                    continue;
                }
                flushed = std::time::Instant::now();
                if let Err(error) = signal.flush(&calls, &keyspace, now).await {
                    tracing::debug!(%error, "the attack signal was not shared; counts kept");
                }
            }
        });
    }
}

/// A pipeline adding `counts` to the shard hash `key` (those of `fields` that are not zero),
/// which expires `ttl_ms` on.
fn add_counts(key: &str, counts: &Counts, fields: &[&str], ttl_ms: u64) -> redis::Pipeline {
    let mut counts = *counts;
    let mut pipe = redis::pipe();
    for &field in fields {
        let value = field_of(&mut counts, field).map_or(0, |count| *count);
        if value > 0 {
            pipe.cmd("HINCRBY").arg(key).arg(field).arg(value).ignore();
        }
    }
    pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).ignore();
    pipe
}

/// The counts every shard's hash holds, summed: `rows` are the shards' HMGETs of `fields`.
fn counts_read(rows: &[Vec<Option<u64>>], fields: &[&str]) -> Counts {
    let mut counts = Counts::default();
    for (at, &field) in fields.iter().enumerate() {
        let total: u64 = rows
            .iter()
            .map(|row| row.get(at).copied().flatten().unwrap_or(0))
            .sum();
        if let Some(count) = field_of(&mut counts, field) {
            *count = small(total);
        }
    }
    counts
}

/// The count a shard hash's field holds (the one place the field names are spelt).
fn field_of<'a>(counts: &'a mut Counts, field: &str) -> Option<&'a mut u32> {
    match field {
        "a" => Some(&mut counts.attempts),
        "f" => Some(&mut counts.failures),
        "u" => Some(&mut counts.unknown),
        "c" => Some(&mut counts.challenged),
        "n" => Some(&mut counts.answered),
        _ => None,
    }
}

/// Where a replica announces a trip it judged, the moment it does: every replica's
/// subscription (`AdminStore::listen`) hands it to [`SharedSignal::heard`], so the others
/// challenge from their next attempt rather than from their next flush (up to
/// [`FLUSH_EVERY`] later, while the attack's guesses go on being verified). The flush still
/// shares every trip, for a replica whose subscription was away.
pub const TRIPS: &str = "trips";

/// Announces `trip` on [`TRIPS`]. One that is lost is shared by the next flush anyway.
pub async fn announce(calls: &Calls, keyspace: &Keyspace, trip: Trip) {
    let channel = keyspace.single(TRIPS);
    let message = json(&trip);
    let published = calls
        .call("announcing a trip", |mut conn| async move {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&message)
                .query_async::<u64>(&mut conn)
                .await
        })
        .await;
    if let Err(error) = published {
        tracing::debug!(%error, "a trip was not announced; the next flush shares it");
    }
}

/// Takes `trip` if it lasts longer than the one `seen` holds (the trip in force is the one that
/// lasts longest, whichever replica judged it); says whether it did.
fn take_trip(seen: &mut AttackState, trip: Trip) -> bool {
    let longer = seen.trip.is_none_or(|own| trip.until > own.until);
    if longer {
        seen.trip = Some(trip);
    }
    longer
}

/// Takes from the shared history what is newer than this replica's: the baseline folded
/// furthest, and the trip that lasts longest. A baseline of another shape (written by another
/// version, during a rolling upgrade) does not parse and is passed over: the history restarts.
fn adopt(seen: &mut AttackState, history: &HashMap<String, String>) {
    for (field, json) in history {
        if field.starts_with("baseline:")
            && let Ok(baseline) = serde_json::from_str::<Baseline>(json)
            && baseline.folded_through > seen.baseline.folded_through
        {
            seen.baseline = baseline;
        }
        if field.starts_with("trip:")
            && let Ok(trip) = serde_json::from_str::<Trip>(json)
        {
            take_trip(seen, trip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a floor window and of a bucket.
    const NOW: UnixMillis = 1_700_000_100_000;

    #[test]
    fn the_fan_out_sketch_counts_a_password_in_each_row_and_its_neighbours_barely_raise_it() {
        // redis_cost's worst case, and worse: 20,000 passwords per window each on two
        // usernames, the digests consecutive (a weak hash would pile them up).
        let rows = usize::try_from(FAN_OUT_ROWS * FAN_OUT_WIDTH).unwrap();
        let mut sketch = vec![0u8; rows];
        let passwords = 1u64 << 40..(1u64 << 40) + 20_000;
        for password in passwords.clone() {
            let counters: Vec<u64> = fan_out_counters(password).collect();
            assert_eq!(counters.len(), 3);
            for (row, &counter) in (0u64..).zip(&counters) {
                assert!((row * FAN_OUT_WIDTH..(row + 1) * FAN_OUT_WIDTH).contains(&counter));
                let at = usize::try_from(counter).unwrap();
                sketch[at] = sketch[at].saturating_add(2);
            }
        }
        let counts: Vec<u8> = passwords
            .map(|password| {
                fan_out_counters(password)
                    .map(|counter| sketch[usize::try_from(counter).unwrap()])
                    .min()
                    .unwrap()
            })
            .collect();
        assert!(
            counts.iter().all(|&count| count >= 2),
            "never below the truth"
        );
        // Each row shares a password's counter with another with odds 1 - e^(-20000/65536), 26%;
        // all three rows with odds 1.8%.
        let exact = counts.iter().filter(|&&count| count == 2).count();
        assert!(exact > 19_500, "{exact} of 20,000 read exactly");
        let most = counts.iter().max().unwrap();
        assert!(
            *most < 10,
            "the default fan-out of 10 is not reached: {most}"
        );
    }

    #[test]
    fn a_password_is_held_until_a_second_username_fails_with_it_and_forgotten_with_its_window() {
        let mut held = Held::new(4);
        assert_eq!(held.failed(5, 1, "a"), 0);
        assert_eq!(held.failed(5, 1, "a"), 0, "the same account again");
        assert_eq!(held.failed(5, 1, "b"), 2, "both count");
        assert_eq!(held.failed(5, 1, "c"), 1);
        assert_eq!(held.failed(5, 1, "b"), 0, "counted once");
        // A fan-out counts within its window: the next one starts afresh, and a failure
        // counted with a clock still in the last one counts at once.
        assert_eq!(held.failed(6, 1, "b"), 0);
        assert_eq!(held.failed(5, 1, "c"), 1);
        assert_eq!(held.failed(6, 1, "d"), 2);
        // Beyond MAX_HELD passwords in a window, a new one counts at once.
        for password in 0..MAX_HELD as u64 {
            held.failed(9, password, "x");
        }
        assert_eq!(held.failed(9, u64::MAX, "y"), 1);
        assert_eq!(held.passwords.len(), MAX_HELD);
    }

    #[test]
    fn beyond_the_threshold_a_replica_counts_each_failure_without_remembering_it() {
        let mut held = Held::new(3);
        for name in ["a", "b", "c"] {
            held.failed(5, 1, name);
        }
        assert_eq!(held.failed(5, 1, "c"), 1, "tripped by this replica alone");
        let Some(HeldPassword::Counted(counted)) = held.passwords.get(&1) else {
            panic!("counted");
        };
        assert_eq!(counted.len(), 3);
    }

    fn signal(min_attempts: u32, failure_percent: u32) -> AttackSignal {
        let mut signal = portcullis_core::Policy::default().global.attack.unwrap();
        signal.min_attempts = min_attempts;
        signal.failure_percent = failure_percent;
        signal
    }

    #[test]
    fn a_replicas_own_counts_tell_before_they_are_shared() {
        let shared = SharedSignal::new(signal(5, 50), 7);
        assert!(!shared.under_attack(NOW));
        for _ in 0..4 {
            shared.count(NOW, Sign::FAILED, None, None);
        }
        assert!(!shared.under_attack(NOW), "fewer than min_attempts");
        shared.count(NOW, Sign::FAILED, None, None);
        let judged = shared.judge(NOW);
        assert!(judged.under_attack);
        assert_eq!(
            shared.assess(NOW).trip,
            None,
            "kept once the attempt counts"
        );
        shared.keep(judged);
        assert_eq!(shared.assess(NOW).trip.unwrap().detector, Detector::Floor);
    }

    #[test]
    fn an_accounts_failures_count_once_per_bucket_among_failed_accounts() {
        let shared = SharedSignal::new(signal(20, 30), 7);
        for name in ["a", "a", "b"] {
            shared.count(NOW, Sign::FAILED, Some(name), None);
        }
        let pending = lock(&shared.pending);
        let bucket = NOW / shared.signal.bucket_ms;
        assert_eq!(pending.buckets[&bucket].failed_accounts, 2);
        assert_eq!(pending.buckets[&bucket].failures, 3);
    }

    #[test]
    fn failures_piling_up_before_an_attack_is_seen_are_flushed_early() {
        // A quarter of the 6 failures that could start an attack (20 attempts, 30%): 2.
        let shared = SharedSignal::new(signal(20, 30), 7);
        shared.count(NOW, Sign::default(), None, None);
        shared.count(NOW, Sign::FAILED, None, None);
        assert!(!shared.worth_flushing_early(NOW));
        shared.count(NOW, Sign::FAILED, None, None);
        assert!(shared.worth_flushing_early(NOW));
        // Once this replica sees the attack, the usual pace will do.
        for _ in 0..20 {
            shared.count(NOW, Sign::FAILED, None, None);
        }
        assert!(shared.under_attack(NOW));
        assert!(
            !shared.worth_flushing_early(NOW),
            "judged, not kept: no trip yet"
        );
        // An attempt judged with the trip keeps it: worth sharing at once, and once only.
        shared.keep(shared.judge(NOW));
        assert!(shared.worth_flushing_early(NOW));
        let since = lock(&shared.seen).trip.map(|trip| trip.since);
        *lock(&shared.trip_shared) = since;
        assert!(!shared.worth_flushing_early(NOW));
    }
}
