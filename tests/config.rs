//! Config parsing and key loading through the library: every error located as
//! `file:line:col: message`, every error reported at once, and keys checked at load.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::repo;
use jwtgate::config::{ConfigErrors, KeySource};
use jwtgate::{Config, Snapshot};

/// The file name the parse-only tests give their text; relative paths resolve against its dir.
const FILE: &str = "/etc/jwtgate/gateway.toml";

const LISTEN: &str = "[listen]\naddr = \"127.0.0.1:0\"\n";

/// A valid issuer block (keys are not read by `Config::parse`).
const ISSUER: &str = r#"
[[issuer]]
name = "corp"
issuer = "https://idp.example.com/"
audiences = ["orders-api"]
algorithms = ["ES256"]
keys = ["certs/signing.pem"]
"#;

/// A valid route block using the issuer above.
const ROUTE: &str = r#"
[[route]]
name = "orders"
path_prefix = "/api/orders"
upstream = "http://127.0.0.1:8080"
auth = "required"
"#;

fn valid() -> String {
    format!("{LISTEN}{ISSUER}{ROUTE}")
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new(FILE), text)
}

fn parse_ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("config should be valid, got:\n{e}\n--- config:\n{text}"))
}

/// Every error line of a config that must be refused.
fn error_lines(text: &str) -> Vec<String> {
    let errs = parse(text)
        .map(|_| ())
        .expect_err(&format!("config should be refused:\n{text}"));
    let shown = errs.to_string();
    assert_eq!(
        shown.lines().count(),
        errs.0.len(),
        "one line per error:\n{shown}"
    );
    shown.lines().map(str::to_owned).collect()
}

/// Line and column (1-based, in characters) of the `nth` (0-based) occurrence of `needle`.
fn pos_nth(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} (#{nth}) not in config:\n{text}"))
        .0;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

fn pos(text: &str, needle: &str) -> (usize, usize) {
    pos_nth(text, needle, 0)
}

/// Asserts the config is refused with exactly one error, at the first occurrence of `at`, whose
/// message contains every one of `words`.
fn assert_one_error(text: &str, at: &str, words: &[&str]) {
    assert_one_error_at(text, pos(text, at), words);
}

fn assert_one_error_at(text: &str, (line, col): (usize, usize), words: &[&str]) {
    let lines = error_lines(text);
    assert_eq!(
        lines.len(),
        1,
        "exactly one error expected, got:\n{lines:#?}\n--- config:\n{text}"
    );
    let prefix = format!("{FILE}:{line}:{col}: ");
    assert!(
        lines[0].starts_with(&prefix),
        "error should be located at {prefix:?}, got {:?}\n--- config:\n{text}",
        lines[0]
    );
    for w in words {
        assert!(
            lines[0].contains(w),
            "error {:?} should mention {w:?}\n--- config:\n{text}",
            lines[0]
        );
    }
}

/// The valid config with one line of the issuer block replaced.
fn with_issuer_line(old: &str, new: &str) -> String {
    let issuer = ISSUER.replace(old, new);
    assert_ne!(issuer, ISSUER, "{old:?} not found in the issuer block");
    format!("{LISTEN}{issuer}{ROUTE}")
}

/// The valid config with one line of the route block replaced.
fn with_route_line(old: &str, new: &str) -> String {
    let route = ROUTE.replace(old, new);
    assert_ne!(route, ROUTE, "{old:?} not found in the route block");
    format!("{LISTEN}{ISSUER}{route}")
}

#[test]
fn the_base_config_of_these_tests_is_valid() {
    let c = parse_ok(&valid());
    assert_eq!(c.issuers.len(), 1);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.path, PathBuf::from(FILE));
}

// ---------------------------------------------------------------------------------------------
// Unknown keys

#[test]
fn unknown_key_at_top_level_is_located() {
    let text = format!("# gateway\n  bogus = 1\n{}", valid());
    assert_one_error(&text, "bogus", &["unknown key", "bogus"]);
}

#[test]
fn unknown_key_in_listen_is_located() {
    let text = valid().replace(
        "addr = \"127.0.0.1:0\"\n",
        "addr = \"127.0.0.1:0\"\nport = 8443\n",
    );
    assert_one_error(&text, "port", &["unknown key", "port"]);
}

#[test]
fn unknown_key_in_listen_tls_is_located() {
    let text = valid().replace(
        "addr = \"127.0.0.1:0\"\n",
        "addr = \"127.0.0.1:0\"\ntls = { cert = \"a.crt\", key = \"a.key\", ca = \"x\" }\n",
    );
    assert_one_error(&text, "ca =", &["unknown key", "ca"]);
}

#[test]
fn unknown_key_in_limits_is_located() {
    let text = format!("{LISTEN}[limits]\nmax_body_bytes = 10\n{ISSUER}{ROUTE}");
    assert_one_error(&text, "max_body_bytes", &["unknown key", "max_body_bytes"]);
}

