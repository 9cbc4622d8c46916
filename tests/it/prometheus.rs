//! A real Prometheus (Debian's `prometheus` package) scrapes the real bridge on loopback and
//! loads the alert rules the project ships: proves the exposition format end to end, and
//! that the rules load and evaluate. Without the package the test says it skipped, unless
//! `REQUIRE_PROMETHEUS` is set (CI sets it), when it fails instead.

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// A Prometheus server on a free loopback port, stopped (killed) when dropped.
struct Prometheus {
    url: String,
    _process: tokio::process::Child,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second with the project's rule files, or
    /// `None` when it is not installed (and not required).
    async fn start(target: &str) -> Option<Prometheus> {
        let Some(bin) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
        else {
            assert!(
                std::env::var_os("REQUIRE_PROMETHEUS").is_none(),
                "REQUIRE_PROMETHEUS is set but Prometheus is not installed (apt-get install prometheus)"
            );
            eprintln!(
                "SKIPPED: Prometheus is not installed (apt-get install prometheus runs this test)"
            );
            return None;
        };
        let dir = fresh_dir("prometheus");
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n  - {}\n\
             scrape_configs:\n  - job_name: coder-slack-bridge\n    static_configs:\n      - targets: ['{target}']\n",
            deploy.join("prometheus-rules.yaml").display(),
            deploy.join("prometheus-rules-optional.yaml").display(),
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write the config");
        // Prometheus binds its port itself: one free when picked may be taken by the time it
        // binds it (it then exits), so another is tried.
        for _ in 0..5 {
            let port = free_port();
            let mut process = tokio::process::Command::new(&bin)
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start prometheus");
            let url = format!("http://127.0.0.1:{port}");
            if Self::answers(&url, &mut process).await {
                return Some(Prometheus {
                    url,
                    _process: process,
                    dir,
                });
            }
        }
        panic!("Prometheus did not start on any of 5 ports");
    }

    /// Waits until the Prometheus `process` answers at `url`; false when it exited first.
    async fn answers(url: &str, process: &mut tokio::process::Child) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if !matches!(process.try_wait(), Ok(None)) {
                return false;
            }
            let ready = http_client().get(format!("{url}/-/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Prometheus did not answer {url}/-/ready within 60 s");
    }

    /// `GET /api/v1/<path>`'s `data`, or `None` while Prometheus does not answer yet.
    async fn api(&self, path: &str) -> Option<Value> {
        let response = http_client()
            .get(format!("{}/api/v1/{path}", self.url))
            .send()
            .await
            .ok()?;
        let body: Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The single value an instant query gives, if it gives one.
    async fn value(&self, query: &str) -> Option<f64> {
        let query = url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>();
        let data = self.api(&format!("query?query={query}")).await?;
        data["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// A loopback port free when asked; Prometheus, binding it later, may find it taken (and is
/// started again on another).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_traffic_and_loads_the_alert_rules() {
    let (slack, bridge) = bridge_with_bobby(|_| {}).await;
    let Some(prometheus) = Prometheus::start(&bridge.app_addr.to_string()).await else {
        return;
    };
    // Traffic only once Prometheus scrapes, so it sees the counters rise from their zeros.
    let wait = Duration::from_secs(60);
    wait_until("Prometheus scrapes the bridge", wait, async || {
        prometheus.value("coder_slack_bridge_ready").await == Some(1.0)
    })
    .await;
    for _ in 0..3 {
        bridge.deliver(&workspace_deleted("bobby@coder.com")).await;
    }
    let (_, _, answer) = bridge.post(&workspace_deleted("nobody@coder.com")).await;
    assert_eq!(answer["status"], "undeliverable");
    assert_eq!(slack.calls_to("chat.postMessage").len(), 3);

    // What the test sent, as Prometheus sees it once it scraped.
    wait_until("Prometheus has scraped the deliveries", wait, async || {
        let delivered = r#"sum(coder_slack_bridge_webhooks_total{job="coder-slack-bridge",outcome="delivered"})"#;
        prometheus.value(delivered).await == Some(3.0)
    })
    .await;
    let queries = [
        (
            r#"sum(coder_slack_bridge_webhooks_total{outcome="undeliverable"})"#,
            1.0,
        ),
        ("sum(coder_slack_bridge_webhooks_total)", 4.0),
        ("coder_slack_bridge_delivery_seconds_count", 4.0),
        ("coder_slack_bridge_ready", 1.0),
        (
            r#"sum(coder_slack_bridge_slack_api_calls_total{method="chat.postMessage"})"#,
            3.0,
        ),
        ("coder_slack_bridge_directory_users", 1.0),
        // The histogram's buckets are whole: every delivery falls under the last one.
        (
            r#"coder_slack_bridge_delivery_seconds_bucket{le="+Inf"}"#,
            4.0,
        ),
    ];
    for (query, expected) in queries {
        assert_eq!(prometheus.value(query).await, Some(expected), "{query}");
    }
    let p99 = "histogram_quantile(0.99, sum by (le) (coder_slack_bridge_delivery_seconds_bucket))";
    let p99 = prometheus.value(p99).await.expect("a p99");
    assert!(p99 > 0.0 && p99 <= 30.0, "p99 {p99}");
    let targets = prometheus.api("targets").await.expect("targets");
    assert_eq!(targets["activeTargets"][0]["health"], "up", "{targets}");

    // The shipped rules loaded, and evaluate without error; on this healthy bridge none fires.
    wait_until("the rules have been evaluated", wait, async || {
        let Some(rules) = prometheus.api("rules").await else {
            return false;
        };
        let all: Vec<&Value> = rules["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        all.len() == 12
            && all
                .iter()
                .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z")
    })
    .await;
    // Once an evaluation has seen the traffic, no alert is even pending on this healthy bridge.
    wait_until("no alert is active", wait, async || {
        let alerts = prometheus.api("alerts").await;
        alerts.is_some_and(|a| a["alerts"].as_array().is_some_and(Vec::is_empty))
    })
    .await;
    bridge.stop().await;
}
