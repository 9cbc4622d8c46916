//! coder-slack-bridge: Coder notifications → Slack direct messages, over outbound connections only.
//!
//! The data's path: [`http`] receives Coder's webhook → [`delivery`] claims it in the [`state`] store and routes it →
//! [`render`] turns it into Block Kit → [`slack`] posts it. [`socket_mode`] runs beside them,
//! keeping the websocket that carries button clicks. [`App::build`] wires them together and
//! binds the listener, so tests start the real thing on port 0.

pub mod act;
mod backoff;
pub mod cards;
pub mod coder;
pub mod coder_api;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod duration;
pub mod error_text;
mod http;
pub mod interact;
pub mod kinds;
mod outbound;
pub mod proxy;
mod readiness;
pub mod render;
mod retry;
pub mod routes;
mod server;
pub mod slack;
pub mod socket_mode;
mod startup;
pub mod state;
pub mod telemetry;
/// The Coder samples, read by the one loader every test uses.
#[cfg(test)]
#[path = "../tests/support/samples.rs"]
#[allow(dead_code)] // the unit tests use the raw bytes only
mod test_samples;
mod untrusted;

pub use http::MAX_BODY_BYTES;
pub use startup::App;