#[test]
fn unknown_key_in_issuer_is_located() {
    let text = with_issuer_line("keys = [", "colour = \"blue\"\nkeys = [");
    assert_one_error(&text, "colour", &["unknown key", "colour"]);
}

#[test]
fn unknown_key_in_route_is_located() {
    let text = format!("{}   retries = 3\n", valid());
    assert_one_error(&text, "retries", &["unknown key", "retries"]);
}

#[test]
fn misspelled_key_in_route_is_an_error_not_ignored() {
    // `forward-token` for `forward_token`: an ignored key would silently change behaviour.
    let text = with_route_line(
        "auth = \"required\"",
        "auth = \"required\"\nforward-token = true",
    );
    assert_one_error(&text, "forward-token", &["unknown key", "forward-token"]);
}

#[test]
fn a_secret_written_in_the_file_is_refused() {
    // Secrets come from the environment or a mounted file, never from gateway.toml itself.
    let text = with_issuer_line(
        "keys = [\"certs/signing.pem\"]",
        "hmac_secret_env = \"JWT_SECRET\"\nhmac_secret = \"0123456789abcdef0123456789abcdef\"",
    )
    .replace("[\"ES256\"]", "[\"HS256\"]");
    assert_one_error(
        &text,
        "hmac_secret =",
        &["unknown key", "hmac_secret", "environment"],
    );
}

#[test]
fn claim_headers_is_a_map_that_accepts_any_header_name() {
    let text = format!(
        "{}[route.claim_headers]\n\"X-Anything-At-All\" = \"sub\"\n\"X-Roles\" = \"/realm_access/roles\"\n",
        valid()
    );
    let c = parse_ok(&text);
    let names: Vec<&str> = c.routes[0]
        .claim_headers
        .iter()
        .map(|(h, _)| h.as_str())
        .collect();
    assert_eq!(names, ["x-anything-at-all", "x-roles"]);
}

// ---------------------------------------------------------------------------------------------
// Values

#[test]
fn bad_durations_are_located() {
    for bad in ["5 parsecs", "0s", "", "-5s", "30"] {
        for (section, key) in [
            ("issuer", "leeway"),
            ("issuer", "refresh"),
            ("limits", "header_read_timeout"),
            ("limits", "upstream_connect_timeout"),
            ("limits", "upstream_timeout"),
            ("limits", "shutdown_grace"),
        ] {
            let line = format!("{key} = \"{bad}\"");
            let text = if section == "issuer" {
                with_issuer_line("keys = [", &format!("{line}\nkeys = ["))
            } else {
                format!("{LISTEN}[limits]\n{line}\n{ISSUER}{ROUTE}")
            };
            let at = pos(&text, &format!("\"{bad}\""));
            let lines = error_lines(&text);
            assert_eq!(lines.len(), 1, "{key} = {bad:?}: {lines:#?}");
            let prefix = format!("{FILE}:{}:{}: ", at.0, at.1);
            assert!(
                lines[0].starts_with(&prefix) && lines[0].contains(key),
                "{key} = {bad:?}: expected an error at {prefix:?} naming {key}, got {:?}",
                lines[0]
            );
        }
    }
}

#[test]
fn zero_duration_says_it_must_be_greater_than_zero() {
    let text = format!("{LISTEN}[limits]\nupstream_timeout = \"0s\"\n{ISSUER}{ROUTE}");
    assert_one_error(&text, "\"0s\"", &["upstream_timeout", "greater than zero"]);
}

#[test]
fn durations_parse_milliseconds_seconds_and_minutes() {
    let text = format!(
        "{LISTEN}[limits]\nheader_read_timeout = \"250ms\"\nupstream_connect_timeout = \"30s\"\nupstream_timeout = \"5m\"\nshutdown_grace = \"1m 30s\"\n{}{ROUTE}",
        ISSUER.replace("keys = [", "leeway = \"5m\"\nrefresh = \"250ms\"\nkeys = [")
    );
    let c = parse_ok(&text);
    assert_eq!(c.limits.header_read_timeout, Duration::from_millis(250));
    assert_eq!(c.limits.upstream_connect_timeout, Duration::from_secs(30));
    assert_eq!(c.limits.upstream_timeout, Duration::from_secs(300));
    assert_eq!(c.limits.shutdown_grace, Duration::from_secs(90));
    assert_eq!(c.issuers[0].leeway, Duration::from_secs(300));
    assert_eq!(c.issuers[0].refresh, Duration::from_millis(250));
}

#[test]
fn limits_default_to_the_documented_values() {
    let c = parse_ok(&valid());
    assert_eq!(c.limits.max_token_bytes, 8192);
    assert_eq!(c.limits.max_header_bytes, 16384);
    assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.upstream_connect_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.upstream_timeout, Duration::from_secs(30));
    assert_eq!(c.limits.shutdown_grace, Duration::from_secs(25));
    assert_eq!(c.issuers[0].leeway, Duration::from_secs(30));
    assert_eq!(c.issuers[0].refresh, Duration::from_secs(300));
}

