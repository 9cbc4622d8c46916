//! A bridge in a runtime of its own, so a test can kill it as the kernel would a process:
//! every task dropped where it stands, nothing released, nothing flushed (its database
//! connections close; whatever it held in the store stays held until its leases end).

use coder_slack_bridge::config::Config;
use coder_slack_bridge::App;
use std::net::SocketAddr;

pub struct KillableReplica {
    pub addr: SocketAddr,
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KillableReplica {
    pub fn start(config: Config) -> KillableReplica {
        let (started, addr) = std::sync::mpsc::channel();
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            let app = runtime
                .block_on(App::build(config))
                .expect("replica starts");
            let _ = started.send(app.local_addr());
            let _app = app;
            // Serve until killed; then drop every task at once.
            let _ = killed.recv();
            runtime.shutdown_background();
        });
        let addr = addr
            .recv_timeout(super::DEADLINE)
            .expect("the replica started");
        KillableReplica {
            addr,
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    pub fn kill(&mut self) {
        drop(self.kill.take());
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the replica's thread");
        }
    }
}

impl Drop for KillableReplica {
    fn drop(&mut self) {
        self.kill();
    }
}
