//! `check`'s part for Coder: that `CODER_URL` is Coder (`buildinfo`, no token needed), and
//! with `CODER_TOKEN` that Coder takes the token and which account it is (`users/me`).

use crate::coder_api::{CoderApi, CoderError};
use crate::config::Config;
use crate::proxy::ProxyConfig;
use secrecy::SecretString;
use std::sync::Arc;

/// The first Coder release whose notifications carry `targets` (the workspace's ID): it
/// came with Coder's notification inbox. Older ones still work: the workspace is then looked
/// up by its owner and name.
const TARGETS_SINCE: (u32, u32) = (2, 21);

/// Site-wide roles that can do far more than the buttons need (extend, start and keep the
/// workspaces of an organization's members).
const BROAD_ROLES: [&str; 2] = ["owner", "user-admin"];

/// Checks Coder; returns the problems found (each also printed as a FAIL line).
pub(super) async fn check_coder(config: &Config, proxies: &ProxyConfig) -> Vec<String> {
    let Some(url) = &config.coder_url else {
        if config.coder_token.is_none() {
            println!("note  CODER_URL: not set: relative button URLs are left out, and there are no buttons that act on Coder");
        }
        return Vec::new();
    };
    let token = config
        .coder_token
        .clone()
        .unwrap_or_else(|| SecretString::from(String::new()));
    let timeout = config.tuning.coder_call_timeout;
    let api = match CoderApi::new(url, token, Arc::new(proxies.clone()), timeout, timeout) {
        Ok(api) => api,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let has_token = config.coder_token.is_some();
    match api.buildinfo().await {
        Ok(info) => {
            println!("ok    CODER_URL: Coder {} at {url}", info.version);
            if version(&info.version).is_some_and(|v| v < TARGETS_SINCE) {
                println!("warn  Coder {}: older than v{}.{}, whose notifications name the workspace's ID; the buttons still work, finding the workspace by owner and name", info.version, TARGETS_SINCE.0, TARGETS_SINCE.1);
            }
        }
        Err(e) if has_token => {
            println!("FAIL  CODER_URL: {e}");
            problems.push(format!("CODER_URL {url} does not answer as Coder ({e}): set it to Coder's access URL, reachable from this host"));
        }
        Err(e) => println!("warn  CODER_URL: {e} (the bridge itself only calls Coder with CODER_TOKEN; people's browsers open the links)"),
    }
    if !has_token {
        println!("note  CODER_TOKEN: not set: notifications offer links, not buttons that extend, start or keep the workspace");
        return problems;
    }
    problems.extend(check_token(&api).await.err());
    if config.slack_app_token.is_none() {
        println!("warn  CODER_TOKEN: set, but clicks arrive over Socket Mode: set SLACK_APP_TOKEN, or the buttons that act are left out");
    }
    problems
}

/// That Coder takes the token, and whether its account can do more than it needs to.
async fn check_token(api: &CoderApi) -> Result<(), String> {
    match api.me().await {
        Ok(me) => {
            let roles: Vec<&str> = me.roles.iter().map(|r| r.name.as_str()).collect();
            let shown = match roles.is_empty() {
                true => "no site-wide roles".to_owned(),
                false => format!("site-wide roles: {}", roles.join(", ")),
            };
            println!("ok    CODER_TOKEN: Coder account {} ({shown})", me.username);
            if let Some(role) = roles.iter().find(|r| BROAD_ROLES.contains(r)) {
                println!("warn  CODER_TOKEN: its account has the site-wide role {role}, far more than the buttons need: use a service account with an organization role that may update members' workspaces (README: \"Buttons that act on Coder\")");
            }
            Ok(())
        }
        Err(e @ CoderError::TokenRefused { .. }) => {
            println!("FAIL  CODER_TOKEN: {e}");
            Err("CODER_TOKEN was refused by Coder (expired, revoked or mistyped): make a new token for the bridge's service account (README: \"Buttons that act on Coder\")".into())
        }
        Err(e) => {
            println!("FAIL  CODER_TOKEN: {e}");
            Err(format!("CODER_TOKEN could not be verified: {e}"))
        }
    }
}

/// `(major, minor)` of a Coder version such as `v2.24.1+deadbee`.
fn version(raw: &str) -> Option<(u32, u32)> {
    let mut parts = raw.trim().trim_start_matches('v').split(['.', '+', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_as_coder_writes_them() {
        assert_eq!(version("v2.24.1+deadbee"), Some((2, 24)));
        assert_eq!(version("v2.9.0-devel+abc"), Some((2, 9)));
        assert!(version("v2.9.0").is_some_and(|v| v < TARGETS_SINCE));
        assert_eq!(version("devel"), None);
    }
}