#[test]
fn bad_listen_addr_is_located() {
    for bad in ["localhost:8443", "0.0.0.0", "8443", "0.0.0.0:99999", ""] {
        let text = valid().replace("\"127.0.0.1:0\"", &format!("\"{bad}\""));
        assert_one_error(
            &text,
            &format!("\"{bad}\""),
            &["listen addr", "not an IP address"],
        );
    }
}

#[test]
fn bad_admin_addr_is_located() {
    let text = format!("{LISTEN}[admin]\naddr = \"127.0.0.1\"\n{ISSUER}{ROUTE}");
    assert_one_error(&text, "\"127.0.0.1\"", &["admin addr"]);
}

#[test]
fn unknown_algorithm_name_is_located() {
    // Names are case-sensitive (RFC 7515): "es256" is not ES256.
    for bad in ["HS255", "es256", "RSA256", "ES512"] {
        let text = with_issuer_line("[\"ES256\"]", &format!("[\"ES256\", \"{bad}\"]"));
        assert_one_error(
            &text,
            &format!("\"{bad}\""),
            &["corp", "unsupported algorithm", bad],
        );
    }
}

#[test]
fn none_algorithm_is_refused() {
    for none in ["none", "None", "NONE"] {
        let text = with_issuer_line("[\"ES256\"]", &format!("[\"{none}\"]"));
        let lines = error_lines(&text);
        let (line, col) = pos(&text, &format!("\"{none}\""));
        let prefix = format!("{FILE}:{line}:{col}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains("unsupported algorithm")),
            "{none:?} must be refused at {prefix}: {lines:#?}"
        );
    }
}

#[test]
fn empty_algorithms_is_located() {
    let text = with_issuer_line("[\"ES256\"]", "[]");
    assert_one_error(&text, "[]", &["algorithms must not be empty"]);
}

#[test]
fn empty_audiences_is_located() {
    let text = with_issuer_line("[\"orders-api\"]", "[]");
    assert_one_error(&text, "[]", &["audiences must not be empty"]);
}

#[test]
fn two_key_sources_are_an_error_at_the_issuer() {
    for second in [
        "jwks_file = \"jwks.json\"",
        "jwks_url = \"https://idp.example.com/jwks\"",
        "hmac_secret_env = \"JWT_SECRET\"",
        "hmac_secret_file = \"/run/secrets/jwt\"",
    ] {
        let text = with_issuer_line("keys = [", &format!("{second}\nkeys = ["));
        let lines = error_lines(&text);
        let (line, col) = pos(&text, "\"corp\"");
        let prefix = format!("{FILE}:{line}:{col}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains("more than one key source")),
            "{second}: expected 'more than one key source' at {prefix}: {lines:#?}"
        );
    }
}

#[test]
fn no_key_source_is_an_error_at_the_issuer() {
    let text = with_issuer_line("keys = [\"certs/signing.pem\"]\n", "");
    assert_one_error(&text, "\"corp\"", &["has no keys"]);
}

#[test]
fn empty_keys_list_is_located() {
    let text = with_issuer_line("[\"certs/signing.pem\"]", "[]");
    assert_one_error(&text, "[]", &["keys must list at least one PEM file"]);
}

#[test]
fn hmac_algorithm_with_a_pem_or_url_key_source_is_refused() {
    for source in [
        "keys = [\"certs/signing.pem\"]",
        "jwks_url = \"https://idp.example.com/jwks\"",
    ] {
        let text = valid()
            .replace("keys = [\"certs/signing.pem\"]", source)
            .replace("[\"ES256\"]", "[\"ES256\", \"HS256\"]");
        assert_one_error(&text, "[\"ES256\", \"HS256\"]", &["HS256", "shared secret"]);
    }
}

#[test]
fn public_key_algorithm_with_an_hmac_source_is_refused() {
    for source in [
        "hmac_secret_env = \"JWT_SECRET\"",
        "hmac_secret_file = \"jwt.secret\"",
    ] {
        let text = with_issuer_line("keys = [\"certs/signing.pem\"]", source)
            .replace("[\"ES256\"]", "[\"HS256\", \"RS256\"]");
        assert_one_error(
            &text,
            "[\"HS256\", \"RS256\"]",
            &["RS256", "needs a public key"],
        );
    }
}

#[test]
fn jwks_file_may_serve_both_hmac_and_public_algorithms() {
    let text = with_issuer_line(
        "keys = [\"certs/signing.pem\"]",
        "jwks_file = \"jwks.json\"",
    )
    .replace("[\"ES256\"]", "[\"HS256\", \"RS256\"]");
    parse_ok(&text);
}

