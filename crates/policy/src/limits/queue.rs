//! A wait queue per counter that takes turns fairly across gateway keys.
//!
//! One waiter at a time (the head) retries admission; the others wait for their turn. Turns
//! go round-robin over keys, first come first served within a key, so a key with a hundred
//! waiting requests gets one turn per round like a key with one. Queues are per node.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

#[derive(Default)]
struct Waiting {
    /// Keys with waiters, in turn order.
    ring: VecDeque<String>,
    /// Waiters per key, oldest first: (ticket id, turn signal).
    by_key: HashMap<String, VecDeque<(u64, oneshot::Sender<()>)>>,
    /// The ticket whose turn it is.
    head: Option<u64>,
    next_id: u64,
    len: usize,
}

pub(crate) struct FairQueue {
    waiting: Mutex<Waiting>,
    max_depth: usize,
}

impl FairQueue {
    pub(crate) fn new(max_depth: usize) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(Waiting::default()),
            max_depth,
        })
    }

    /// Whether anyone holds or waits for a turn (a newcomer then queues behind them rather
    /// than overtaking).
    pub(crate) fn is_busy(&self) -> bool {
        let waiting = self.waiting.lock();
        waiting.head.is_some() || waiting.len > 0
    }

    /// Joins the queue for `key`; `None` when `max_depth` requests already wait.
    pub(crate) fn enter(self: &Arc<Self>, key: &str) -> Option<Ticket> {
        let mut waiting = self.waiting.lock();
        let id = waiting.next_id;
        waiting.next_id += 1;
        let (tell, turn) = oneshot::channel();
        if waiting.head.is_none() && waiting.len == 0 {
            waiting.head = Some(id);
            let _ = tell.send(());
        } else {
            // The head waits too: it counts towards the depth.
            let depth = waiting.len + usize::from(waiting.head.is_some());
            if depth >= self.max_depth {
                return None;
            }
            waiting.len += 1;
            let queue = waiting.by_key.entry(key.to_owned()).or_default();
            queue.push_back((id, tell));
            if queue.len() == 1 {
                waiting.ring.push_back(key.to_owned());
            }
        }
        Some(Ticket {
            queue: Arc::clone(self),
            id,
            key: key.to_owned(),
            turn: Some(turn),
        })
    }

    /// Gives the turn to the oldest waiter of the next key in the ring.
    fn pass_turn(waiting: &mut Waiting) {
        waiting.head = None;
        while let Some(key) = waiting.ring.pop_front() {
            let Some(queue) = waiting.by_key.get_mut(&key) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                waiting.by_key.remove(&key);
            } else {
                waiting.ring.push_back(key);
            }
            if let Some((id, tell)) = next {
                waiting.len -= 1;
                if tell.send(()).is_ok() {
                    waiting.head = Some(id);
                    return;
                }
            }
        }
    }
}

/// A place in a [`FairQueue`]; dropping it leaves the queue (passing the turn on if it
/// held it).
pub(crate) struct Ticket {
    queue: Arc<FairQueue>,
    id: u64,
    key: String,
    turn: Option<oneshot::Receiver<()>>,
}

impl Ticket {
    /// Waits until it is this ticket's turn.
    pub(crate) async fn turn(&mut self) {
        if let Some(turn) = self.turn.take() {
            // An error means the queue was dropped; there is nobody left to wait for.
            let _ = turn.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut waiting = self.queue.waiting.lock();
        if waiting.head == Some(self.id) {
            FairQueue::pass_turn(&mut waiting);
            return;
        }
        let mut emptied = false;
        let mut removed = false;
        if let Some(queue) = waiting.by_key.get_mut(&self.key) {
            let before = queue.len();
            queue.retain(|(id, _)| *id != self.id);
            removed = queue.len() < before;
            emptied = queue.is_empty();
        }
        if removed {
            waiting.len -= 1;
        }
        if emptied {
            waiting.by_key.remove(&self.key);
            waiting.ring.retain(|k| *k != self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn turns_go_round_robin_over_keys() {
        let queue = FairQueue::new(10);
        let mut head = queue.enter("flood").unwrap();
        head.turn().await;
        let mut flood: Vec<Ticket> = (0..3).map(|_| queue.enter("flood").unwrap()).collect();
        let mut quiet = queue.enter("quiet").unwrap();
        drop(head);
        // The flood's oldest waiter got the turn (its key is first in the ring)...
        flood[0].turn().await;
        let first = flood.remove(0);
        drop(first);
        // ...and then the quiet key, ahead of the flood's other two.
        tokio::time::timeout(std::time::Duration::from_secs(1), quiet.turn())
            .await
            .unwrap();
        assert!(flood[0].turn.as_mut().unwrap().try_recv().is_err());
    }

    #[tokio::test]
    async fn depth_is_bounded_and_leaving_frees_a_place() {
        let queue = FairQueue::new(2);
        let _head = queue.enter("a").unwrap();
        let waiter = queue.enter("b").unwrap();
        assert!(queue.enter("c").is_none());
        drop(waiter);
        assert!(queue.enter("c").is_some());
        assert!(queue.is_busy());
    }

    #[tokio::test]
    async fn a_lone_ticket_has_the_turn_at_once_and_the_queue_empties() {
        let queue = FairQueue::new(1);
        let mut ticket = queue.enter("a").unwrap();
        ticket.turn().await;
        drop(ticket);
        assert!(!queue.is_busy());
    }
}
