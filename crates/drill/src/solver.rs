//! Solving proof-of-work challenges as the drill's clients do, and what it costs them.
//!
//! Both sides solve on a [`SolverPool`] of their own, so CPU time can be read per thread
//! (`CLOCK_THREAD_CPUTIME_ID`) and told apart:
//! - the attacker on `attacker.solver_threads` threads, at normal priority: its total is what the
//!   attack cost it;
//! - the legitimate users on threads at the lowest priority (`SCHED_IDLE`, nice 19): their work
//!   stands for work done on the users' own devices, so on a machine it shares with the service
//!   it runs only when the service has nothing to do, and each solve is timed by its thread's
//!   CPU time, what a person would wait on one core of their own.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cpu_time::ThreadTime;
use portcullis_core::altcha::{self, Challenge, Payload};
use tokio::sync::oneshot;

type Job = (Challenge, oneshot::Sender<(Option<String>, Duration)>);

/// The priority a pool's threads run at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// As the process.
    Normal,
    /// Only when nothing else wants the CPU (`SCHED_IDLE`, nice 19).
    Idle,
}

/// The attacker's solving threads.
pub struct SolverPool {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<Duration>>,
}

impl SolverPool {
    /// Starts `threads` solving threads at `priority`.
    pub fn start(threads: usize, priority: Priority) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..threads)
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    if priority == Priority::Idle {
                        run_when_idle();
                    }
                    let cpu = ThreadTime::now();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => break,
                        };
                        let Ok((challenge, reply)) = job else { break };
                        let _ = reply.send(solve_timed(challenge));
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
    /// The `altcha` payload solving `challenge` and the CPU time it took (None if the pool is
    /// gone).
    pub async fn solve(&self, challenge: Challenge) -> (Option<String>, Duration) {
        let (reply, answer) = oneshot::channel();
        if self.0.send((challenge, reply)).is_err() {
            return (None, Duration::ZERO);
        }
        answer.await.unwrap_or((None, Duration::ZERO))
    }
}

/// Puts the calling thread at the lowest priority (a failure leaves it as it was, and is said).
fn run_when_idle() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(error) =
        set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        eprintln!("drill: a legitimate solver thread kept its priority: {error:?}");
    }
}

/// Solves on the calling thread; returns the payload and the CPU time it took.
fn solve_timed(challenge: Challenge) -> (Option<String>, Duration) {
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
