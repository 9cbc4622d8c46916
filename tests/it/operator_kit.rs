//! The operator kit: the Grafana dashboard in deploy/grafana-dashboard.json must only ask for
//! series the bridge really exposes. A real bridge (Socket Mode on, `CODER_TOKEN` with a fake
//! Coder) is driven until every metric family has samples; then every query of the dashboard
//! (panels, rows, the `instance` variable) is read and each series it names is looked up in
//! what `/metrics` printed.

use crate::support;

use coder_slack_bridge::config::Threads;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use support::coder_api::{FakeCoder, World};
use support::*;

const DASHBOARD: &str = "deploy/grafana-dashboard.json";
const PREFIX: &str = "coder_slack_bridge_";
/// The datasource input every panel uses, so the dashboard imports into any Grafana.
const DATASOURCE: &str = "${DS_PROMETHEUS}";
/// The matcher every panel query carries, so the `instance` variable filters everything.
const INSTANCE_MATCHER: &str = "instance=~\"$instance\"";

/// PromQL's aggregation operators and keywords: identifiers that are neither metrics nor
/// functions.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "offset",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// PromQL's functions (Prometheus 3), and `start`/`end` for the `@` modifier.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
    "start",
    "end",
];

/// A series a query selects: its name, and what its braces say (`None` without braces).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    metric: String,
    matchers: Option<String>,
}

