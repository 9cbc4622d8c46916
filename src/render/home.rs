//! A person's App Home: their snoozes (each with `unsnooze`), their workspaces with what each
//! card shows last, and the link to their notification preferences in Coder.

use super::{card::when, mrkdwn};
use crate::config::Threads;
use crate::state::Home;
use slack_morphism::prelude::*;

/// The blocks of `home` (Slack allows 100 in a Home view; the store gives at most 40 of each
/// list, each taking one block). With `THREADS=off` there are no workspace cards to list:
/// the Home says how notifications arrive instead.
pub fn home_view(home: &Home, coder_url: Option<&url::Url>, threads: Threads) -> Vec<SlackBlock> {
    let mut blocks = vec![SlackBlock::Header(SlackHeaderBlock::new(pt!(
        "Your Coder notifications"
    )))];
    blocks.push(section("*Snoozed*".into()));
    if home.snoozes.is_empty() {
        blocks.push(context(
            "Nothing is snoozed. Snooze a workspace from the ⋯ menu on any of its messages.".into(),
        ));
    }
    for snooze in &home.snoozes {
        let text = format!(
            "*{}* ({}) until {}",
            mrkdwn::escape(&snooze.workspace),
            mrkdwn::escape(&snooze.owner),
            when(snooze.until)
        );
        let unsnooze = SlackBlockButtonElement::new(pt!("Unsnooze"))
            .with_action_id(SlackActionId("unsnooze".into()))
            .with_value(format!("{}/{}", snooze.owner, snooze.workspace));
        blocks.push(SlackBlock::Section(
            SlackSectionBlock::new()
                .with_text(md!(text))
                .with_accessory(unsnooze.into()),
        ));
    }
    if threads == Threads::Off {
        blocks.push(section("*How notifications arrive*".into()));
        blocks.push(context(
            "Each notification from Coder arrives as its own message in your messages with this app. Snoozing a workspace holds its notifications back until the snooze ends.".into(),
        ));
        push_settings_link(&mut blocks, coder_url);
        return blocks;
    }
    blocks.push(section("*Workspaces*".into()));
    if home.workspaces.is_empty() {
        blocks.push(context("No notifications about a workspace yet.".into()));
    }
    for known in &home.workspaces {
        let latest = match &known.latest {
            Some((what, at)) => format!("{} · {}", mrkdwn::escape(what), when(*at)),
            None => "no notification recorded".to_owned(),
        };
        blocks.push(section(format!(
            "*{}* ({})\n{latest}",
            mrkdwn::escape(&known.workspace),
            mrkdwn::escape(&known.owner)
        )));
    }
    push_settings_link(&mut blocks, coder_url);
    blocks
}

/// The link to the person's notification settings in Coder, when `CODER_URL` is known.
fn push_settings_link(blocks: &mut Vec<SlackBlock>, coder_url: Option<&url::Url>) {
    if let Some(url) = coder_url.and_then(|u| u.join("/settings/notifications").ok()) {
        blocks.push(context(format!(
            "Choose which notifications Coder sends you: <{url}|your notification settings in Coder>"
        )));
    }
}

fn section(text: String) -> SlackBlock {
    SlackBlock::Section(SlackSectionBlock::new().with_text(md!(text)))
}

fn context(text: String) -> SlackBlock {
    SlackBlock::Context(SlackContextBlock::new(vec![
        SlackContextBlockElement::MarkDown(SlackBlockMarkDownText::new(text)),
    ]))
}
