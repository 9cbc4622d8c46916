//! `check`'s part for `ROUTES_FILE` (read and checked with the other settings): the scopes
//! routes need, each `#name` looked up as `serve` would, and for each route whether its
//! channel exists and the app can post there: it is a member, or the channel is public and
//! the app has `chat:write.public`. Nothing is posted.

use crate::routes::{Route, Routes};
use crate::slack::{ChannelInfo, SlackApi};
use std::collections::HashMap;

/// To look `#name`s up and read channels: `conversations.list` and `conversations.info`.
const READ_SCOPES: [&str; 2] = ["channels:read", "groups:read"];
/// Posting in a public channel the app is not in.
const PUBLIC_POSTING: &str = "chat:write.public";
/// Reading a channel back when a post's answer was lost (public, private).
const READ_BACK: (&str, &str) = ("channels:history", "groups:history");

/// The scopes Slack reported for the bot token; `None` when it reported none.
type Scopes<'a> = Option<&'a [String]>;

fn lacks(scopes: Scopes, scope: &str) -> bool {
    scopes.is_some_and(|have| !have.iter().any(|s| s == scope))
}

/// Checks every route of `routes`; without a routes file, only notes the scopes routes would
/// need. Prints a line per check; returns the problems.
pub(super) async fn check_routes(
    api: &SlackApi,
    routes: Option<&Routes>,
    scopes: Scopes<'_>,
) -> Vec<String> {
    let Some(routes) = routes else {
        let all = [READ_SCOPES[0], READ_SCOPES[1], READ_BACK.0, READ_BACK.1];
        let missing: Vec<&str> = all.into_iter().filter(|s| lacks(scopes, s)).collect();
        if !missing.is_empty() {
            println!("note  bot scopes: {} not granted: needed only with ROUTES_FILE (channels to route notifications to)", missing.join(", "));
        }
        return Vec::new();
    };
    let path = routes.path().display();
    let count = match routes.len() {
        1 => "1 route".to_owned(),
        n => format!("{n} routes"),
    };
    println!("ok    ROUTES_FILE: {path}: {count} read");
    let missing: Vec<&str> = READ_SCOPES
        .into_iter()
        .filter(|s| lacks(scopes, s))
        .collect();
    if !missing.is_empty() {
        let missing = missing.join(", ");
        println!(
            "FAIL  ROUTES_FILE: the bot token lacks {missing}: its channels cannot be looked up"
        );
        return vec![format!("SLACK_BOT_TOKEN lacks the scopes {missing}, which ROUTES_FILE needs to find its channels: add them under OAuth & Permissions and reinstall the app")];
    }
    let names = routes.channel_names();
    let ids = match api.channel_ids(&names).await {
        Ok(ids) => ids,
        Err(e) => {
            println!("FAIL  ROUTES_FILE: cannot look its #names up: {e}");
            let remedy = e.remedy().map(|r| format!(": {r}")).unwrap_or_default();
            return vec![format!(
                "ROUTES_FILE's #names could not be looked up ({e}){remedy}"
            )];
        }
    };
    let mut problems = Vec::new();
    let mut read_back: Vec<&str> = Vec::new();
    for route in routes.iter() {
        match check_route(api, route, &ids, scopes).await {
            Ok(Verified { line, private }) => {
                println!("ok    ROUTES_FILE {route}: {line}");
                let needed = if private { READ_BACK.1 } else { READ_BACK.0 };
                if lacks(scopes, needed) && !read_back.contains(&needed) {
                    read_back.push(needed);
                }
            }
            Err(why) => {
                println!("FAIL  ROUTES_FILE {route}: {why}");
                problems.push(format!("ROUTES_FILE {route}: {why}"));
            }
        }
    }
    if !read_back.is_empty() {
        println!("warn  ROUTES_FILE: bot scopes missing {}: a channel post whose answer Slack loses cannot be checked and may be posted twice (add them and reinstall the app)", read_back.join(", "));
    }
    problems
}

/// A route whose channel takes the app's posts: what to print, and whether it is private.
struct Verified {
    line: String,
    private: bool,
}

/// Whether the app can post in `route`'s channel, and if not, why and what to do.
async fn check_route(
    api: &SlackApi,
    route: &Route,
    ids: &HashMap<String, String>,
    scopes: Scopes<'_>,
) -> Result<Verified, String> {
    let channel = &route.channel;
    let id = match (channel.id(), channel.name()) {
        (Some(id), _) => id,
        (None, Some(name)) => ids.get(&name).ok_or_else(|| channel.not_seen())?,
        (None, None) => return Err(format!("{channel} is neither an ID nor a #name")),
    };
    let info = match api.channel_info(id).await {
        Ok(Some(info)) => info,
        Ok(None) => return Err(format!("no channel the app can see has the ID {id}: there is none, or it is private and the app is not in it: check the ID, or invite the app to the channel")),
        Err(e) => {
            let remedy = e.remedy().map(|r| format!(": {r}")).unwrap_or_default();
            return Err(format!("{id} could not be read ({e}){remedy}"));
        }
    };
    can_post(&info, scopes).map(|line| Verified {
        line,
        private: info.is_private,
    })
}

/// Whether the app may post in `info`'s channel: a member, or a public one with
/// `chat:write.public`. The line to print, or why not.
fn can_post(info: &ChannelInfo, scopes: Scopes) -> Result<String, String> {
    let shown = format!("#{} ({})", info.name, info.id);
    let kind = if info.is_private { "private" } else { "public" };
    if info.is_archived {
        return Err(format!(
            "{shown} is archived: nothing can be posted there; unarchive it or route elsewhere"
        ));
    }
    if info.is_member {
        return Ok(format!("{shown}, {kind}: the app is a member and can post"));
    }
    if info.is_private {
        return Err(format!(
            "{shown} is private and the app is not in it: invite the app to the channel"
        ));
    }
    match scopes {
        None => Ok(format!("{shown}, public: the app is not a member; it can post only with the scope {PUBLIC_POSTING}, which Slack did not report (invite the app to be sure)")),
        Some(_) if lacks(scopes, PUBLIC_POSTING) => Err(format!("{shown} is public but the app is not in it and lacks the scope {PUBLIC_POSTING}: invite the app to the channel, or add {PUBLIC_POSTING} and reinstall the app")),
        Some(_) => Ok(format!("{shown}, public: the app is not a member but can post with {PUBLIC_POSTING}")),
    }
}
