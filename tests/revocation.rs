//! Revocation on one machine (SPEC "Revocation"): the watched `[denylist] file`, each kind of
//! entry on `required` and `optional` routes (verified-token-cache hits included), bad lines,
//! expiry, `jwtgate revoke` / `--list`, `explain` and `check`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::client::get;
use common::describe_output as text;
use common::metrics::metric_or_zero;
use common::*;
use serde_json::{json, Value};

/// SPEC: a file change applies within 5 s.
const APPLIES_WITHIN: Duration = Duration::from_secs(5);

/// A config in `dir` with the default issuer (leeway 30 s), a `required` route `/` and an
/// `optional` route `/opt`, reading `deny.jsonl`; `extra` goes at the top.
fn write_config(dir: &Path, upstream: std::net::SocketAddr, extra: &str) -> PathBuf {
    write_keys(dir);
    let text = format!(
        r#"{extra}
[listen]
addr = "127.0.0.1:0"
{}
[[route]]
name = "opt"
path_prefix = "/opt"
upstream = "http://{upstream}"
auth = "optional"

[[route]]
name = "main"
path_prefix = "/"
upstream = "http://{upstream}"
auth = "required"
"#,
        default_issuer()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

const WITH_FILE: &str = "[denylist]\nfile = \"deny.jsonl\"\n";

fn tok(extra: Value) -> String {
    let mut c = claims();
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    token("ES256", &c)
}

fn append(path: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open denylist");
    writeln!(f, "{line}").expect("append");
}

async fn status(addr: std::net::SocketAddr, path: &str, t: &str) -> u16 {
    get(addr, path, Some(t)).await.status
}

async fn metrics(admin: std::net::SocketAddr) -> String {
    get(admin, "/metrics", None).await.body
}

#[tokio::test]
async fn every_kind_of_entry_refuses_on_required_and_optional_routes_cache_hits_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, _up) = echo_upstream().await;
    let config = write_config(dir.path(), upstream, WITH_FILE);
    let deny = dir.path().join("deny.jsonl");
    let (addr, admin, _stop) = run_with_admin(&config).await;
    eventually(Duration::from_secs(10), "ready", || async {
        get(admin, "/readyz", None).await.status == 200
    })
    .await;

    let now = now();
    let by_jti = tok(json!({"jti": "t-1"}));
    let old_bob = tok(json!({"sub": "bob", "iat": now - 100}));
    let bob_no_iat = token(
        "ES256",
        &without(with(claims(), "sub", json!("bob")), "iat"),
    );
    let new_bob = tok(json!({"sub": "bob", "iat": now}));
    let in_session = tok(json!({"sid": "s-1", "iat": now}));
    let other_session = tok(json!({"sid": "s-2", "iat": now}));
    // Each passes first, and so is in the verified-token cache when its entry arrives.
    for t in [
        &by_jti,
        &old_bob,
        &bob_no_iat,
        &new_bob,
        &in_session,
        &other_session,
    ] {
        assert_eq!(status(addr, "/", t).await, 200);
        assert_eq!(status(addr, "/opt/x", t).await, 200);
    }

    append(
        &deny,
        &format!(r#"{{"issuer":"test","jti":"t-1","until":{}}}"#, now + 300),
    );
    append(&deny, "{this line is broken");
    append(
        &deny,
        &format!(
            r#"{{"issuer":"test","sub":"bob","before":{},"until":{}}}"#,
            now - 50,
            now + 300
        ),
    );
    append(
        &deny,
        &format!(r#"{{"issuer":"test","sid":"s-1","until":{}}}"#, now + 300),
    );
    // Another issuer's entry for the same id refuses nothing here.
    append(
        &deny,
        &format!(r#"{{"issuer":"other","jti":"t-9","until":{}}}"#, now + 300),
    );
    eventually(APPLIES_WITHIN, "the jti entry applies", || async {
        status(addr, "/", &by_jti).await == 401
    })
    .await;
    for (t, case) in [
        (&by_jti, "jti"),
        (&old_bob, "sub issued before"),
        (&bob_no_iat, "sub without iat"),
        (&in_session, "sid without before"),
    ] {
        for path in ["/", "/opt/x"] {
            let a = get(addr, path, Some(t)).await;
            let d = assert_invalid(&a, t, &format!("{case} on {path}"));
            assert_eq!(d, "the token has been revoked", "{case}");
        }
    }
    assert_eq!(status(addr, "/", &new_bob).await, 200, "a new login passes");
    assert_eq!(status(addr, "/", &other_session).await, 200);
    assert_eq!(
        status(addr, "/", &tok(json!({"jti": "t-9"}))).await,
        200,
        "entries are scoped to their issuer"
    );

    let m = metrics(admin).await;
    assert!(
        metric_or_zero(
            &m,
            "jwtgate_auth_failures_total",
            &[("route", "main"), ("reason", "revoked")]
        ) >= 4.0,
        "{m}"
    );
    assert_eq!(
        metric_or_zero(&m, "jwtgate_denylist_entries", &[("kind", "jti")]),
        2.0
    );
    assert_eq!(
        metric_or_zero(&m, "jwtgate_denylist_entries", &[("kind", "sub")]),
        1.0
    );
    assert_eq!(
        metric_or_zero(&m, "jwtgate_denylist_entries", &[("kind", "sid")]),
        1.0
    );
    assert_eq!(
        metric_or_zero(&m, "jwtgate_denylist_skipped_lines", &[]),
        1.0
    );
    assert_eq!(
        metric_or_zero(&m, "jwtgate_denylist_staleness_seconds", &[]),
        0.0
    );

    // Removing the lines (GitOps) lets the tokens through again.
    std::fs::write(&deny, "").expect("truncate");
    eventually(APPLIES_WITHIN, "the emptied file applies", || async {
        status(addr, "/", &by_jti).await == 200
    })
    .await;
}

#[tokio::test]
async fn an_expired_entry_drops_out_after_its_issuers_leeway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, _up) = echo_upstream().await;
    let config = write_config(dir.path(), upstream, WITH_FILE);
    let now = now();
    // Leeway 30 s: one ended 10 s ago still holds, one ended 60 s ago does not.
    append(
        &dir.path().join("deny.jsonl"),
        &format!(r#"{{"issuer":"test","jti":"recent","until":{}}}"#, now - 10),
    );
    append(
        &dir.path().join("deny.jsonl"),
        &format!(r#"{{"issuer":"test","jti":"old","until":{}}}"#, now - 60),
    );
    let (addr, admin, _stop) = run_with_admin(&config).await;
    eventually(Duration::from_secs(10), "ready", || async {
        get(admin, "/readyz", None).await.status == 200
    })
    .await;
    assert_eq!(status(addr, "/", &tok(json!({"jti": "recent"}))).await, 401);
    assert_eq!(status(addr, "/", &tok(json!({"jti": "old"}))).await, 200);
    // And the expired one is pruned from the held entries.
    eventually(APPLIES_WITHIN, "the expired entry is pruned", || async {
        let m = metrics(admin).await;
        metric_or_zero(&m, "jwtgate_denylist_entries", &[("kind", "jti")]) == 1.0
    })
    .await;
}

fn jwtgate(dir: &Path, args: &[&str]) -> Output {
    jwtgate_output(dir, &[], args)
}

#[tokio::test]
async fn revoke_writes_the_file_the_gateway_applies_and_list_explain_check_show_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, _up) = echo_upstream().await;
    let config = write_config(dir.path(), upstream, WITH_FILE);
    let cfg = config.to_str().expect("utf-8 path");
    let (addr, admin, _stop) = run_with_admin(&config).await;
    eventually(Duration::from_secs(10), "ready", || async {
        get(admin, "/readyz", None).await.status == 200
    })
    .await;
    let alice = tok(json!({"iat": now() - 10}));
    assert_eq!(status(addr, "/", &alice).await, 200);

    let o = jwtgate(
        dir.path(),
        &[
            "revoke", "--config", cfg, "--issuer", "test", "--sub", "alice",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("deny.jsonl"),
        "{}",
        text(&o)
    );
    eventually(APPLIES_WITHIN, "the revoked subject is refused", || async {
        status(addr, "/", &alice).await == 401
    })
    .await;

    let until = (now() + 3600).to_string();
    let o = jwtgate(
        dir.path(),
        &[
            "revoke", "--config", cfg, "--issuer", "test", "--jti", "j-7", "--until", &until,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = jwtgate(dir.path(), &["revoke", "--config", cfg, "--list"]);
    assert!(o.status.success(), "{}", text(&o));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains(r#""sub":"alice""#), "{listed}");
    assert!(
        listed.contains(&format!(r#""jti":"j-7","until":{until}"#)),
        "{listed}"
    );

    // explain says which entry revokes the token.
    let o = jwtgate(
        dir.path(),
        &[
            "explain", "--config", cfg, "--token", &alice, "--host", "x", "/",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("revocation")
            && out.contains(r#"revoked by the entry issuer "test" sub "alice""#),
        "{}",
        text(&o)
    );
    assert!(out.contains("reason revoked"), "{}", text(&o));

    // Mistakes: an unknown issuer, two kinds, --before on a jti; nothing is written.
    for bad in [
        &["--issuer", "nope", "--jti", "x"][..],
        &["--issuer", "test", "--jti", "x", "--sub", "y"][..],
        &["--issuer", "test", "--jti", "x", "--before", "5"][..],
        &["--issuer", "test", "--sub", "x", "--until", "yesterday"][..],
    ] {
        let mut args = vec!["revoke", "--config", cfg];
        args.extend_from_slice(bad);
        let o = jwtgate(dir.path(), &args);
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).starts_with("jwtgate revoke: "),
            "{}",
            text(&o)
        );
    }
    let o = jwtgate(dir.path(), &["revoke", "--config", cfg, "--list"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);

    // check reports a bad line with its position, and exits 1.
    append(
        &dir.path().join("deny.jsonl"),
        r#"{"issuer":"test","jti":"a","bfore":1}"#,
    );
    let o = jwtgate(dir.path(), &["check", "--config", cfg]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let deny = dir.path().join("deny.jsonl");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines()
            .any(|l| is_located(l, &deny) && l.contains(":3:1:") && l.contains("bfore")),
        "{}",
        text(&o)
    );
}

#[tokio::test]
async fn revoke_without_a_file_or_redis_fails_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "127.0.0.1:9".parse().expect("addr"), "");
    let o = jwtgate(
        dir.path(),
        &[
            "revoke",
            "--config",
            config.to_str().expect("utf-8"),
            "--issuer",
            "test",
            "--jti",
            "x",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("[redis]") && err.contains("[denylist] file"),
        "{}",
        text(&o)
    );
}
