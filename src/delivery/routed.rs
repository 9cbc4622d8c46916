//! A notification a route (`ROUTES_FILE`) sends to a channel: one top-level post there,
//! rendered for a channel (no snooze, no buttons that act for one person; Coder's own links
//! stay), through the exactly-once poster. With collapse on, the copies Coder sends every
//! holder of a role are one event: the first copy posts it, the others answer `collapsed`
//! with that post and post nothing (on any replica, across restarts: the store keeps the
//! event). With `dm = true` the person's DM gets it too, as without routes. A channel that
//! refuses the post for good gives the notification to the person's DM instead.

use super::poster::{Part, Post, Posted};
use super::{Delivery, Outcome, Recipient, RetryLater, Trouble, BUSY_POLL, MAX_BUSY_POLL};
use crate::render;
use crate::routes::{collapse_digest, Route};
use crate::slack::directory::Directory;
use crate::slack::{ErrorClass, SlackError};
use crate::state::{CollapseClaim, Event};
use crate::telemetry::RouteLabels;
use slack_morphism::prelude::*;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// What posting to a route's channel came to.
enum ChannelPost {
    /// Posted, or joined to the event's post: what Coder is told.
    Done(Outcome),
    /// The channel refuses the post for good: the person's DM gets it instead.
    Refused(SlackError),
}

impl Delivery {
    /// Delivers `to`'s notification by `route`: to its channel, and to the DM when the
    /// route says so (or the channel refuses it).
    pub(super) async fn deliver_routed(
        &self,
        directory: &Directory,
        to: &Recipient<'_>,
        route: &Route,
        channel: &str,
    ) -> Result<Outcome, RetryLater> {
        let labels = RouteLabels {
            route: route.index.to_string(),
        };
        self.metrics.routed.get_or_create(&labels).inc();
        let started = SystemTime::now();
        let outcome = match self.post_to_route(to, route, channel, &labels).await? {
            ChannelPost::Done(outcome) => outcome,
            ChannelPost::Refused(e) => {
                tracing::error!(route = %route.label(), channel, error = %e, "the route's channel refuses the post: delivered to the person's DM instead (run `check`)");
                return self.deliver_to_person(directory, to).await;
            }
        };
        if !route.dm {
            return Ok(outcome);
        }
        match self.deliver_to_person(directory, to).await {
            Ok(_) => Ok(outcome),
            Err(later) => {
                // The channel has it: whoever tries again reads back before posting there.
                to.attempt.note_unsettled(started);
                Err(later)
            }
        }
    }

    /// Posts to `route`'s channel once per event (or once per notification, collapse off).
    async fn post_to_route(
        &self,
        to: &Recipient<'_>,
        route: &Route,
        channel: &str,
        labels: &RouteLabels,
    ) -> Result<ChannelPost, RetryLater> {
        if route.collapse.is_zero() {
            return self.post_in_channel(to, channel, labels).await;
        }
        let digest = collapse_digest(to.notification);
        let event = Event {
            channel,
            digest: &digest,
        };
        let mut poll = BUSY_POLL;
        loop {
            let claim = self
                .store
                .claim_collapse(event, route.collapse, self.policy.lease)
                .await
                .map_err(|e| self.store_failed(&e))?;
            match claim {
                CollapseClaim::Ours(token) => {
                    let posted = self.post_in_channel(to, channel, labels).await;
                    let settled = match &posted {
                        Ok(ChannelPost::Done(Outcome::Delivered { ts, .. })) => {
                            self.store.set_collapse_post(event, &token, ts).await
                        }
                        _ => self.store.release_collapse(event, &token).await,
                    };
                    if let Err(e) = settled {
                        // Its lease ends on its own; a later copy then posts anew.
                        self.note_store_error(&e);
                    }
                    return posted;
                }
                CollapseClaim::Joined { ts, copies } => {
                    self.metrics.collapsed.get_or_create(labels).inc();
                    tracing::debug!(msg_id = %to.notification.msg_id, route = route.index, copies, "a copy joined its event's post");
                    let channel = channel.to_owned();
                    return Ok(ChannelPost::Done(Outcome::Collapsed { channel, ts }));
                }
                CollapseClaim::Busy if Instant::now() + poll <= to.deadline => {
                    tokio::time::sleep(poll).await;
                    poll = (poll * 2).min(MAX_BUSY_POLL);
                }
                CollapseClaim::Busy => {
                    return Err(RetryLater {
                        reason: "another copy of this event is being posted to the route's channel"
                            .into(),
                        retry_after: Duration::from_secs(5),
                        trouble: Some(Trouble::Busy),
                    })
                }
            }
        }
    }

    /// One top-level post of the notification in `channel`, rendered for a channel.
    async fn post_in_channel(
        &self,
        to: &Recipient<'_>,
        channel: &str,
        labels: &RouteLabels,
    ) -> Result<ChannelPost, RetryLater> {
        let notification = to.notification;
        let post = Post {
            notification,
            part: Part::Notification,
            channel: SlackChannelId(channel.to_owned()),
            thread: None,
        };
        let content = render::render_for_channel(notification, &self.policy.render, None).content;
        let (posted, _) = self.post_or_plain_text(to, &post, content).await;
        match posted {
            Ok(Posted { channel, ts }) => {
                self.metrics.route_posts.get_or_create(labels).inc();
                Ok(ChannelPost::Done(Outcome::Delivered { channel, ts }))
            }
            Err(e) if matches!(e.class(), ErrorClass::Permanent | ErrorClass::BadMessage) => {
                Ok(ChannelPost::Refused(e))
            }
            Err(e) => Err(super::route::retry_later(&e)),
        }
    }
}