#[test]
fn bad_jwks_url_is_located() {
    for bad in [
        "file:///etc/jwks.json",
        "idp.example.com/jwks",
        "ftp://idp/jwks",
    ] {
        let text = with_issuer_line(
            "keys = [\"certs/signing.pem\"]",
            &format!("jwks_url = \"{bad}\""),
        );
        assert_one_error(&text, &format!("\"{bad}\""), &["jwks_url", "http"]);
    }
}

#[test]
fn duplicate_issuer_names_are_located_at_the_second() {
    let text = format!("{LISTEN}{ISSUER}{ISSUER}{ROUTE}");
    assert_one_error_at(
        &text,
        pos_nth(&text, "\"corp\"", 1),
        &["issuer name", "corp", "twice"],
    );
}

#[test]
fn leeway_over_five_minutes_is_refused() {
    let text = with_issuer_line("keys = [", "leeway = \"301s\"\nkeys = [");
    assert_one_error(&text, "\"301s\"", &["leeway", "at most 5m"]);
    let text = with_issuer_line("keys = [", "leeway = \"5m\"\nkeys = [");
    assert_eq!(parse_ok(&text).issuers[0].leeway, Duration::from_secs(300));
}

#[test]
fn route_referencing_an_unknown_issuer_is_located() {
    let text = with_route_line(
        "auth = \"required\"",
        "auth = \"required\"\nissuers = [\"corp\", \"ghost\"]",
    );
    assert_one_error(
        &text,
        "\"ghost\"",
        &["orders", "no [[issuer]] is named", "ghost"],
    );
}

#[test]
fn bad_auth_value_is_located() {
    for bad in ["sometimes", "Required", "", "true"] {
        let text = with_route_line("\"required\"", &format!("\"{bad}\""));
        assert_one_error(
            &text,
            &format!("\"{bad}\"\n"),
            &["auth", "must be one of required, optional, none"],
        );
    }
}

#[test]
fn auth_that_is_not_a_string_is_located() {
    let text = with_route_line("auth = \"required\"", "auth = true");
    assert_one_error_at(&text, pos(&text, "true"), &["string"]);
}

#[test]
fn bad_upstream_url_is_located() {
    for (bad, words) in [
        ("not a url", &["upstream"][..]),
        ("127.0.0.1:8080", &["upstream"][..]),
        ("/relative/path", &["absolute URL"][..]),
        ("ftp://127.0.0.1:21", &["scheme must be http or https"][..]),
        (
            "http://127.0.0.1:8080/?debug=1",
            &["query or credentials"][..],
        ),
        (
            "http://user:pass@127.0.0.1:8080",
            &["query or credentials"][..],
        ),
    ] {
        let text = with_route_line("\"http://127.0.0.1:8080\"", &format!("\"{bad}\""));
        let at = pos(&text, &format!("\"{bad}\""));
        // Columns point at the value: `upstream = ` is 11 characters.
        assert_eq!(at.1, 12);
        assert_one_error_at(&text, at, words);
    }
}

#[test]
fn upstream_base_path_is_kept() {
    let text = with_route_line(
        "\"http://127.0.0.1:8080\"",
        "\"http://127.0.0.1:8080/base/\"",
    );
    let c = parse_ok(&text);
    assert_eq!(c.routes[0].upstream.base_path, "/base");
    assert_eq!(c.routes[0].upstream.authority.as_str(), "127.0.0.1:8080");
}

#[test]
fn path_prefix_not_normalised_is_refused_with_the_normal_form() {
    for (bad, normal) in [
        ("/api/../x", "/x"),
        ("/api/./orders", "/api/orders"),
        ("/api//orders", "/api/orders"),
        ("/%61pi", "/api"),
    ] {
        let text = with_route_line("\"/api/orders\"", &format!("\"{bad}\""));
        assert_one_error(
            &text,
            &format!("\"{bad}\""),
            &["not in normal form", &format!("write {normal:?}")],
        );
    }
}

#[test]
fn path_prefix_not_starting_with_slash_is_refused() {
    let text = with_route_line("\"/api/orders\"", "\"api/orders\"");
    assert_one_error(&text, "\"api/orders\"", &["path_prefix"]);
}

#[test]
fn reserved_claim_header_names_are_refused() {
    for name in [
        "Host",
        "Authorization",
        "X-Forwarded-For",
        "x-forwarded-proto",
        "X-Request-Id",
        "Content-Length",
        "Transfer-Encoding",
        "Cookie",
    ] {
        let text = format!(
            "{}[route.claim_headers]\n\"X-Auth-Sub\" = \"sub\"\n\"{name}\" = \"email\"\n",
            valid()
        );
        // Located at the claim (the value of the entry).
        assert_one_error(&text, "\"email\"", &["claim_headers cannot set", name]);
    }
}

