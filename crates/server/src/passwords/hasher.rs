//! Argon2id hashing off the event loop, on a pool bounded to the cores with a bounded queue.
//!
//! A hash job first takes an admission permit (workers + queue depth in all); when none is left
//! the job is refused at once with [`HashError::Busy`], which the API answers with 503 and
//! Retry-After, instead of letting a flood queue work without bound. Admitted jobs wait for one
//! of the worker permits and run on tokio's blocking pool inside the request's span.

use std::sync::Arc;

use anyhow::Context;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use tokio::sync::Semaphore;

use crate::settings::Argon2Settings;

/// The longest password accepted, in bytes: longer input is refused before any hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

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
    admission: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    worker_count: usize,
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
            admission: Arc::new(Semaphore::new(workers + settings.queue_depth)),
            workers: Arc::new(Semaphore::new(workers)),
            worker_count: workers,
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

    /// Hashes a new password.
    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        self.run(move |inner| hash_blocking(inner, password.expose_secret()))
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

    /// Checks a password against a stored hash, or against the dummy hash when there is no
    /// account (then the answer is always `false`, after the same work).
    pub async fn verify(
        &self,
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
        &self,
        job: impl FnOnce(&Inner) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashError> {
        let admitted = self
            .inner
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                metrics::counter!("portcullis_hash_rejected_total").increment(1);
                HashError::Busy
            })?;
        let in_flight = metrics::gauge!("portcullis_hash_in_flight");
        in_flight.increment(1.0);
        let queued = std::time::Instant::now();
        let worker = self.inner.workers.clone().acquire_owned().await;
        metrics::histogram!("portcullis_hash_wait_seconds").record(queued.elapsed().as_secs_f64());
        let worker = match worker {
            Ok(worker) => worker,
            Err(_) => {
                in_flight.decrement(1.0);
                return Err(HashError::Failed(anyhow::anyhow!("hashing pool closed")));
            }
        };
        let inner = self.inner.clone();
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let _permits = (admitted, worker);
            job(&inner)
        })
        .await;
        in_flight.decrement(1.0);
        Ok(result.context("hashing task failed")??)
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
