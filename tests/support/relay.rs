//! A TCP relay in front of a server, standing in for the network path to it: it accepts,
//! forwards both ways, and on [`Relay::freeze`] stops forwarding on every connection open
//! then without closing any socket (the old path becomes a black hole, as after a failover
//! or a partition where the old server vanished without a reset), while connections made
//! after the freeze are forwarded as usual (a new connection would work at once). On
//! [`Relay::refuse`] it stops listening and cuts every connection (a host that went down:
//! connections are refused) until [`Relay::admit`].
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
    /// Whether it listens; connections are refused while not.
    listening: watch::Sender<bool>,
    /// Cut on `refuse`: every connection open then.
    cut: Arc<std::sync::Mutex<CancellationToken>>,
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
        let (listening, _) = watch::channel(true);
        let accepted = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        tokio::spawn(accept(
            listener,
            Paths {
                target,
                frozen_below: frozen_below.clone(),
                listening: listening.subscribe(),
                cut: cut.clone(),
                accepted: accepted.clone(),
            },
            stop.clone(),
        ));
        Relay {
            port,
            frozen_below,
            accepted,
            listening,
            cut,
            stop,
        }
    }

    /// Stops listening (new connections are refused) and cuts every open connection.
    pub fn refuse(&self) {
        self.listening.send_replace(false);
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        cut.cancel();
        *cut = CancellationToken::new();
    }

    /// Listens again, on the same port.
    pub fn admit(&self) {
        self.listening.send_replace(true);
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

/// What the accept loop hands each connection.
struct Paths {
    target: u16,
    frozen_below: watch::Sender<u64>,
    listening: watch::Receiver<bool>,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    accepted: Arc<AtomicU64>,
}

async fn accept(listener: TcpListener, mut paths: Paths, stop: CancellationToken) {
    let port = listener.local_addr().expect("its address").port();
    let mut listener = Some(listener);
    loop {
        let Some(open) = &listener else {
            // Refusing: nothing listens until admitted again.
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = paths.listening.wait_for(|on| *on) => if changed.is_err() { return },
            }
            listener = rebind(port).await;
            continue;
        };
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            changed = paths.listening.wait_for(|on| !*on) => {
                if changed.is_err() { return }
                listener = None;
                continue;
            }
            client = open.accept() => client,
        };
        let Ok((client, _)) = client else { continue };
        let number = paths.accepted.fetch_add(1, Ordering::SeqCst);
        let frozen = paths.frozen_below.subscribe();
        let cut = paths.cut.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tokio::spawn(forward(
            client,
            paths.target,
            number,
            frozen,
            cut,
            stop.clone(),
        ));
    }
}

/// The relay's port again, once the old socket is gone (a few tries: the kernel may hold it
/// a moment).
async fn rebind(port: u16) -> Option<TcpListener> {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            return Some(listener);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("cannot listen on the relay's port {port} again");
}

/// Forwards one connection until either side closes, or, once frozen, holds both sockets
/// open without a byte either way until the relay stops.
async fn forward(
    mut client: TcpStream,
    target: u16,
    number: u64,
    mut frozen: watch::Receiver<u64>,
    cut: CancellationToken,
    stop: CancellationToken,
) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let froze = tokio::select! {
        _ = stop.cancelled() => false,
        _ = cut.cancelled() => false,
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
