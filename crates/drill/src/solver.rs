//! Solving proof-of-work challenges as the drill's clients do, and what it costs them.
//!
//! The attacker solves on a pool of `attacker.solver_threads` threads of its own, so its CPU
//! time can be read per thread (`CLOCK_THREAD_CPUTIME_ID`) and told apart from the legitimate
//! users', who solve one challenge at a time on the runtime's blocking threads, each timed by
//! its thread's CPU time: what a person would wait on one core of their own, whatever else the
//! drill's machine is doing.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cpu_time::ThreadTime;
use portcullis_core::altcha::{self, Challenge, Payload};
use tokio::sync::oneshot;

type Job = (Challenge, oneshot::Sender<Option<String>>);

/// The attacker's solving threads.
pub struct SolverPool {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<Duration>>,
}

impl SolverPool {
    /// Starts `threads` solving threads.
    pub fn start(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..threads)
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let cpu = ThreadTime::now();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => break,
                        };
                        let Ok((challenge, reply)) = job else { break };
                        let _ = reply.send(payload(challenge));
                    }
                    cpu.elapsed()
                })
            })
            .collect();
        Self {
            jobs: Some(jobs),
            threads,
        }
    }

    /// A handle to queue challenges from async tasks.
    pub fn handle(&self) -> Option<SolverHandle> {
        self.jobs.clone().map(SolverHandle)
    }

    /// Stops the threads; returns the CPU time they spent.
    pub fn finish(mut self) -> Duration {
        self.jobs = None;
        self.threads
            .drain(..)
            .map(|t| t.join().unwrap_or_default())
            .sum()
    }
}

/// Queues challenges on a [`SolverPool`].
#[derive(Clone)]
pub struct SolverHandle(mpsc::Sender<Job>);

impl SolverHandle {
    /// The `altcha` payload solving `challenge` (None if the pool is gone).
    pub async fn solve(&self, challenge: Challenge) -> Option<String> {
        let (reply, answer) = oneshot::channel();
        self.0.send((challenge, reply)).ok()?;
        answer.await.ok().flatten()
    }
}

/// Solves on the calling thread; returns the payload and the CPU time it took.
pub fn solve_timed(challenge: Challenge) -> (Option<String>, Duration) {
    let started = ThreadTime::now();
    let payload = payload(challenge);
    (payload, started.elapsed())
}

fn payload(challenge: Challenge) -> Option<String> {
    let solution = altcha::solve(&challenge.parameters, u32::MAX)?;
    Some(
        Payload {
            challenge,
            solution,
        }
        .to_base64(),
    )
}
