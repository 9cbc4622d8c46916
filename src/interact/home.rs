//! A person's App Home, kept true: the one path that publishes it. Opening the Home and an
//! unsnooze from it both ask for a [`HomePublisher::publish`]; per person, one publish is in
//! flight at a time and each is rendered from the store just before it is sent, so an older
//! view can never land after a newer one (a snooze that just ended shown again). A request
//! while one is in flight makes exactly one more publish after it, however many came.
//!
//! Each publish carries the hash of the view Slack last returned for that person
//! (`views.publish`'s `hash`): when someone else published since (another replica), Slack
//! answers `hash_conflict` instead of overwriting their view, and the state is read again and
//! published once more, without a hash.

use crate::config::Threads;
use crate::render;
use crate::slack::{SlackApi, SlackError};
use crate::state::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// People whose last view's hash is remembered, and for how long: a Home not published for a
/// day is published without one (nothing is lost: Slack then takes the view as it is).
const HASHES_KEPT: u64 = 100_000;
const HASH_KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

pub struct HomePublisher {
    api: Arc<SlackApi>,
    store: Store,
    /// For the Home's link to the person's notification settings in Coder.
    coder_url: Option<url::Url>,
    /// What the Home lists: workspaces' threads, or how notifications arrive (`THREADS`).
    pub(super) threads: Threads,
    /// People whose Home is being published, and whether a request came after its state
    /// was read (then it is published once more).
    pending: Mutex<HashMap<String, bool>>,
    /// The hash of the view Slack last returned, per person.
    hashes: moka::future::Cache<String, String>,
}

/// Why a publish did not happen.
enum Failed {
    Store(String),
    Slack(SlackError),
}

impl HomePublisher {
    pub fn new(api: Arc<SlackApi>, store: Store, coder_url: Option<url::Url>) -> Self {
        HomePublisher {
            api,
            store,
            coder_url,
            threads: Threads::Workspace,
            pending: Mutex::new(HashMap::new()),
            hashes: moka::future::Cache::builder()
                .max_capacity(HASHES_KEPT)
                .time_to_live(HASH_KEPT_FOR)
                .build(),
        }
    }

    /// Shows `user`'s Home as the store has it now: published here, or, when a publish for
    /// them is in flight, once more by that one after it.
    pub async fn publish(&self, user: &str) {
        let Some(mut turn) = Turn::take(&self.pending, user) else {
            return; // the publish in flight reads the store again before it stops
        };
        loop {
            turn.read_now();
            if let Err(failed) = self.publish_once(user).await {
                match failed {
                    Failed::Store(e) => {
                        tracing::warn!(error = %e, "the App Home could not be read")
                    }
                    Failed::Slack(e) => {
                        tracing::warn!(error = %e, "the App Home could not be published")
                    }
                }
            }
            if turn.finished() {
                return;
            }
        }
    }

    /// One publish with the last hash; on a conflict, once more from a fresh read, without.
    async fn publish_once(&self, user: &str) -> Result<(), Failed> {
        let hash = self.hashes.get(user).await;
        match self.send(user, hash.as_deref()).await {
            Err(Failed::Slack(e)) if e.is_stale_view() => {
                tracing::debug!("the App Home changed elsewhere since; publishing it afresh");
                self.send(user, None).await
            }
            sent => sent,
        }
    }

    /// Renders `user`'s Home from the store and publishes it, remembering its new hash.
    async fn send(&self, user: &str, hash: Option<&str>) -> Result<(), Failed> {
        let home = self
            .store
            .home(user)
            .await
            .map_err(|e| Failed::Store(e.to_string()))?;
        let blocks = render::home_view(&home, self.coder_url.as_ref(), self.threads);
        let published = self.api.publish_home(user, blocks, hash).await;
        match published.map_err(Failed::Slack)? {
            Some(hash) => self.hashes.insert(user.to_owned(), hash).await,
            None => self.hashes.invalidate(user).await,
        }
        Ok(())
    }
}

/// One person's turn to publish, held by the one request that publishes; whoever asks
/// meanwhile marks it so it publishes once more. Ended however the publishing ends (a
/// dropped task too), so a person is never left without a way to publish.
struct Turn<'a> {
    pending: &'a Mutex<HashMap<String, bool>>,
    user: &'a str,
    over: bool,
}

impl<'a> Turn<'a> {
    /// The turn, unless someone else holds it (who is then told to publish once more).
    fn take(pending: &'a Mutex<HashMap<String, bool>>, user: &'a str) -> Option<Self> {
        let ours = lock(pending).insert(user.to_owned(), true).is_none();
        // Made only when ours: a turn dropped ends, and would end the holder's.
        ours.then(|| Turn {
            pending,
            user,
            over: false,
        })
    }

    /// The state is about to be read: requests until now are answered by this publish.
    fn read_now(&mut self) {
        lock(self.pending).insert(self.user.to_owned(), false);
    }

    /// Whether no request came since the state was read; if none did, the turn ends here,
    /// in the same step, so a request after it takes a turn of its own.
    fn finished(&mut self) -> bool {
        let mut pending = lock(self.pending);
        self.over = pending.get(self.user) == Some(&false);
        if self.over {
            pending.remove(self.user);
        }
        self.over
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.over {
            lock(self.pending).remove(self.user);
        }
    }
}

fn lock(
    pending: &Mutex<HashMap<String, bool>>,
) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_turn_per_person_and_a_request_meanwhile_makes_one_more_publish() {
        let pending = Mutex::new(HashMap::new());
        let mut first = Turn::take(&pending, "U1").expect("nobody holds it");
        first.read_now();
        // Requests meanwhile: the holder publishes once more for all of them.
        assert!(Turn::take(&pending, "U1").is_none());
        assert!(Turn::take(&pending, "U1").is_none());
        assert!(
            Turn::take(&pending, "U2").is_some(),
            "another person's is apart"
        );
        assert!(!first.finished(), "a request came after the read");
        first.read_now();
        assert!(first.finished());
        let mut next = Turn::take(&pending, "U1").expect("free again");
        next.read_now();
        // A publish cut short (its task dropped) frees the turn too.
        drop(next);
        assert!(Turn::take(&pending, "U1").is_some());
    }
}
