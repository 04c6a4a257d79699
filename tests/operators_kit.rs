//! The operators' kit (deploy/prometheus/alerts.yaml, deploy/grafana/jwtgate.json) against a
//! running gateway: every metric the alert rules and the dashboard query is exported after a
//! little traffic, so a renamed metric breaks the build instead of silently muting an alert.
//! The metrics of deploy/prometheus/alerts-pending.yaml are listed with the issue that brings
//! them and must still be missing: when one appears, its alerts move into alerts.yaml.
//! Every alert's runbook_url names a README.md heading.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use common::tls::{dev_client, CERTS};
use common::{claims, default_issuer, echo_upstream, free_port, token};

/// The metrics alerts-pending.yaml queries, each with the issue that will export it.
const PENDING: &[(&str, &str)] = &[];

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `jwtgate_...` and `process_...` name in a PromQL expression, histogram suffixes folded into the base
/// name (`_bucket`, `_sum`, `_count` of a histogram are exported under it).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    let next = |r: &str| {
        ["jwtgate_", "process_"]
            .iter()
            .filter_map(|p| r.find(p))
            .min()
    };
    while let Some(i) = next(rest) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(name);
        into.insert(base.to_owned());
        rest = &tail[end..];
    }
}

/// The `expr:` values of a Prometheus rule file: the key's line and every following line
/// indented deeper (the folded `>-` form), comments excluded.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    for (i, l) in lines.iter().enumerate() {
        let Some(first) = l.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let mut expr = first.trim().trim_start_matches(">-").to_owned();
        for next in &lines[i + 1..] {
            if next.trim().is_empty() || indent(next) <= indent(l) {
                break;
            }
            if !next.trim_start().starts_with('#') {
                expr.push(' ');
                expr.push_str(next.trim());
            }
        }
        out.push(expr);
    }
    out
}

/// Every `expr` string anywhere in the dashboard JSON (panel targets).
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

fn names_of(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    exprs.iter().for_each(|e| metric_names(e, &mut names));
    names
}