#[test]
fn claim_header_with_underscore_or_invalid_name_is_refused() {
    let text = format!(
        "{}[route.claim_headers]\n\"X_Auth_Sub\" = \"sub\"\n",
        valid()
    );
    assert_one_error(&text, "\"sub\"", &["'_'"]);
    let text = format!("{}[route.claim_headers]\n\"X Auth\" = \"sub\"\n", valid());
    assert_one_error(&text, "\"sub\"", &["not a valid header name"]);
    let text = format!("{}[route.claim_headers]\n\"X-Auth\" = \"\"\n", valid());
    assert_one_error(&text, "\"\"\n", &["must not be empty"]);
}

#[test]
fn duplicate_route_names_are_located_at_the_second() {
    let second = ROUTE.replace("/api/orders", "/api/other");
    let text = format!("{}{second}", valid());
    assert_one_error_at(
        &text,
        pos_nth(&text, "\"orders\"", 1),
        &["route name", "orders", "twice"],
    );
}

#[test]
fn no_route_is_an_error() {
    let text = format!("{LISTEN}{ISSUER}");
    let lines = error_lines(&text);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("no [[route]]"), "{lines:#?}");
}

#[test]
fn max_token_bytes_out_of_range_is_located() {
    for bad in ["0", "-1", "255", "1048577", "99999999999"] {
        let text = format!("{LISTEN}[limits]\nmax_token_bytes = {bad}\n{ISSUER}{ROUTE}");
        let lines = error_lines(&text);
        let (line, col) = pos(&text, &format!("{bad}\n"));
        assert!(
            lines[0].starts_with(&format!("{FILE}:{line}:{col}: "))
                && lines[0].contains("max_token_bytes must be between 256 and 1048576"),
            "max_token_bytes = {bad}: {lines:#?}"
        );
    }
    for ok in ["256", "1048576", "8192"] {
        let text = format!("{LISTEN}[limits]\nmax_token_bytes = {ok}\n{ISSUER}{ROUTE}");
        assert_eq!(parse_ok(&text).limits.max_token_bytes.to_string(), ok);
    }
}

#[test]
fn max_header_bytes_out_of_range_is_located() {
    for bad in ["8191", "1048577"] {
        let text = format!("{LISTEN}[limits]\nmax_header_bytes = {bad}\n{ISSUER}{ROUTE}");
        assert_one_error_at(
            &text,
            pos(&text, &format!("{bad}\n")),
            &["max_header_bytes must be between"],
        );
    }
}

#[test]
fn bad_host_and_methods_are_located() {
    let text = with_route_line(
        "auth = \"required\"",
        "auth = \"required\"\nhost = \"api.example.com:443\"",
    );
    assert_one_error(&text, "\"api.example.com:443\"", &["host"]);
    let text = with_route_line(
        "auth = \"required\"",
        "auth = \"required\"\nmethods = [\"GET\", \"G ET\"]",
    );
    assert_one_error(&text, "\"G ET\"", &["not an HTTP method"]);
    let text = with_route_line("auth = \"required\"", "auth = \"required\"\nmethods = []");
    assert_one_error(&text, "[]", &["methods must not be empty"]);
}

