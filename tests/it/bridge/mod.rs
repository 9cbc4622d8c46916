//! The webhook end to end: the real server on 127.0.0.1:0 against a fake Slack on loopback.

mod delivery;
mod honest;
mod ops;
mod webhook;
