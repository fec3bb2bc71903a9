//! The signal that stops a server: SIGTERM (what the kubelet sends) or
//! Ctrl-C.

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