#[test]
fn toml_syntax_error_is_located() {
    let text = format!("{}name = \n", valid());
    let lines = error_lines(&text);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let last_line = text.lines().count();
    assert!(
        lines[0].starts_with(&format!("{FILE}:{last_line}:")),
        "syntax error should be on line {last_line}: {lines:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Every error at once

/// A config with an error in every section (issuers valid, no unknown keys): every error is
/// reported, one per line, sorted by line.
#[test]
fn many_errors_are_all_reported_sorted_by_line() {
    let text = r#"[listen]
addr = "nope"

[admin]
addr = "127.0.0.1"

[limits]
max_token_bytes = 10
upstream_timeout = "5 parsecs"
shutdown_grace = "0s"

[[issuer]]
name = "corp"
issuer = "https://idp.example.com/"
audiences = ["orders-api"]
algorithms = ["ES256"]
keys = ["certs/signing.pem"]

[[route]]
name = "a"
path_prefix = "/api/../x"
upstream = "ftp://127.0.0.1:21"
auth = "sometimes"
issuers = ["ghost"]
[route.claim_headers]
"Host" = "sub"

[[route]]
name = "a"
path_prefix = "/b"
upstream = "http://127.0.0.1:1"
auth = "none"
"#;
    // (needle, occurrence, what the message says), in file order.
    let expected: &[(&str, usize, &str)] = &[
        ("\"nope\"", 0, "listen addr"),
        ("\"127.0.0.1\"", 0, "admin addr"),
        ("10\n", 0, "max_token_bytes"),
        ("\"5 parsecs\"", 0, "upstream_timeout"),
        ("\"0s\"", 0, "shutdown_grace"),
        ("\"/api/../x\"", 0, "not in normal form"),
        ("\"ftp://127.0.0.1:21\"", 0, "scheme"),
        ("\"sometimes\"", 0, "auth"),
        ("\"ghost\"", 0, "ghost"),
        ("\"sub\"", 0, "Host"),
        ("\"a\"", 1, "twice"),
    ];
    let lines = error_lines(text);
    assert_eq!(
        lines.len(),
        expected.len(),
        "every error must be reported:\n{}",
        lines.join("\n")
    );
    for (got, (needle, nth, word)) in lines.iter().zip(expected) {
        let (line, col) = pos_nth(text, needle, *nth);
        let prefix = format!("{FILE}:{line}:{col}: ");
        assert!(
            got.starts_with(&prefix) && got.contains(word),
            "expected an error at {prefix} mentioning {word:?}, got {got:?}\nall:\n{}",
            lines.join("\n")
        );
    }
    let locs: Vec<(usize, usize)> = parse(text)
        .expect_err("refused")
        .0
        .iter()
        .map(|e| (e.loc.line, e.loc.col))
        .collect();
    let mut sorted = locs.clone();
    sorted.sort();
    assert_eq!(locs, sorted, "errors are sorted by line and column");
}

#[test]
fn issuer_errors_do_not_hide_route_errors() {
    let text = with_issuer_line("[\"ES256\"]", "[\"ES257\"]")
        .replace("auth = \"required\"", "auth = \"sometimes\"");
    let lines = error_lines(&text);
    assert!(
        lines.iter().any(|l| l.contains("ES257")),
        "the issuer error: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("sometimes")),
        "the route error must be reported with the issuer error: {lines:#?}"
    );
}

#[test]
fn unknown_keys_do_not_hide_other_errors() {
    let text = format!(
        "{LISTEN}[limits]\nupstream_timeout = \"5 parsecs\"\n{}{}",
        ISSUER.replace("keys = [", "colour = 1\nkeys = ["),
        ROUTE.replace("auth = \"required\"", "auth = \"required\"\nretries = 3")
    );
    let lines = error_lines(&text);
    for word in ["5 parsecs", "colour", "retries"] {
        assert!(
            lines.iter().any(|l| l.contains(word)),
            "{word:?} must be reported along with the others: {lines:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

#[test]
fn relative_key_paths_resolve_against_the_config_directory() {
    let c = parse_ok(&valid());
    assert_eq!(
        c.issuers[0].source,
        KeySource::PemFiles(vec![PathBuf::from("/etc/jwtgate/certs/signing.pem")])
    );
    let text = with_issuer_line(
        "keys = [\"certs/signing.pem\"]",
        "keys = [\"/abs/a.pem\", \"../b.pem\"]",
    );
    assert_eq!(
        parse_ok(&text).issuers[0].source,
        KeySource::PemFiles(vec![
            PathBuf::from("/abs/a.pem"),
            PathBuf::from("/etc/jwtgate/../b.pem")
        ])
    );
    let text = with_issuer_line(
        "keys = [\"certs/signing.pem\"]",
        "jwks_file = \"jwks.json\"",
    );
    assert_eq!(
        parse_ok(&text).issuers[0].source,
        KeySource::JwksFile(PathBuf::from("/etc/jwtgate/jwks.json"))
    );
    let text = with_issuer_line(
        "keys = [\"certs/signing.pem\"]",
        "hmac_secret_file = \"s/jwt\"",
    )
    .replace("[\"ES256\"]", "[\"HS256\"]");
    assert_eq!(
        parse_ok(&text).issuers[0].source,
        KeySource::HmacFile(PathBuf::from("/etc/jwtgate/s/jwt"))
    );
}

#[test]
fn relative_key_paths_load_from_the_config_directory_not_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("keys")).expect("mkdir");
    common::write_keys(&dir.path().join("keys"));
    let cwd = std::env::current_dir().expect("cwd");
    assert_ne!(
        cwd,
        dir.path(),
        "the test needs a different working directory"
    );
    let issuer = ISSUER
        .replace("[\"ES256\"]", "[\"ES256\", \"RS256\"]")
        .replace("certs/signing.pem", "keys/ec256.pem\", \"keys/rsa.pem");
    let snap = build_in(dir.path(), &issuer).unwrap_or_else(|e| panic!("should load: {e}"));
    let kids: Vec<Option<String>> = snap.issuers[0]
        .keys
        .current()
        .expect("static keys")
        .iter()
        .map(|k| k.kid.clone())
        .collect();
    assert_eq!(kids, [Some("ec256".to_owned()), Some("rsa".to_owned())]);
}

// ---------------------------------------------------------------------------------------------
// Key loading (Snapshot::build)

/// Writes `LISTEN + issuer + ROUTE` as `dir/gateway.toml`, parses it (must be valid) and
/// builds the snapshot.
fn build_in(dir: &Path, issuer: &str) -> Result<Snapshot, ConfigErrors> {
    let text = format!("{LISTEN}{issuer}{ROUTE}");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Config::parse(&path, &text)
        .unwrap_or_else(|e| panic!("config should parse:\n{e}\n---\n{text}"));
    Snapshot::build(config)
}

/// Asserts the build fails with one error located at the key source value `at` in the issuer
/// block, mentioning every one of `words`.
fn assert_build_error(dir: &Path, issuer: &str, at: &str, words: &[&str]) {
    let text = format!("{LISTEN}{issuer}{ROUTE}");
    let errs = build_in(dir, issuer)
        .map(|_| ())
        .expect_err(&format!("keys should be refused:\n{issuer}"));
    let shown = errs.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 1, "one error expected:\n{shown}");
    let (line, col) = pos(&text, at);
    let prefix = format!("{}:{line}:{col}: ", dir.join("gateway.toml").display());
    assert!(
        lines[0].starts_with(&prefix),
        "error should be at {prefix:?}, got {:?}",
        lines[0]
    );
    for w in words {
        assert!(lines[0].contains(w), "{:?} should mention {w:?}", lines[0]);
    }
}

fn issuer_with(algs: &str, source: &str) -> String {
    format!(
        "\n[[issuer]]\nname = \"corp\"\nissuer = \"https://idp.example.com/\"\naudiences = [\"orders-api\"]\nalgorithms = {algs}\n{source}\n"
    )
}

#[test]
fn missing_pem_file_is_an_error_at_the_key_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = issuer_with("[\"ES256\"]", "keys = [\"missing.pem\"]");
    assert_build_error(
        dir.path(),
        &issuer,
        "[\"missing.pem\"]",
        &["corp", "cannot read", "missing.pem"],
    );
}

#[test]
fn missing_jwks_and_hmac_files_are_errors_at_the_key_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issuer = issuer_with("[\"ES256\"]", "jwks_file = \"nope.json\"");
    assert_build_error(
        dir.path(),
        &issuer,
        "\"nope.json\"",
        &["cannot read", "nope.json"],
    );
    let issuer = issuer_with("[\"HS256\"]", "hmac_secret_file = \"nope.secret\"");
    assert_build_error(
        dir.path(),
        &issuer,
        "\"nope.secret\"",
        &["cannot read", "nope.secret"],
    );
}

