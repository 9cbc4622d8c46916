//! An HTTP proxy on loopback, a port where nothing listens, and a TLS server no trust store
//! knows: the network paths the proxy and TLS tests take.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP proxy on loopback that records each request head: `CONNECT` opens a tunnel (what
/// `https`/`wss` use), an absolute-form request (`POST http://host:port/path`, what `http`
/// uses) is forwarded as it is.
#[derive(Clone)]
pub struct FakeProxy {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FakeProxy {
    pub async fn start() -> FakeProxy {
        Self::spawn(None).await
    }

    /// A proxy that answers every request with `status` (e.g. `407 Proxy Authentication
    /// Required`) and closes the connection.
    pub async fn refusing(status: &'static str) -> FakeProxy {
        Self::spawn(Some(status)).await
    }

    async fn spawn(refuse: Option<&'static str>) -> FakeProxy {
        // Clients tunnel TLS through it.
        super::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FakeProxy {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
        };
        let requests = proxy.requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let requests = requests.clone();
                tokio::spawn(async move {
                    let _ = proxy_one(client, requests, refuse).await;
                });
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request lines seen so far (`CONNECT host:port HTTP/1.1`, `POST http://… HTTP/1.1`).
    pub fn request_lines(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|head| head.lines().next().unwrap_or_default().to_owned())
            .collect()
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn proxy_one(
    mut client: TcpStream,
    requests: Arc<Mutex<Vec<String>>>,
    refuse: Option<&'static str>,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut client).await? else {
        return Ok(());
    };
    requests.lock().unwrap().push(head.clone());
    if let Some(status) = refuse {
        let answer = format!(
            "HTTP/1.1 {status}\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        client.write_all(answer.as_bytes()).await?;
        return Ok(());
    }
    let request_target = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned();
    let connect = head.starts_with("CONNECT ");
    // CONNECT names host:port; an absolute-form request names http://host:port/path.
    let target = if connect {
        request_target
    } else {
        request_target
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let mut upstream = match TcpStream::connect(&target).await {
        Ok(s) => s,
        Err(_) => {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    if connect {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        upstream.write_all(head.as_bytes()).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// A port on loopback where nothing listens, for as long as it is held: bound but never
/// listening, so a connection is refused there, and no other socket can take the port
/// meanwhile (a port bound and released could be taken by another test before it is used).
pub struct ClosedPort(tokio::net::TcpSocket);

impl ClosedPort {
    pub fn port(&self) -> u16 {
        self.0.local_addr().expect("a bound socket").port()
    }
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("a free port");
    ClosedPort(socket)
}

/// A TLS server on loopback whose certificate (for `localhost` and 127.0.0.1) comes from a CA
/// made up at test time, which no trust store knows. It completes no handshake.
pub struct UntrustedTls {
    pub addr: SocketAddr,
}

impl UntrustedTls {
    pub async fn start() -> UntrustedTls {
        super::install_crypto_provider();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "coder-slack-bridge test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &*ca).unwrap();
        let chain = vec![cert.der().clone(), ca.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                // The client gives up at the certificate; the outcome is the client's to report.
                tokio::spawn(async move {
                    let _ = acceptor.accept(stream).await;
                });
            }
        });
        UntrustedTls { addr }
    }
}
