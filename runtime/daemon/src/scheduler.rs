//! The queue in front of the pipeline engine: one queue per operator key, served in turn, so
//! the requests of one operator cannot starve another's; each operator may have at most
//! [`PER_OPERATOR`] commands waiting, and the next one is refused as busy rather than queued
//! without bound.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex};

/// Most commands one operator may have waiting.
pub const PER_OPERATOR: usize = 4;

/// Round-robin queues by operator key.
#[derive(Debug)]
pub struct Queues<T> {
    by_operator: BTreeMap<[u8; 32], VecDeque<T>>,
    /// The operator served last: the next turn goes to the first operator after it.
    last: Option<[u8; 32]>,
}

impl<T> Default for Queues<T> {
    fn default() -> Self {
        Queues { by_operator: BTreeMap::new(), last: None }
    }
}

impl<T> Queues<T> {
    /// Queues `job` for `operator`, or says why not.
    pub fn push(&mut self, operator: [u8; 32], job: T) -> Result<(), String> {
        let queue = self.by_operator.entry(operator).or_default();
        if queue.len() >= PER_OPERATOR {
            return Err(format!("busy: this operator already has {PER_OPERATOR} pipeline commands waiting"));
        }
        queue.push_back(job);
        Ok(())
    }

    /// The next job: the oldest of the operator whose turn it is.
    pub fn pop(&mut self) -> Option<T> {
        let after =
            self.last.and_then(|last| self.by_operator.range(last..).find(|(k, _)| **k != last)).map(|(k, _)| *k);
        let operator = after.or_else(|| self.by_operator.keys().next().copied())?;
        let queue = self.by_operator.get_mut(&operator)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.by_operator.remove(&operator);
        }
        self.last = Some(operator);
        job
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.by_operator.values().map(VecDeque::len).sum()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.by_operator.is_empty()
    }
}

/// [`Queues`] shared between the reader of the control port and the engine's thread.
#[derive(Debug)]
pub struct Scheduler<T> {
    queues: Mutex<Queues<T>>,
    ready: Condvar,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Scheduler { queues: Mutex::new(Queues::default()), ready: Condvar::new() }
    }
}

impl<T> Scheduler<T> {
    /// Queues `job` for `operator` and wakes the engine's thread.
    pub fn push(&self, operator: [u8; 32], job: T) -> Result<(), String> {
        let mut q = self.queues.lock().map_err(|_| "the engine's queue is poisoned".to_string())?;
        q.push(operator, job)?;
        self.ready.notify_one();
        Ok(())
    }

    /// Waits for the next job. `None` only if the queue's lock was poisoned (a panic, which
    /// ends the process anyway).
    pub fn next(&self) -> Option<T> {
        let mut q = self.queues.lock().ok()?;
        loop {
            if let Some(job) = q.pop() {
                return Some(job);
            }
            q = self.ready.wait(q).ok()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_take_turns_so_a_busy_one_cannot_starve_another() {
        let mut q = Queues::default();
        for i in 0..4 {
            q.push([1; 32], format!("a{i}")).expect("room");
        }
        assert!(q.push([1; 32], "a4".to_string()).unwrap_err().starts_with("busy:"));
        q.push([2; 32], "b0".to_string()).expect("room");
        q.push([3; 32], "c0".to_string()).expect("room");
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["a0", "b0", "c0", "a1", "a2", "a3"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_late_operator_is_served_after_at_most_one_job_of_each_other() {
        let mut q = Queues::default();
        for i in 0..3 {
            q.push([5; 32], i).expect("room");
        }
        assert_eq!(q.pop(), Some(0));
        q.push([1; 32], 100).expect("room");
        assert_eq!(q.pop(), Some(100), "the newcomer goes before operator 5's second job");
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn the_engine_thread_wakes_for_a_job() {
        let s = std::sync::Arc::new(Scheduler::default());
        let worker = {
            let s = s.clone();
            std::thread::spawn(move || s.next())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.push([1; 32], 7u32).expect("room");
        assert_eq!(worker.join().expect("worker"), Some(7));
    }
}
