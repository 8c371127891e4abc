//! Coarse read deadlines for a shard's connections.
//!
//! Arming a glommio timer for every socket read costs a reactor timer insert
//! and cancel and, when the shard parks, an io_uring timeout operation.
//! Instead each connection keeps its current deadline in a [`Deadline`]
//! (a few `Cell` stores per read) and one sweeper task per shard wakes the
//! connections whose deadline passed, every [`Deadlines::tick`]. Timeouts
//! therefore fire up to one tick late; the tick is a small fraction of the
//! shortest configured timeout. The sweeper also wakes idle connections at
//! shutdown.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// One connection's deadline.
#[derive(Debug, Default)]
pub(crate) struct Deadline {
    at: Cell<Option<Instant>>,
    stoppable: Cell<bool>,
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Deadline {
    /// Sets the deadline of the next wait; `stoppable` waits also end at shutdown.
    pub(crate) fn arm(&self, at: Instant, stoppable: bool) {
        self.at.set(Some(at));
        self.stoppable.set(stoppable);
        self.fired.set(false);
    }

    /// Clears the deadline (between reads).
    pub(crate) fn disarm(&self) {
        self.at.set(None);
        self.fired.set(false);
    }

    /// Resolves when the sweeper fires this deadline.
    pub(crate) fn expired(&self) -> Expired<'_> {
        Expired { deadline: self }
    }

    fn fire(&self) {
        self.fired.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Future of [`Deadline::expired`].
pub(crate) struct Expired<'a> {
    deadline: &'a Deadline,
}

impl Future for Expired<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.deadline.fired.get() {
            return Poll::Ready(());
        }
        let mut slot = self.deadline.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The deadlines of one shard's connections.
#[derive(Debug)]
pub(crate) struct Deadlines {
    entries: RefCell<Vec<Weak<Deadline>>>,
    tick: Duration,
}

impl Deadlines {
    /// A registry whose sweeper runs every `tick`.
    pub(crate) fn new(tick: Duration) -> Deadlines {
        Deadlines { entries: RefCell::new(Vec::new()), tick }
    }

    /// How often [`sweep`](Self::sweep) should run.
    pub(crate) fn tick(&self) -> Duration {
        self.tick
    }

    /// A new deadline, tracked until the connection drops it.
    pub(crate) fn register(&self) -> Rc<Deadline> {
        let d = Rc::new(Deadline::default());
        self.entries.borrow_mut().push(Rc::downgrade(&d));
        d
    }

    /// Fires every passed deadline (and, when `stopping`, every stoppable
    /// one); forgets dropped connections.
    pub(crate) fn sweep(&self, now: Instant, stopping: bool) {
        let mut due = Vec::new();
        self.entries.borrow_mut().retain(|w| {
            let Some(d) = w.upgrade() else { return false };
            let passed = d.at.get().is_some_and(|at| at <= now);
            if !d.fired.get() && (passed || (stopping && d.stoppable.get() && d.at.get().is_some())) {
                due.push(d);
            }
            true
        });
        // Wake outside the borrow: a woken task may register a new connection.
        for d in due {
            d.fire();
        }
    }
}

/// The sweep interval for the configured timeouts: a tenth of the shortest,
/// between 10 ms and 250 ms.
pub(crate) fn tick_for(shortest: Duration) -> Duration {
    (shortest / 10).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_fires_passed_and_stoppable() {
        let ds = Deadlines::new(Duration::from_millis(10));
        let t0 = Instant::now();
        let a = ds.register();
        let b = ds.register();
        let c = ds.register();
        a.arm(t0 + Duration::from_secs(1), false);
        b.arm(t0 + Duration::from_secs(10), true);
        c.disarm();
        ds.sweep(t0 + Duration::from_secs(2), false);
        assert!(a.fired.get() && !b.fired.get() && !c.fired.get());
        ds.sweep(t0 + Duration::from_secs(2), true);
        assert!(b.fired.get() && !c.fired.get());
        drop(a);
        ds.sweep(t0, false);
        assert_eq!(ds.entries.borrow().len(), 2);
        assert_eq!(tick_for(Duration::from_secs(10)), Duration::from_millis(250));
        assert_eq!(tick_for(Duration::from_millis(500)), Duration::from_millis(50));
    }
}