/// One GET over TLS (the listener serves the dev certificate) with an optional token: the
/// status code.
async fn tls_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> u16 {
    let tls = common::tls::connect(addr, dev_client(&[b"http/1.1"], false)).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let mut b = http::Request::get(path).header("host", "localhost");
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let res = send
        .send_request(b.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("answer");
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

/// /metrics of a gateway with a TLS listener, an admin listener, the static test issuer, a
/// route to the echo upstream and one to a closed port, after a 200 (twice: a cache miss and
/// a hit), a 401 with a bad signature and an upstream error.
async fn scrape_after_traffic() -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    let (echo, _stop_echo) = echo_upstream().await;
    let closed = free_port();
    // With [redis], so the shared store's series (and the denylist's staleness) are exported;
    // [anomaly] and a rate limit, so theirs are.
    let redis = common::redis_server::RedisServer::start();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls = {{ cert = \"{CERTS}/server.crt\", key = \"{CERTS}/server.key\" }}\n\n[admin]\naddr = \"127.0.0.1:0\"\n\n[redis]\nurl = \"{}\"\n\n[anomaly]\nmax_addresses = 3\n{}\n[[route]]\nname = \"down\"\npath_prefix = \"/down\"\nupstream = \"http://127.0.0.1:{closed}\"\nauth = \"required\"\nupstream_ca = \"{CERTS}/dev-ca.crt\"\n\n[[route]]\nname = \"main\"\npath_prefix = \"/\"\nupstream = \"http://{echo}\"\nauth = \"required\"\n[route.rate_limit]\nkey = \"sub\"\nrate = \"1000/s\"\n",
        redis.url(),
        default_issuer()
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    let (addr, admin, _stop) = common::run_with_admin(&path).await;

    let good = token("ES256", &claims());
    assert_eq!(tls_get(addr, "/a", Some(&good)).await, 200);
    assert_eq!(tls_get(addr, "/a", Some(&good)).await, 200);
    let (head, _) = good.rsplit_once('.').expect("three parts");
    let forged = format!("{head}.{}", common::b64(&[7u8; 64]));
    assert_eq!(tls_get(addr, "/a", Some(&forged)).await, 401);
    assert_eq!(tls_get(addr, "/down/x", Some(&good)).await, 502);

    let answer = common::client::get(admin, "/metrics", None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The certificate alerts cover CA bundles: the upstream CA has its expiry series, in the
    // future, like the served certificate.
    for cert in ["server.crt", "dev-ca.crt"] {
        let expiry = common::metrics::metric(
            &answer.body,
            "jwtgate_tls_cert_expiry_timestamp_seconds",
            &[("cert", &format!("{CERTS}/{cert}"))],
        )
        .unwrap_or_else(|| panic!("no expiry series for {cert}:\n{}", answer.body));
        assert!(
            expiry > jwtgate::unix_now() as f64,
            "{cert} expiry {expiry}"
        );
    }
    // A failing certificate reload is visible from the first scrape (the series exist at 0).
    for result in ["success", "failure"] {
        assert_eq!(
            common::metrics::metric(
                &answer.body,
                "jwtgate_tls_reloads_total",
                &[("result", result)]
            ),
            Some(0.0),
            "tls reload {result} series:\n{}",
            answer.body
        );
    }
    answer.body
}

/// The metric names with at least one sample in the exposition (histograms under their base
/// name).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = l.split(['{', ' ']).next().unwrap_or_default();
        metric_names(name, &mut names);
    }
    names
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_query_is_exported() {
    let alerts = names_of(&rule_exprs(&read("deploy/prometheus/alerts.yaml")));
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/jwtgate.json")).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    let panels = names_of(&exprs);
    let pending = names_of(&rule_exprs(&read("deploy/prometheus/alerts-pending.yaml")));
    assert!(
        alerts.len() >= 10,
        "too few metrics read from alerts.yaml: {alerts:?}"
    );
    assert!(
        panels.len() >= 10,
        "too few metrics read from the dashboard: {panels:?}"
    );

    let text = scrape_after_traffic().await;
    let have = exported(&text);
    let missing = |used: &BTreeSet<String>| -> Vec<String> {
        used.iter()
            .filter(|n| !have.contains(*n))
            .cloned()
            .collect()
    };
    assert!(
        missing(&alerts).is_empty(),
        "alerts.yaml queries metrics the gateway does not export: {:?}\n{text}",
        missing(&alerts)
    );
    assert!(
        missing(&panels).is_empty(),
        "the dashboard queries metrics the gateway does not export: {:?}\n{text}",
        missing(&panels)
    );

    // The pending file queries exactly the listed metrics (plus exported ones it divides by),
    // and none of the listed ones is exported yet.
    let listed: BTreeSet<String> = PENDING.iter().map(|(n, _)| n.to_string()).collect();
    let unlisted: Vec<_> = pending
        .iter()
        .filter(|n| !listed.contains(*n) && !have.contains(*n))
        .collect();
    assert!(
        unlisted.is_empty(),
        "alerts-pending.yaml queries metrics missing from PENDING: {unlisted:?}"
    );
    for (name, issue) in PENDING {
        assert!(
            pending.contains(*name),
            "{name} is listed but not queried by alerts-pending.yaml"
        );
        assert!(
            !have.contains(*name),
            "{name} is exported now ({issue}): move its alerts from alerts-pending.yaml into \
             alerts.yaml and the PrometheusRule, write their runbook entries, and take it off \
             PENDING"
        );
    }
}

#[test]
fn every_alert_links_to_a_runbook_entry_in_the_readme() {
    let readme = read("README.md");
    // GitHub's anchors: lower case, spaces to '-', punctuation other than '-' and '_' dropped.
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let alerts = read("deploy/prometheus/alerts.yaml");
    let mut alerts_seen = 0;
    for l in alerts.lines().map(str::trim) {
        if let Some(name) = l.strip_prefix("- alert:") {
            alerts_seen += 1;
            let anchor = name.trim().to_lowercase();
            assert!(
                anchors.contains(&anchor),
                "README.md has no heading for {name}"
            );
        }
        if let Some(url) = l.strip_prefix("runbook_url:") {
            let url = url.trim().trim_matches('"');
            let (_, anchor) = url.split_once('#').expect("runbook_url has an anchor");
            assert!(
                anchors.contains(anchor),
                "README.md has no heading for {url}"
            );
        }
    }
    assert!(
        alerts_seen >= 10,
        "read {alerts_seen} alerts from alerts.yaml"
    );
}
