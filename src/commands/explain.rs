//! `jwtgate explain`: a dry run of one request against the loaded config.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{with_loaded, CommandError};

/// What the explained request carries: a token (`-` reads it from stdin) or a session
/// cookie, and a DPoP proof.
#[derive(Debug, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub cookie: Option<String>,
    pub dpop: Option<String>,
}

/// Explains one request and returns the report as printed (JSON or text) and whether the
/// gateway would forward it.
pub fn explain(
    config: &Path,
    Credentials {
        token,
        cookie,
        dpop,
    }: Credentials,
    method: &str,
    host: &str,
    path: &str,
    json: bool,
) -> Result<(String, bool), CommandError> {
    let token = match token.as_deref() {
        Some("-") => {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).map_err(|e| {
                CommandError::command("explain", format!("reading the token from stdin: {e}"))
            })?;
            Some(t.trim().to_owned())
        }
        other => other.map(str::to_owned),
    };
    let Ok(method) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        return Err(CommandError::command(
            "explain",
            format!("{method:?} is not an HTTP method"),
        ));
    };
    with_loaded(config, |snap| async move {
        // A fresh process: give remote issuers their first fetch before judging the token.
        for r in snap.remote_keys() {
            r.first_attempt(Duration::from_secs(5)).await;
        }
        // A session cookie: opened with the keyring, its facts a first step, its token then
        // explained as the request path would verify it.
        let session = cookie
            .as_deref()
            .map(|c| crate::session::explain_cookie(&snap, c, crate::unix_now()));
        let token = match &session {
            Some(Ok((_, t))) => Some(t.clone()),
            _ => token,
        };
        // Every denylist entry in effect (file and Redis), read once: which one revokes it.
        let metrics = crate::metrics::Metrics::new();
        let store = match &snap.config.redis {
            Some(r) => Some(
                crate::store::Store::open(r, &metrics)
                    .map_err(|e| CommandError::command("explain", format!("[redis]: {e}")))?,
            ),
            None => None,
        };
        let denylist = Arc::new(
            crate::denylist::Denylist::new(Arc::new(arc_swap::ArcSwap::new(snap.clone())), metrics)
                .with_store(store),
        );
        denylist
            .load_once()
            .await
            .map_err(|e| CommandError::command("explain", e.to_string()))?;
        let mut report = crate::explain::explain_with(
            &snap,
            Some(&denylist),
            token.as_deref(),
            dpop.as_deref(),
            &method,
            host,
            path,
        )
        .await;
        if let Some(s) = session {
            let (result, detail) = match s {
                Ok((detail, _)) => ("pass", detail),
                Err(why) => ("fail", why),
            };
            report.steps.insert(
                0,
                crate::explain::Step {
                    step: "session",
                    result,
                    detail,
                },
            );
        }
        let text = if json {
            let mut s = serde_json::to_string_pretty(&report)
                .map_err(|e| CommandError::command("explain", e.to_string()))?;
            s.push('\n');
            s
        } else {
            crate::explain::render_text(&report)
        };
        Ok((text, report.status == 200))
    })
}
