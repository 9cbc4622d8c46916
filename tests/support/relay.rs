//! A TCP relay in front of a server, standing in for the network path to it: it accepts,
//! forwards both ways, and on [`Relay::freeze`] stops forwarding on every connection open
//! then without closing any socket (the old path becomes a black hole, as after a failover
//! or a partition where the old server vanished without a reset), while connections made
//! after the freeze are forwarded as usual (a new connection would work at once).
//! [`SilentHost`] is a host whose address no longer answers at all: a connection to it is
//! never accepted, nor refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Relay {
    pub port: u16,
    /// Connections numbered below this are frozen.
    frozen_below: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    /// Ends every task (and closes every socket) when the relay drops.
    stop: CancellationToken,
}

impl Relay {
    /// A relay on a free loopback port to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a relay");
        let port = listener.local_addr().expect("its address").port();
        let (frozen_below, _) = watch::channel(0);
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            target,
            frozen_below.clone(),
            accepted.clone(),
            stop.clone(),
        ));
        Relay {
            port,
            frozen_below,
            accepted,
            stop,
        }
    }

    /// Stops forwarding on every connection open now; their sockets stay open, silent.
    pub fn freeze(&self) {
        let open_now = self.accepted.load(Ordering::SeqCst);
        self.frozen_below.send_replace(open_now);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    target: u16,
    frozen_below: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            client = listener.accept() => client,
        };
        let Ok((client, _)) = client else { continue };
        let number = accepted.fetch_add(1, Ordering::SeqCst);
        let frozen = frozen_below.subscribe();
        tokio::spawn(forward(client, target, number, frozen, stop.clone()));
    }
}

/// Forwards one connection until either side closes, or, once frozen, holds both sockets
/// open without a byte either way until the relay stops.
async fn forward(
    mut client: TcpStream,
    target: u16,
    number: u64,
    mut frozen: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let froze = tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        waited = frozen.wait_for(|below| number < *below) => waited.is_ok(),
    };
    if froze {
        stop.cancelled().await;
    }
}

/// A loopback port where a connection attempt gets no answer (its SYN is dropped), as when
/// a server's address vanished: a listener whose accept queue is full and never accepted.
pub struct SilentHost {
    pub port: u16,
    _listener: tokio::net::TcpListener,
    _filling: TcpStream,
}

impl SilentHost {
    pub async fn start() -> SilentHost {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind");
        // A queue of one, filled at once: Linux drops every later SYN.
        let listener = socket.listen(0).expect("listen");
        let port = listener.local_addr().expect("its address").port();
        let filling = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("fill the accept queue");
        SilentHost {
            port,
            _listener: listener,
            _filling: filling,
        }
    }
}
