//! Argon2id hashing off the event loop, on a pool bounded to the cores with a bounded queue of
//! two priorities.
//!
//! A hash job is admitted into the queue or refused at once with [`HashError::Busy`], which the
//! API answers with 503 and Retry-After, instead of letting a flood queue work without bound.
//! [`Priority::High`] jobs (a login from a trusted device: the account's owner, almost surely)
//! get every free worker before any [`Priority::Low`] job (everything else, where an attack's
//! guesses are), and shedding takes the low queue first: low jobs may fill only
//! [`LOW_SHARE_PERCENT`] of the queue, the rest is kept for high ones. Jobs run on the pool's own
//! threads inside the request's span.
//!
//! A verification may wait its [`Turn`] apart from running: a login decided before it queued
//! is decided again when its turn comes (the service may have come under attack meanwhile).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use tokio::sync::oneshot;

use crate::settings::Argon2Settings;

/// The longest password accepted, in bytes: longer input is refused before any hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The share of the queue low-priority jobs may fill; the rest waits for high ones.
pub const LOW_SHARE_PERCENT: usize = 75;

/// Which queue a hash job waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// First to a worker, last to be shed: logins from a trusted device.
    High,
    /// Everything else.
    Low,
}

impl Priority {
    fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Low => "low",
        }
    }
}

/// Why hashing did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every worker is busy and the queue is full.
    #[error("password hashing queue is full")]
    Busy,
    /// Hashing itself failed (a bug or a corrupt stored hash).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// The Argon2id hasher and its bounded pool.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    pepper: Option<SecretBox<[u8]>>,
    /// A hash of a random password with the current parameters: unknown usernames are verified
    /// against it, so they cost the same as known ones.
    dummy_hash: String,
    queue: Arc<Queue>,
    worker_count: usize,
    threads: Threads,
}

/// A job for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads: as many as workers, started once and kept, so each keeps its warm
/// Argon2 memory (tokio's blocking pool would start new threads as jobs hand workers on, each
/// paying to map and zero fresh memory). The [`Queue`] bounds the jobs sent to them.
struct Threads {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Threads {
    fn start(count: usize) -> anyhow::Result<Self> {
        let (jobs, receiver) = std::sync::mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..count {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    // Ends when the hasher, and with it the sender, is dropped.
                    loop {
                        let next = receiver
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        match next {
                            // A panicking job loses its answer (the request gets a 500), not
                            // the thread.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                })
                .context("starting a hashing thread")?;
        }
        Ok(Self { jobs })
    }

    fn run(&self, job: Job) {
        // Sending fails only once every thread has stopped, which only dropping the hasher does.
        let _ = self.jobs.send(job);
    }
}

/// The workers and the jobs waiting for one, by priority.
struct Queue {
    state: Mutex<QueueState>,
    /// Jobs allowed to wait, both priorities together...
    depth: usize,
    /// ...of which low-priority ones at most this many.
    low_depth: usize,
}

struct QueueState {
    idle_workers: usize,
    high: VecDeque<oneshot::Sender<Worker>>,
    low: VecDeque<oneshot::Sender<Worker>>,
}

/// A worker held by a job; dropping it hands the worker to the next waiting job, high first.
struct Worker {
    queue: Arc<Queue>,
}

impl Queue {
    fn new(workers: usize, depth: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(QueueState {
                idle_workers: workers,
                high: VecDeque::new(),
                low: VecDeque::new(),
            }),
            depth,
            low_depth: depth * LOW_SHARE_PERCENT / 100,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker now, a place in the queue, or `None` when the job is shed.
    fn admit(
        self: &Arc<Self>,
        priority: Priority,
    ) -> Option<Result<Worker, oneshot::Receiver<Worker>>> {
        let mut state = self.state();
        if state.idle_workers > 0 {
            state.idle_workers -= 1;
            return Some(Ok(Worker {
                queue: self.clone(),
            }));
        }
        let waiting = state.high.len() + state.low.len();
        let room = match priority {
            Priority::High => waiting < self.depth,
            Priority::Low => waiting < self.depth && state.low.len() < self.low_depth,
        };
        if !room {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        match priority {
            Priority::High => state.high.push_back(sender),
            Priority::Low => state.low.push_back(sender),
        }
        Some(Err(receiver))
    }

    /// Hands a freed worker to the first waiting job, high first (skipping jobs whose request
    /// went away), or puts it back.
    fn release(self: &Arc<Self>) {
        let mut state = self.state();
        while let Some(next) = state.high.pop_front().or_else(|| state.low.pop_front()) {
            let worker = Worker {
                queue: self.clone(),
            };
            match next.send(worker) {
                Ok(()) => return,
                // The waiter is gone; its worker comes back here through `drop`, which would
                // lock again: forget it instead and keep the count by hand.
                Err(unsent) => std::mem::forget(unsent),
            }
        }
        state.idle_workers += 1;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.queue.release();
    }
}

impl PasswordHasher {
    /// Validates the settings and prepares the pool (computes the dummy hash once).
    pub fn new(settings: &Argon2Settings) -> anyhow::Result<Self> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "argon2.memory_kib/iterations/parallelism are not valid Argon2 parameters: {e}"
            )
        })?;
        let workers = match settings.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let pepper = settings
            .pepper
            .as_ref()
            .map(|p| SecretBox::new(p.expose_secret().as_bytes().into()));
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no entropy source: {e}"))?;
        let mut inner = Inner {
            params,
            pepper,
            dummy_hash: String::new(),
            queue: Queue::new(workers, settings.queue_depth),
            worker_count: workers,
            threads: Threads::start(workers)?,
        };
        inner.dummy_hash = hash_blocking(&inner, &hex::encode(random))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Hashes running at once at most (the pool's worker count).
    pub fn workers(&self) -> usize {
        self.inner.worker_count
    }

    /// Verifications per second of Argon2id alone (a wrong password against the dummy hash) on
    /// as many threads as the pool has, for `duration`, with no queue, runtime or request
    /// around it: the ceiling the verified login path is measured against.
    pub fn raw_verify_rate(&self, duration: Duration) -> anyhow::Result<f64> {
        let inner = self.inner.as_ref();
        let started = Instant::now();
        let verified = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..inner.worker_count)
                .map(|_| {
                    scope.spawn(|| {
                        let mut verified = 0u64;
                        while started.elapsed() < duration {
                            verify_blocking(inner, "not-the-password", &inner.dummy_hash)?;
                            verified += 1;
                        }
                        anyhow::Ok(verified)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .map_err(|_| anyhow::anyhow!("a verification thread panicked"))?
                })
                .sum::<anyhow::Result<u64>>()
        })?;
        Ok(verified as f64 / started.elapsed().as_secs_f64())
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        self.run(Priority::Low, move |inner| {
            hash_blocking(inner, password.expose_secret())
        })
        .await
    }

    /// Whether a stored hash was made with other parameters than the current ones (or is not
    /// Argon2id): a successful login then rehashes the password transparently.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        let current = &self.inner.params;
        let argon2id = parsed.algorithm.as_str() == "argon2id";
        match Params::try_from(&parsed) {
            Ok(params) => {
                !argon2id
                    || params.m_cost() != current.m_cost()
                    || params.t_cost() != current.t_cost()
                    || params.p_cost() != current.p_cost()
            }
            Err(_) => true,
        }
    }

