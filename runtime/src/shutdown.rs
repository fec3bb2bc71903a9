//! The signal that stops a server: SIGTERM (what the kubelet sends) or
//! Ctrl-C; and the flag a server's tasks watch once it has come: a
//! `watch::channel(false)` turned true, which [`until_stopped`] and
//! [`stopped`] wait for.

use tokio::sync::watch;

/// Completes on SIGTERM or Ctrl-C. If no SIGTERM handler can be installed
/// it logs why and waits for Ctrl-C alone.
pub async fn signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        Err(error) => {
            tracing::error!(%error, "cannot install a SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Completes once `stopping` turns true (or its sender is gone).
pub async fn until_stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// [`until_stopped`] on a clone of `stopping`, as a future that owns it
/// (for `with_graceful_shutdown` and spawned tasks).
pub fn stopped(stopping: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + use<> {
    let mut stopping = stopping.clone();
    async move { until_stopped(&mut stopping).await }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopped_completes_when_the_flag_turns_or_its_sender_goes() {
        let (stop, stopping) = watch::channel(false);
        let waiting = tokio::spawn(stopped(&stopping));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        stop.send(true).unwrap();
        waiting.await.unwrap();

        let (stop, stopping) = watch::channel(false);
        let waiting = tokio::spawn(stopped(&stopping));
        drop(stop);
        waiting.await.unwrap();
    }
}
