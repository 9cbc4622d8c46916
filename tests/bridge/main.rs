//! Integration tests: the real server on 127.0.0.1:0 against a fake Slack on loopback.

mod delivery;
mod honest;
mod ops;
#[path = "../support/mod.rs"]
mod support;
mod webhook;