#[test]
fn private_key_given_as_public_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = repo("certs/dev-signing-es256.key");
    assert!(private.exists(), "{} is shipped", private.display());
    let issuer = issuer_with(
        "[\"ES256\"]",
        &format!("keys = [{:?}]", private.display().to_string()),
    );
    let at = format!("[{:?}]", private.display().to_string());
    assert_build_error(dir.path(), &issuer, &at, &["private key", "public"]);
}

#[test]
fn file_that_is_not_pem_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("junk.pem"), "hello").expect("write");
    let issuer = issuer_with("[\"ES256\"]", "keys = [\"junk.pem\"]");
    assert_build_error(
        dir.path(),
        &issuer,
        "[\"junk.pem\"]",
        &["junk.pem", "not PEM"],
    );
}

#[test]
fn hmac_secret_file_shorter_than_32_bytes_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 31 bytes and a trailing newline (which is not part of the secret).
    std::fs::write(
        dir.path().join("short.secret"),
        format!("{}\n", "s".repeat(31)),
    )
    .expect("write");
    let issuer = issuer_with("[\"HS256\"]", "hmac_secret_file = \"short.secret\"");
    assert_build_error(
        dir.path(),
        &issuer,
        "\"short.secret\"",
        &["31 bytes", "at least 32"],
    );
    std::fs::write(
        dir.path().join("ok.secret"),
        format!("{}\n", "s".repeat(32)),
    )
    .expect("write");
    let issuer = issuer_with("[\"HS256\"]", "hmac_secret_file = \"ok.secret\"");
    build_in(dir.path(), &issuer).unwrap_or_else(|e| panic!("32 bytes is enough: {e}"));
}

#[test]
fn hmac_secret_env_shorter_than_32_bytes_or_unset_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid = std::process::id();
    let short = format!("JWTGATE_TEST_SHORT_SECRET_{pid}");
    let good = format!("JWTGATE_TEST_GOOD_SECRET_{pid}");
    let unset = format!("JWTGATE_TEST_UNSET_SECRET_{pid}");
    // Names unique to this test and process; nothing else reads them.
    std::env::set_var(&short, "s".repeat(20));
    std::env::set_var(&good, "s".repeat(32));
    std::env::remove_var(&unset);

    let issuer = issuer_with("[\"HS256\"]", &format!("hmac_secret_env = \"{short}\""));
    assert_build_error(
        dir.path(),
        &issuer,
        &format!("\"{short}\""),
        &["20 bytes", "at least 32"],
    );

    let issuer = issuer_with("[\"HS256\"]", &format!("hmac_secret_env = \"{unset}\""));
    assert_build_error(
        dir.path(),
        &issuer,
        &format!("\"{unset}\""),
        &[&unset, "not set"],
    );

    let issuer = issuer_with(
        "[\"HS256\", \"HS512\"]",
        &format!("hmac_secret_env = \"{good}\""),
    );
    let snap = build_in(dir.path(), &issuer).unwrap_or_else(|e| panic!("32 bytes is enough: {e}"));
    assert_eq!(
        snap.issuers[0].keys.current().expect("static keys").len(),
        1
    );
}

