//! `#name`s turned into channel IDs, once at start-up: the caller lists the channels the app
//! can see (Slack's `conversations.list`, see `slack::SlackApi::channel_ids`), and a name
//! not among them stops start-up naming the file, the route's line and the name.

use super::{Channel, Routes, RoutesError};
use std::collections::HashMap;

impl Routes {
    /// The channel names the routes use (lower-case, without `#`), each once, in order.
    pub fn channel_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in self.routes.iter().filter_map(|r| r.channel.name()) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// These routes with every `#name` given its channel's ID from `ids` (lower-case name →
    /// ID); the first name `ids` lacks is the error.
    pub fn resolved(mut self, ids: &HashMap<String, String>) -> Result<Routes, RoutesError> {
        for route in &mut self.routes {
            let Some(name) = route.channel.name() else {
                continue;
            };
            match ids.get(&name) {
                Some(id) => route.channel.id = Some(id.clone()),
                None => {
                    let reason = route.channel.not_seen();
                    return Err(RoutesError::new(&self.path, Some(route.line), reason));
                }
            }
        }
        Ok(self)
    }

    /// Whether every route's channel is known by its ID.
    pub fn is_resolved(&self) -> bool {
        self.routes.iter().all(|r| r.channel.id().is_some())
    }
}

impl Channel {
    /// Why a `#name` no channel the app can see has is refused.
    pub fn not_seen(&self) -> String {
        format!("{} names no channel the app can see: no public channel has that name, and no private one the app was invited to (archived channels do not count); check the name, or write the channel's ID", self.written)
    }
}
