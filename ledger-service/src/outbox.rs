//! The one message a server stream holds for a client that has not taken
//! it yet, and the end of a client that does not read.
//!
//! A `WatchEntries` stream is fed by a task through an [`Outbox`] of one
//! slot: the task puts a message when the slot is empty and otherwise
//! waits, for at most a given patience. gRPC takes the message out
//! ([`Inbox`] is the stream it sends) as soon as the connection can carry
//! it, so a client that reads keeps the slot empty, and one that does not
//! leaves it full. Once the patience runs out the task ends the stream with
//! a last item ([`Outbox::finish_with`]) that replaces the untaken message:
//! the watch then holds one message fewer, and the client, should it read
//! again, learns why it was dropped.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::Stream;
use tokio::sync::Notify;

/// What both ends share.
struct Inner<T> {
    state: Mutex<State<T>>,
    /// Wakes the sender: the slot was emptied, or the inbox went away.
    changed: Notify,
}

struct State<T> {
    slot: Option<T>,
    /// No more after what the slot holds.
    finished: bool,
    /// The client went away.
    inbox_gone: bool,
    waker: Option<Waker>,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending end.
pub(crate) struct Outbox<T> {
    inner: Arc<Inner<T>>,
}

/// The receiving end: a stream of what was sent.
pub(crate) struct Inbox<T> {
    inner: Arc<Inner<T>>,
}

/// Why a message was not put in the slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unsent<T> {
    /// The client left the previous message untaken for the whole
    /// patience; here is the message back.
    Unread(T),
    /// The client went away.
    Gone,
}

/// A new one-slot outbox and its inbox.
pub(crate) fn outbox<T>() -> (Outbox<T>, Inbox<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            slot: None,
            finished: false,
            inbox_gone: false,
            waker: None,
        }),
        changed: Notify::new(),
    });
    (
        Outbox {
            inner: Arc::clone(&inner),
        },
        Inbox { inner },
    )
}

impl<T> Outbox<T> {
    /// Puts `item` in the slot once it is empty, waiting at most `patience`
    /// for the client to take what it holds.
    pub(crate) async fn send(&self, item: T, patience: Duration) -> Result<(), Unsent<T>> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let changed = self.inner.changed.notified();
            {
                let mut state = self.inner.lock();
                if state.inbox_gone {
                    return Err(Unsent::Gone);
                }
                if state.slot.is_none() {
                    state.slot = Some(item);
                    if let Some(waker) = state.waker.take() {
                        waker.wake();
                    }
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(Unsent::Unread(item));
            }
        }
    }

    /// Resolves when the client has gone away.
    pub(crate) async fn closed(&self) {
        loop {
            let changed = self.inner.changed.notified();
            if self.inner.lock().inbox_gone {
                return;
            }
            changed.await;
        }
    }

    /// Ends the stream with `last`, which replaces a message the client has
    /// not taken.
    pub(crate) fn finish_with(self, last: T) {
        let mut state = self.inner.lock();
        state.slot = Some(last);
        state.finished = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

impl<T> Drop for Outbox<T> {
    /// The stream ends after what the slot holds.
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.finished = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

impl<T> Stream for Inbox<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.inner.lock();
        if let Some(item) = state.slot.take() {
            drop(state);
            self.inner.changed.notify_one();
            return Poll::Ready(Some(item));
        }
        if state.finished {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        self.inner.lock().inbox_gone = true;
        self.inner.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    const PATIENCE: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn a_reading_client_gets_every_message_in_order() {
        let (outbox, mut inbox) = outbox();
        let sender = tokio::spawn(async move {
            for i in 0..50 {
                outbox.send(i, Duration::from_secs(10)).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(i) = inbox.next().await {
            got.push(i);
        }
        sender.await.unwrap();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_holds_one_message_then_gets_the_last_word() {
        let (outbox, mut inbox) = outbox();
        outbox.send("first", PATIENCE).await.unwrap();
        let unsent = outbox.send("second", PATIENCE).await.unwrap_err();
        assert_eq!(unsent, Unsent::Unread("second"));
        outbox.finish_with("dropped: read faster");
        // The untaken first message was replaced: one item in memory, the
        // last word, then the end.
        assert_eq!(inbox.next().await, Some("dropped: read faster"));
        assert_eq!(inbox.next().await, None);
    }

    #[tokio::test]
    async fn a_client_that_goes_away_is_noticed() {
        let (outbox, inbox) = outbox::<u32>();
        let closed = tokio::spawn(async move {
            outbox.closed().await;
            outbox.send(1, Duration::from_secs(10)).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(inbox);
        let sent = tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("closed() returned")
            .unwrap();
        assert_eq!(sent, Err(Unsent::Gone));
    }

    #[tokio::test]
    async fn a_dropped_outbox_ends_the_stream_after_its_last_message() {
        let (outbox, mut inbox) = outbox();
        outbox.send(7, PATIENCE).await.unwrap();
        drop(outbox);
        assert_eq!(inbox.next().await, Some(7));
        assert_eq!(inbox.next().await, None);
    }
}
