//! The Slack Web API as the bridge uses it: typed calls through slack-morphism on one pooled
//! reqwest client, each counted in metrics, each error classified for the delivery code.
//!
//! The rooms: the client and its calls (`client`), what a failure means (`error`), the
//! answers' shapes as the bridge reads them (`wire`), the HTTP connector (`connector`), the
//! e-mail → user directory ([`directory`]) and the channels routes post to (`channels`).

mod channels;
mod client;
mod connector;
pub mod directory;
mod error;
mod wire;

pub use channels::ChannelInfo;
pub use client::{AuthInfo, SlackApi};
pub use connector::{ReqwestConnector, MAX_RETRY_AFTER, MIN_RETRY_AFTER};
pub use error::{ErrorClass, SlackError};
pub use wire::{UsersPage, METADATA_EVENT_TYPE, NOTIFICATION_PART};

pub use crate::outbound::install_crypto_provider;