#[test]
fn jwks_file_with_no_usable_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    // Only an RSA key, for an ES256 issuer.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("jwks.json")).expect("read"))
            .expect("json");
    let only_rsa = serde_json::json!({ "keys": [doc["keys"][0].clone()] });
    std::fs::write(dir.path().join("rsa-only.json"), only_rsa.to_string()).expect("write");
    let issuer = issuer_with("[\"ES256\"]", "jwks_file = \"rsa-only.json\"");
    assert_build_error(dir.path(), &issuer, "\"rsa-only.json\"", &["no usable key"]);

    std::fs::write(dir.path().join("empty.json"), r#"{"keys":[]}"#).expect("write");
    let issuer = issuer_with("[\"ES256\"]", "jwks_file = \"empty.json\"");
    assert_build_error(dir.path(), &issuer, "\"empty.json\"", &["no usable key"]);

    std::fs::write(dir.path().join("enc.json"), {
        let mut k = doc["keys"][1].clone();
        k["use"] = "enc".into();
        serde_json::json!({ "keys": [k] }).to_string()
    })
    .expect("write");
    let issuer = issuer_with("[\"ES256\"]", "jwks_file = \"enc.json\"");
    assert_build_error(dir.path(), &issuer, "\"enc.json\"", &["no usable key"]);

    std::fs::write(dir.path().join("notjwks.json"), r#"{"kty":"EC"}"#).expect("write");
    let issuer = issuer_with("[\"ES256\"]", "jwks_file = \"notjwks.json\"");
    assert_build_error(dir.path(), &issuer, "\"notjwks.json\"", &["keys"]);
}

#[test]
fn rsa_key_of_1024_bits_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("weak.key");
    let public = dir.path().join("weak.pem");
    let generated = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
        ])
        .arg(&key)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|_| {
            std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public)
                .output()
                .ok()
        })
        .is_some_and(|o| o.status.success());
    if !generated {
        println!("note: openssl is not available; skipping the 1024-bit RSA key test");
        return;
    }
    let issuer = issuer_with("[\"RS256\"]", "keys = [\"weak.pem\"]");
    assert_build_error(
        dir.path(),
        &issuer,
        "[\"weak.pem\"]",
        &["1024 bits", "at least 2048"],
    );
}

#[test]
fn key_type_that_does_not_fit_the_issuer_algorithms_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_keys(dir.path());
    // A P-384 key for an ES256-only issuer.
    let issuer = issuer_with("[\"ES256\"]", "keys = [\"ec384.pem\"]");
    assert_build_error(dir.path(), &issuer, "[\"ec384.pem\"]", &["P-384", "ES256"]);
    // A P-256 key for an ES384-only issuer.
    let issuer = issuer_with("[\"ES384\"]", "keys = [\"ec256.pem\"]");
    assert_build_error(dir.path(), &issuer, "[\"ec256.pem\"]", &["P-256", "ES384"]);
    // An RSA key for an EdDSA-only issuer.
    let issuer = issuer_with("[\"EdDSA\"]", "keys = [\"ed25519.pem\", \"rsa.pem\"]");
    assert_build_error(
        dir.path(),
        &issuer,
        "[\"ed25519.pem\", \"rsa.pem\"]",
        &["rsa.pem", "RSA", "EdDSA"],
    );
    // The same keys load when the algorithms fit.
    let issuer = issuer_with(
        "[\"ES384\", \"EdDSA\"]",
        "keys = [\"ec384.pem\", \"ed25519.pem\"]",
    );
    build_in(dir.path(), &issuer).unwrap_or_else(|e| panic!("fitting keys load: {e}"));
}

#[test]
fn every_issuer_key_error_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{LISTEN}{}{}{ROUTE}",
        issuer_with("[\"ES256\"]", "keys = [\"a.pem\"]"),
        issuer_with("[\"ES256\"]", "keys = [\"b.pem\"]")
            .replace("\"corp\"", "\"other\"")
            // Two [[issuer]]s with one iss are a config error of their own.
            .replace("idp.example.com", "other.example.com")
    );
    let path = dir.path().join("gateway.toml");
    let config = Config::parse(&path, &text).unwrap_or_else(|e| panic!("parses: {e}"));
    let errs = Snapshot::build(config)
        .map(|_| ())
        .expect_err("both keys are missing");
    let shown = errs.to_string();
    assert_eq!(shown.lines().count(), 2, "both issuers' errors:\n{shown}");
    assert!(
        shown.contains("a.pem") && shown.contains("b.pem"),
        "{shown}"
    );
}
