//! A TCP relay on loopback that can make the connections it carries go
//! silent: the bytes stop both ways, the sockets stay open, and neither end
//! hears of it, as when a peer's network vanishes (a node lost, a
//! connection-tracking table flushed) without a FIN or RST. Clients in
//! front of it must find out for themselves (a deadline, HTTP/2 pings).
//!
//! ```no_run
//! # async fn example(target: std::net::SocketAddr) -> Result<(), openmodel_tests::Error> {
//! use openmodel_tests::relay::Relay;
//!
//! let relay = Relay::start(target).await?;
//! // … connect to relay.addr() …
//! relay.silence_open_connections();
//! // Connections opened from now on are carried again.
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// The relay; it stops (and drops every connection) when dropped.
pub struct Relay {
    addr: SocketAddr,
    /// Connections numbered below this carry nothing.
    silenced_below: watch::Sender<u64>,
    /// How many connections were accepted.
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port and carries each connection to
    /// `target`.
    pub async fn start(target: SocketAddr) -> Result<Relay, Error> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(Error::io("binding the relay"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("reading the relay's address"))?;
        let (silenced_below, silence) = watch::channel(0);
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let number = counter.fetch_add(1, Ordering::SeqCst);
                connections.spawn(carry(client, target, number, silence.clone()));
            }
        });
        Ok(Relay {
            addr,
            silenced_below,
            accepted,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections the relay has accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every connection open now stops carrying bytes, both ways, and is
    /// kept open; connections accepted later are carried.
    pub fn silence_open_connections(&self) {
        let open = self.connections();
        self.silenced_below.send_replace(open);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries one connection until either end closes it, or holds both ends
/// open and silent once connection `number` is silenced.
async fn carry(
    client: TcpStream,
    target: SocketAddr,
    number: u64,
    mut silence: watch::Receiver<u64>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let silenced = |below: &u64| *below > number;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let silent = tokio::select! {
        () = copy(&mut client_read, &mut server_write) => false,
        () = copy(&mut server_read, &mut client_write) => false,
        waited = silence.wait_for(silenced) => waited.is_ok(),
    };
    if silent {
        // Hold all four halves: no FIN, no RST, nothing read or sent.
        std::future::pending::<()>().await;
    }
}

/// Copies `from` to `to` until either fails or `from` ends.
async fn copy(from: &mut (impl AsyncRead + Unpin), to: &mut (impl AsyncWrite + Unpin)) {
    let mut buffer = vec![0u8; 16 << 10];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
