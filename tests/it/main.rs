//! The integration tests, one binary (so `cargo test` links them once): the real bridge on
//! 127.0.0.1:0 against a fake Slack (Web API and Socket Mode), a fake Coder and real
//! databases, all on loopback. Each module is one area of behaviour.

mod actions;
mod app_home;
mod bridge;
mod directory;
mod exactly_once;
mod operator_kit;
mod outage;
mod outbox;
mod prometheus;
mod proxy_paths;
mod routed;
mod routes;
mod shutdown;
mod snooze;
mod socket_mode;
mod stack;
mod store;
mod store_failure;
mod store_files;
mod store_suite;
#[path = "../support/mod.rs"]
mod support;
mod threads;
