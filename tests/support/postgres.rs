//! A real PostgreSQL server for a test: Debian's `postgresql` package, `initdb` into a fresh
//! temp folder, a free loopback port, stopped (and its folder removed) when the guard drops.
//! As root (sessions and CI), the server runs as the `postgres` user, which initdb demands.
//!
//! Without the package installed, [`PgServer::start`] returns `None` and the test says it
//! skipped, unless `REQUIRE_POSTGRES` is set (CI sets it), when the test fails instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl PgServer {
    /// Starts a server (on the blocking pool: initdb and pg_ctl take seconds), or `None`
    /// (with a note) when PostgreSQL is not installed.
    pub async fn start() -> Option<PgServer> {
        tokio::task::spawn_blocking(|| Self::start_blocking(None, None))
            .await
            .expect("start PostgreSQL")
    }

    /// A server that offers TLS with a certificate for 127.0.0.1 from a CA made up now; the
    /// CA's PEM is returned beside it (no trust store knows it).
    pub async fn start_with_tls() -> Option<(PgServer, String)> {
        let (ca_pem, cert_pem, key_pem) = test_ca_and_server_cert();
        let server = tokio::task::spawn_blocking(move || {
            Self::start_blocking(Some((cert_pem, key_pem)), None)
        })
        .await
        .expect("start PostgreSQL")?;
        Some((server, ca_pem))
    }

    /// A server on which `role` logs in over TCP only with its password (SCRAM), owning the
    /// database `role`; every other role is trusted as usual. The URL of that database,
    /// without user or password (`postgres://127.0.0.1:PORT/ROLE?sslmode=disable`), is
    /// returned beside it.
    pub async fn start_with_password(role: &str, password: &str) -> Option<(PgServer, String)> {
        let hba = format!("host all {role} 127.0.0.1/32 scram-sha-256\n");
        let server = tokio::task::spawn_blocking(move || Self::start_blocking(None, Some(hba)))
            .await
            .expect("start PostgreSQL")?;
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
        let password = password.replace('\'', "''");
        // Two batches: CREATE DATABASE cannot share a transaction with anything.
        Self::batch(
            &admin,
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        )
        .await;
        Self::batch(&admin, &format!("CREATE DATABASE {role} OWNER {role}")).await;
        let url = format!(
            "postgres://127.0.0.1:{}/{role}?sslmode=disable",
            server.port
        );
        Some((server, url))
    }

    /// `hba`: lines put before initdb's (the first line that matches decides).
    fn start_blocking(tls: Option<(String, String)>, hba: Option<String>) -> Option<PgServer> {
        let Some(bin) = find_bin() else {
            assert!(
                std::env::var_os("REQUIRE_POSTGRES").is_none(),
                "REQUIRE_POSTGRES is set but PostgreSQL is not installed (apt-get install postgresql)"
            );
            eprintln!("SKIPPED: PostgreSQL is not installed (apt-get install postgresql runs these tests)");
            return None;
        };
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Under /tmp: the postgres user must reach it, and /root is closed to it.
        let dir = PathBuf::from(format!("/tmp/csb-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a folder for the server");
        if as_root() {
            run(Command::new("chown").arg("postgres:").arg(&dir));
        }
        // From here on the guard stops the server (if any) and removes the folder, even when
        // a step below fails.
        let mut server = PgServer { dir, bin, port: 0 };
        let (dir, bin) = (server.dir.clone(), server.bin.clone());
        let data = dir.join("data");
        // 1 MiB WAL segments: a cluster takes a few MB of disk rather than tens.
        run(as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args([
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
                "--wal-segsize=1",
            ]));
        if let Some(lines) = hba {
            let file = data.join("pg_hba.conf");
            let initdbs = std::fs::read_to_string(&file).expect("read pg_hba.conf");
            std::fs::write(&file, lines + &initdbs).expect("write pg_hba.conf");
        }
        // fsync off: the tests check the bridge, not the disk, and it saves seconds.
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=60 \
             -c min_wal_size=2MB -c max_wal_size=32MB",
            dir.display()
        );
        if let Some((cert, key)) = tls {
            let (cert_file, key_file) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::write(&cert_file, cert).expect("write the certificate");
            std::fs::write(&key_file, key).expect("write the key");
            // PostgreSQL refuses a key that others can read.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
                .expect("key mode");
            if as_root() {
                run(Command::new("chown")
                    .arg("postgres:")
                    .arg(&cert_file)
                    .arg(&key_file));
            }
            options += &format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_file.display(),
                key_file.display()
            );
        }
        // The server binds its port itself: a port free when it was picked may be taken by
        // the time the server binds it, so another is tried then.
        for attempt in 1.. {
            let port = free_port();
            server.port = port;
            let log = dir.join(format!("server-{attempt}.log"));
            let started = as_server_user(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "30", "start", "-o"])
                .arg(format!("{options} -p {port}"))
                .stdin(Stdio::null())
                .output()
                .expect("run pg_ctl");
            if started.status.success() {
                break;
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                attempt < 5 && said.contains("could not bind"),
                "pg_ctl start failed: {}{}{said}",
                String::from_utf8_lossy(&started.stdout),
                String::from_utf8_lossy(&started.stderr)
            );
        }
        Some(server)
    }

    /// A URL for a new, empty database on this server.
    pub async fn new_database(&self, name: &str) -> String {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("connect as postgres");
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a database");
        drop(client);
        let _ = connection.await;
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    /// Runs the statements in `sql` on the database at `url` (the test's own set-up).
    pub async fn batch(url: &str, sql: &str) {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let connection = tokio::spawn(connection);
        client.batch_execute(sql).await.expect("run the statements");
        drop(client);
        let _ = connection.await;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `/usr/lib/postgresql/VERSION/bin`, the newest installed (Debian keeps it off PATH).
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|bin| {
        let version = bin.parent().and_then(Path::file_name);
        version.and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    versions.pop()
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program` as the user the server runs as: `postgres` when we are root.
fn as_server_user(program: &Path) -> Command {
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost: (CA, cert, key) PEM.
fn test_ca_and_server_cert() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "coder-slack-bridge test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
    let cert = params.signed_by(&key, &*ca).expect("server certificate");
    (
        pem("CERTIFICATE", ca.der()),
        pem("CERTIFICATE", cert.der()),
        pem("PRIVATE KEY", &key.serialize_der()),
    )
}

/// DER as PEM (rcgen's own PEM output is a feature this build leaves out).
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A loopback port free when asked; whoever binds it later may find it taken (and retries).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
