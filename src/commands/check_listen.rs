//! `check`'s part for `LISTEN_ADDR`: that `serve` could bind it. The address is bound and
//! released at once; when it is taken, whether a bridge answers there tells a second
//! bridge's failure to start (the usual `kubectl exec … check` in a running pod) from
//! another program holding the port.

use crate::error_text::describe_io;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long a server on a taken address has to answer `/healthz`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `addr` and lets it go; a problem is printed as a FAIL line and returned.
pub(super) async fn check_listen_addr(addr: SocketAddr) -> Result<(), String> {
    let e = match TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            println!("ok    LISTEN_ADDR: {addr} is free for the webhook listener");
            return Ok(());
        }
        Err(e) => e,
    };
    let cause = describe_io(&e);
    if e.kind() == ErrorKind::AddrInUse && answers_like_a_bridge(addr).await {
        println!("warn  LISTEN_ADDR: {addr} is taken by a server that answers /healthz as a bridge does (this one, when check runs beside it): a second `serve` could not start here");
        return Ok(());
    }
    let hint = match e.kind() {
        ErrorKind::AddrInUse => {
            "another program holds it: stop it, or set LISTEN_ADDR (or PORT) to a free port"
        }
        ErrorKind::PermissionDenied => "ports below 1024 need privileges: use a port from 1024 up",
        ErrorKind::AddrNotAvailable => {
            "no interface of this host has that address: use 127.0.0.1, 0.0.0.0 or one of its own"
        }
        _ => "set LISTEN_ADDR (or PORT) to an address this host can listen on",
    };
    println!("FAIL  LISTEN_ADDR: cannot listen on {addr}: {cause}");
    Err(format!(
        "LISTEN_ADDR {addr} cannot be bound ({cause}): {hint}"
    ))
}

/// Whether what listens at `addr` answers `GET /healthz` with the bridge's `{"status":"ok"}`.
async fn answers_like_a_bridge(addr: SocketAddr) -> bool {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(target).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        // The whole answer is small; the server closes after an HTTP/1.0 request.
        stream.take(4096).read_to_end(&mut answer).await.ok()?;
        let answer = String::from_utf8_lossy(&answer);
        Some(
            answer.starts_with("HTTP/1.")
                && answer.contains(" 200 ")
                && answer.contains(r#""status":"ok""#),
        )
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(true))
    )
}