    /// Waits for a hashing worker in the `priority` queue, or is refused at once when the queue
    /// is full ([`HashError::Busy`]). The worker is held until the turn is used or dropped.
    pub async fn turn(&self, priority: Priority) -> Result<Turn, HashError> {
        let Some(admitted) = self.inner.queue.admit(priority) else {
            metrics::counter!("portcullis_hash_rejected_total", "priority" => priority.as_str())
                .increment(1);
            return Err(HashError::Busy);
        };
        let in_flight = InFlight::start();
        let queued = Instant::now();
        let worker = match admitted {
            Ok(worker) => Ok(worker),
            Err(waiting) => waiting.await,
        };
        metrics::histogram!("portcullis_hash_wait_seconds", "priority" => priority.as_str())
            .record(queued.elapsed().as_secs_f64());
        let worker =
            worker.map_err(|_| HashError::Failed(anyhow::anyhow!("hashing pool closed")))?;
        Ok(Turn {
            inner: self.inner.clone(),
            worker,
            _in_flight: in_flight,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        priority: Priority,
        job: impl FnOnce(&Inner) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        self.turn(priority).await?.run(job).await
    }
}

/// A hashing worker held for one job; dropped unused, it goes to the next job waiting.
pub struct Turn {
    inner: Arc<Inner>,
    worker: Worker,
    _in_flight: InFlight,
}

impl Turn {
    /// Checks a password against a stored hash, or against the dummy hash when there is no
    /// account (then the answer is always `false`, after the same work).
    pub async fn verify(
        self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        self.run(move |inner| {
            let matched = verify_blocking(
                inner,
                password.expose_secret(),
                stored.as_deref().unwrap_or(&inner.dummy_hash),
            )?;
            Ok(matched && stored.is_some())
        })
        .await
    }

    async fn run<T: Send + 'static>(
        self,
        job: impl FnOnce(&Inner) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let Turn {
            inner,
            worker,
            _in_flight,
        } = self;
        let pool = inner.clone();
        let span = tracing::Span::current();
        let (done, result) = oneshot::channel();
        pool.threads.run(Box::new(move || {
            let _entered = span.enter();
            // The worker is free before the caller hears back, also when the job panics
            // (locals drop in reverse order): its next request finds it idle.
            let done = done;
            let worker = worker;
            let result = job(&inner);
            drop(worker);
            // The receiver is gone only if the request went away; nobody is left to tell.
            let _ = done.send(result);
        }));
        Ok(result.await.context("hashing thread stopped")??)
    }
}

/// A hash job in `portcullis_hash_in_flight` from its admission into the queue until it ends.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!("portcullis_hash_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("portcullis_hash_in_flight").decrement(1.0);
    }
}