/// What one PromQL expression names: the series it selects, and anything else that is not
/// PromQL (an unknown function, a selector without a metric name).
#[derive(Debug, Default)]
struct Scan {
    selectors: Vec<Selector>,
    strange: Vec<String>,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index just past the string literal opening at `at` (quotes: `"`, `'`, `` ` ``).
fn skip_string(chars: &[char], at: usize) -> usize {
    let quote = chars[at];
    let mut i = at + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The index just past the bracket closing the one at `at` (`(`, `{` or `[`), strings skipped.
fn skip_group(chars: &[char], at: usize) -> usize {
    let (open, close) = match chars[at] {
        '(' => ('(', ')'),
        '{' => ('{', '}'),
        _ => ('[', ']'),
    };
    let mut depth = 0;
    let mut i = at;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Reads a PromQL expression as tokens: strings (label values), `[…]` (ranges, durations,
/// `$__rate_interval`), `$variables`, numbers and durations, label lists after `by`/`on`/…,
/// keywords and known functions are passed over; every other identifier is a series name.
fn scan(expr: &str) -> Scan {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Scan::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '[' {
            i = skip_group(&chars, i);
        } else if c == '{' {
            // Braces with no name before them: a selector by labels alone (`{__name__=…}`).
            let end = skip_group(&chars, i);
            let braces: String = chars[i..end].iter().collect();
            out.strange
                .push(format!("a selector without a metric name: {braces}"));
            i = end;
        } else if c == '$' {
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                i = skip_group(&chars, i);
            } else {
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // 0.99, 1e3, 0x1f, and durations such as 1h30m (after `offset`).
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let next = skip_space(&chars, i);
            let followed_by = chars.get(next).copied();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if followed_by == Some('(') {
                    i = skip_group(&chars, next);
                }
            } else if KEYWORDS.contains(&lower.as_str()) {
                // An aggregation's own parentheses are read as any others.
            } else if followed_by == Some('(') {
                if !FUNCTIONS.contains(&word.as_str()) {
                    out.strange.push(format!("{word}() is no PromQL function"));
                }
            } else if followed_by == Some('{') {
                let end = skip_group(&chars, next);
                let inside: String = chars[next + 1..end.saturating_sub(1)].iter().collect();
                out.selectors.push(Selector {
                    metric: word,
                    matchers: Some(inside),
                });
                i = end;
            } else {
                out.selectors.push(Selector {
                    metric: word,
                    matchers: None,
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// A query and where it is: `panel "Title"` or `variable "name"`.
struct Query {
    place: String,
    expr: String,
    /// A panel's query (the `instance` variable filters it); the variable's own is not.
    in_panel: bool,
}

/// Every `expr` anywhere in `value` (panels, their targets, panels nested in rows,
/// annotations), each placed by the title (or, for an annotation, the name) of the nearest
/// object that has one.
fn collect_exprs(value: &Value, place: &str, out: &mut Vec<Query>) {
    match value {
        Value::Object(map) => {
            let title = map.get("title").and_then(Value::as_str);
            let name = map.get("name").and_then(Value::as_str);
            let place = match (title, name) {
                (Some(title), _) => format!("panel {title:?}"),
                (None, Some(name)) => format!("annotation {name:?}"),
                (None, None) => place.to_owned(),
            };
            for (key, inner) in map {
                match (key.as_str(), inner.as_str()) {
                    ("expr", Some(expr)) => out.push(Query {
                        place: place.clone(),
                        expr: expr.to_owned(),
                        in_panel: true,
                    }),
                    _ => collect_exprs(inner, &place, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, place, out)),
        _ => {}
    }
}

/// Every query of the dashboard: its panels' (nested rows included) and its template
/// variables' (`query`, a string or `{"query": …}`, and `definition`).
fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    collect_exprs(&dashboard["panels"], "a panel", &mut out);
    collect_exprs(&dashboard["annotations"], "an annotation", &mut out);
    let variables = dashboard["templating"]["list"].as_array();
    for variable in variables.into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let place = format!("variable {}", variable["name"]);
        let query = &variable["query"];
        let texts = [
            query.as_str().or_else(|| query["query"].as_str()),
            variable["definition"].as_str(),
        ];
        for text in texts.into_iter().flatten().filter(|t| !t.trim().is_empty()) {
            out.push(Query {
                place: place.clone(),
                expr: variable_promql(text),
                in_panel: false,
            });
        }
    }
    out
}

/// The PromQL inside a Grafana variable query: `label_values(series, label)` selects
/// `series` (its label argument is no metric; `label_values(label)` selects none); anything
/// else is taken as PromQL (`query_result(…)` and the like).
fn variable_promql(text: &str) -> String {
    let text = text.trim();
    let Some(inner) = text
        .strip_prefix("label_values(")
        .and_then(|t| t.strip_suffix(')'))
    else {
        return text.to_owned();
    };
    let chars: Vec<char> = inner.chars().collect();
    let mut last_comma = None;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '(' | '{' | '[' => i = skip_group(&chars, i),
            ',' => {
                last_comma = Some(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    match last_comma {
        Some(at) => chars[..at].iter().collect(),
        None => String::new(),
    }
}

/// Every series the dashboard asks for that `exposed` lacks, every series not named
/// `coder_slack_bridge_…`, and anything else that is not PromQL, each with where it is.
fn unknown_metrics(dashboard: &Value, exposed: &BTreeSet<String>) -> Vec<String> {
    let mut unknown = Vec::new();
    for query in queries(dashboard) {
        let found = scan(&query.expr);
        for selector in found.selectors {
            let name = &selector.metric;
            if !name.starts_with(PREFIX) {
                unknown.push(format!(
                    "{name} (not the bridge's: no {PREFIX} prefix) in {}",
                    query.place
                ));
            } else if !exposed.contains(name) {
                unknown.push(format!("{name} in {}", query.place));
            }
        }
        for strange in found.strange {
            unknown.push(format!("{strange} in {}", query.place));
        }
    }
    unknown
}

/// Panel queries selecting a series without the `instance` variable's matcher.
fn unfiltered(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for query in queries(dashboard).into_iter().filter(|q| q.in_panel) {
        for selector in scan(&query.expr).selectors {
            let matchers: String = selector
                .matchers
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let has_it = matchers.split(',').any(|m| m == INSTANCE_MATCHER);
            if !has_it {
                out.push(format!("{} in {}", selector.metric, query.place));
            }
        }
    }
    out
}

/// The sample names of an exposition: the token before `{` or a space on every line that
/// is not a comment.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every panel, rows' nested panels included.
fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in panels.as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(all_panels(&panel["panels"]));
    }
    out
}

fn is_prometheus_input(datasource: &Value) -> bool {
    datasource == DATASOURCE || datasource["uid"] == DATASOURCE
}

/// What is wrong with the dashboard's shape: its datasource input, its `instance`
/// variable, its panels' titles, descriptions, datasources and queries.
fn shape_problems(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let inputs = dashboard["__inputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let input_ok = inputs.iter().any(|i| {
        i["name"] == "DS_PROMETHEUS" && i["type"] == "datasource" && i["pluginId"] == "prometheus"
    });
    if !input_ok {
        problems.push("no __inputs datasource DS_PROMETHEUS of plugin prometheus".to_owned());
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match variables.iter().find(|v| v["name"] == "instance") {
        Some(v) if is_prometheus_input(&v["datasource"]) => {}
        Some(_) => {
            problems.push("the instance variable's datasource is not ${DS_PROMETHEUS}".into())
        }
        None => problems.push("no template variable `instance`".into()),
    }
    for panel in all_panels(&dashboard["panels"]) {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = &panel["id"];
        if title.trim().is_empty() {
            problems.push(format!("panel {id} has no title"));
        }
        if panel["type"] == "row" {
            if !panel["datasource"].is_null() && !is_prometheus_input(&panel["datasource"]) {
                problems.push(format!("row {title:?}: datasource {}", panel["datasource"]));
            }
            continue;
        }
        if panel["description"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
        {
            problems.push(format!("panel {title:?} has no description"));
        }
        let own = &panel["datasource"];
        if !is_prometheus_input(own) {
            problems.push(format!(
                "panel {title:?}: datasource {own}, not {DATASOURCE}"
            ));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no queries"));
        }
        for target in &targets {
            // A target without a datasource inherits the panel's.
            let theirs = &target["datasource"];
            if !theirs.is_null() && !is_prometheus_input(theirs) {
                problems.push(format!("panel {title:?}: a query's datasource is {theirs}"));
            }
            if target["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                problems.push(format!("panel {title:?}: a query without an expr"));
            }
        }
    }
    problems
}

fn read_dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Bobby in Slack, his workspace in Coder, and a bridge with Socket Mode on and
/// `CODER_TOKEN`, as tests/actions.rs starts it.
async fn start() -> (FakeSlack, FakeSocketServer, FakeCoder, Bridge) {
    let world = World::start(true, Threads::Off).await;
    (world.slack, world.socket, world.coder, world.bridge)
}

#[tokio::test]
async fn every_dashboard_query_uses_only_metrics_the_bridge_exposes() {
    let dashboard = read_dashboard();
    let problems = shape_problems(&dashboard);
    assert!(
        problems.is_empty(),
        "{DASHBOARD}:\n  {}",
        problems.join("\n  ")
    );
    let panels = all_panels(&dashboard["panels"]);
    let charts = panels.iter().filter(|p| p["type"] != "row").count();
    assert!(
        charts >= 12,
        "only {charts} panels (rows aside) in {DASHBOARD}"
    );

    let (slack, socket, _coder, bridge) = start().await;
    // A 429 first, waited out within DELIVERY_TIMEOUT: a delivery, Slack calls and a 429.
    slack.push("chat.postMessage", Canned::rate_limited(1));
    bridge.deliver(&workspace_deleted("bobby@coder.com")).await;
    // An envelope acked over Socket Mode.
    let opened = json!({"type": "event_callback", "event": {"type": "app_home_opened", "user": "UBOBBY", "tab": "home"}});
    socket.send_text(0, envelope("kit-1", "events_api", opened));
    // Families show once they have a sample; these are the last to get one (webhook
    // outcomes, lookups, sweeps and Coder actions show at 0 from the start).
    let awaited = [
        "coder_slack_bridge_slack_rate_limited_total{",
        "coder_slack_bridge_socket_mode_envelopes_acked_total{",
        "coder_slack_bridge_webhooks_total{outcome=\"delivered\"} 1",
    ];
    wait_until("every metric family has samples", WAIT, async || {
        let (_, metrics) = bridge.get("/metrics").await;
        awaited.iter().all(|line| metrics.contains(line))
    })
    .await;
    let (status, metrics) = bridge.get("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let exposed = sample_names(&metrics);

    let unknown = unknown_metrics(&dashboard, &exposed);
    assert!(
        unknown.is_empty(),
        "{DASHBOARD} asks for series the bridge does not expose:\n  {}\nexposed:\n  {}",
        unknown.join("\n  "),
        exposed.iter().cloned().collect::<Vec<_>>().join("\n  ")
    );
    let unfiltered = unfiltered(&dashboard);
    assert!(
        unfiltered.is_empty(),
        "selectors without {INSTANCE_MATCHER} in {DASHBOARD}:\n  {}",
        unfiltered.join("\n  ")
    );
    // Not every panel may be empty: the dashboard does ask for the bridge's series.
    let used: BTreeSet<String> = queries(&dashboard)
        .iter()
        .flat_map(|q| scan(&q.expr).selectors)
        .map(|s| s.metric)
        .collect();
    assert!(used.len() >= 12, "{used:?}");
    let unshown: Vec<&String> = exposed
        .iter()
        .filter(|name| {
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            !used.iter().any(|u| u.starts_with(family))
        })
        .collect();
    if !unshown.is_empty() {
        eprintln!("exposed but on no panel of {DASHBOARD}: {unshown:?}");
    }
    bridge.stop().await;
}

#[test]
fn the_check_reports_metrics_the_bridge_does_not_expose() {
    let exposed: BTreeSet<String> = [
        "coder_slack_bridge_ready",
        "coder_slack_bridge_webhooks_total",
        "coder_slack_bridge_delivery_seconds_bucket",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let ds = json!({"type": "prometheus", "uid": DATASOURCE});
    let dashboard = json!({
        "panels": [
            {"type": "timeseries", "title": "Fine", "datasource": ds, "targets": [
                {"expr": "sum by (outcome) (rate(coder_slack_bridge_webhooks_total{instance=~\"$instance\",outcome!=\"coder_slack_bridge_in_a_label_value\"}[$__rate_interval]))"},
                {"expr": "histogram_quantile(0.99, sum by (le) (rate(coder_slack_bridge_delivery_seconds_bucket{instance=~\"$instance\"}[5m] offset 1h)))"},
            ]},
            {"type": "row", "title": "Folded", "collapsed": true, "panels": [
                {"type": "timeseries", "title": "Misspelt", "datasource": ds, "targets": [
                    {"expr": "sum(rate(coder_slack_bridge_made_up_total{instance=~\"$instance\"}[$__rate_interval]))"},
                ]},
            ]},
            {"type": "stat", "title": "Borrowed", "datasource": ds, "targets": [
                {"expr": "sum(rate(node_cpu_seconds_total[5m])) / on (instance) group_left coder_slack_bridge_ready"},
                {"expr": "rte(coder_slack_bridge_webhooks_total{instance=~\"$instance\"}[5m]) + {__name__=\"up\"}"},
            ]},
        ],
        "templating": {"list": [
            {"name": "instance", "type": "query", "datasource": ds,
             "definition": "label_values(coder_slack_bridge_ready, instance)",
             "query": {"query": "label_values(coder_slack_bridge_not_there, instance)"}},
        ]},
    });
    let unknown = unknown_metrics(&dashboard, &exposed);
    let reported = |what: &str, place: &str| {
        unknown
            .iter()
            .any(|u| u.starts_with(what) && u.ends_with(place))
    };
    assert!(
        reported("coder_slack_bridge_made_up_total", "panel \"Misspelt\""),
        "{unknown:#?}"
    );
    assert!(
        reported("node_cpu_seconds_total", "panel \"Borrowed\""),
        "{unknown:#?}"
    );
    assert!(reported("rte()", "panel \"Borrowed\""), "{unknown:#?}");
    assert!(
        reported("a selector without a metric name", "panel \"Borrowed\""),
        "{unknown:#?}"
    );
    assert!(
        reported("coder_slack_bridge_not_there", "variable \"instance\""),
        "{unknown:#?}"
    );
    assert_eq!(
        unknown.len(),
        5,
        "labels, label values, functions and durations are no metrics: {unknown:#?}"
    );

    let unfiltered = unfiltered(&dashboard);
    assert_eq!(
        unfiltered,
        [
            "node_cpu_seconds_total in panel \"Borrowed\"",
            "coder_slack_bridge_ready in panel \"Borrowed\""
        ],
        "the variable's own query is not filtered by itself"
    );

    let mut broken = dashboard.clone();
    broken["panels"][0]["datasource"] = json!({"type": "prometheus", "uid": "abc123"});
    broken["panels"][1]["panels"][0]["title"] = json!("");
    let problems = shape_problems(&broken);
    assert!(
        problems.iter().any(|p| p.contains("\"Fine\": datasource")),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.ends_with("has no title")),
        "{problems:#?}"
    );
}