fn argon2(inner: &Inner) -> anyhow::Result<Argon2<'_>> {
    match &inner.pepper {
        Some(pepper) => Argon2::new_with_secret(
            pepper.expose_secret(),
            Algorithm::Argon2id,
            Version::V0x13,
            inner.params.clone(),
        )
        .map_err(|e| anyhow::anyhow!("argon2.pepper is not usable: {e}")),
        None => Ok(Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            inner.params.clone(),
        )),
    }
}

fn hash_blocking(inner: &Inner, password: &str) -> anyhow::Result<String> {
    let hash = argon2(inner)?
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    Ok(hash.to_string())
}

fn verify_blocking(inner: &Inner, password: &str, stored: &str) -> anyhow::Result<bool> {
    let parsed =
        PasswordHash::new(stored).map_err(|e| anyhow::anyhow!("stored hash is not PHC: {e}"))?;
    Ok(argon2(inner)?
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(admitted: Option<Result<Worker, oneshot::Receiver<Worker>>>) -> Worker {
        match admitted {
            Some(Ok(worker)) => worker,
            _ => panic!("expected an idle worker"),
        }
    }

    fn waiting(
        admitted: Option<Result<Worker, oneshot::Receiver<Worker>>>,
    ) -> oneshot::Receiver<Worker> {
        match admitted {
            Some(Err(waiting)) => waiting,
            _ => panic!("expected a place in the queue"),
        }
    }

    #[test]
    fn raw_verification_rate_counts_verifications_on_every_worker() {
        let settings = Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            workers: 2,
            queue_depth: 1,
            pepper: None,
        };
        let hasher = PasswordHasher::new(&settings).unwrap();
        let rate = hasher.raw_verify_rate(Duration::from_millis(50)).unwrap();
        // Two threads for 50 ms verify at least one password each.
        assert!(rate >= 2.0 / 0.05 * 0.5, "{rate}");
    }

    #[tokio::test]
    async fn a_panicking_job_fails_its_request_and_keeps_the_thread() {
        let settings = Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            workers: 1,
            queue_depth: 1,
            pepper: None,
        };
        let hasher = PasswordHasher::new(&settings).unwrap();
        let failed = hasher
            .run(Priority::Low, |_| -> anyhow::Result<()> { panic!("a bug") })
            .await;
        assert!(matches!(failed, Err(HashError::Failed(_))));
        // The only thread survived, and so did its worker.
        assert_eq!(hasher.run(Priority::Low, |_| Ok(7)).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_turn_dropped_unused_hands_its_worker_to_the_next_job() {
        let settings = Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            workers: 1,
            queue_depth: 2,
            pepper: None,
        };
        let hasher = PasswordHasher::new(&settings).unwrap();
        let held = hasher.turn(Priority::Low).await.unwrap();
        let next = tokio::spawn({
            let hasher = hasher.clone();
            async move {
                let turn = hasher.turn(Priority::Low).await.unwrap();
                turn.verify(SecretString::from("guess"), None)
                    .await
                    .unwrap()
            }
        });
        while hasher.inner.queue.state().low.is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(
            matches!(hasher.turn(Priority::Low).await, Err(HashError::Busy)),
            "one worker held, one low job waiting: the low share is full"
        );
        drop(held);
        assert!(
            !next.await.unwrap(),
            "the waiting job ran: no account, no match"
        );
    }

    #[test]
    fn a_freed_worker_goes_to_the_high_queue_first_then_in_order() {
        let queue = Queue::new(1, 8);
        let busy = worker(queue.admit(Priority::Low));
        let mut low_1 = waiting(queue.admit(Priority::Low));
        let mut low_2 = waiting(queue.admit(Priority::Low));
        let mut high = waiting(queue.admit(Priority::High));
        drop(busy);
        let next = high.try_recv().expect("the high job was served first");
        assert!(low_1.try_recv().is_err() && low_2.try_recv().is_err());
        drop(next);
        let next = low_1.try_recv().expect("then the oldest low job");
        drop(next);
        let last = low_2.try_recv().expect("then the next");
        drop(last);
        assert_eq!(queue.state().idle_workers, 1, "the worker is idle again");
    }

    #[test]
    fn shedding_takes_low_jobs_first() {
        let queue = Queue::new(1, 4);
        let _busy = worker(queue.admit(Priority::High));
        let _queued: Vec<_> = (0..3)
            .map(|_| waiting(queue.admit(Priority::Low)))
            .collect();
        assert!(
            queue.admit(Priority::Low).is_none(),
            "low jobs fill 75% of the queue"
        );
        let _high = waiting(queue.admit(Priority::High));
        assert!(
            queue.admit(Priority::High).is_none(),
            "then the queue is full"
        );
    }

    #[test]
    fn a_job_that_went_away_passes_its_worker_on() {
        let queue = Queue::new(1, 8);
        let busy = worker(queue.admit(Priority::Low));
        let gone = waiting(queue.admit(Priority::High));
        let mut next = waiting(queue.admit(Priority::Low));
        drop(gone);
        drop(busy);
        assert!(next.try_recv().is_ok());
    }
}
