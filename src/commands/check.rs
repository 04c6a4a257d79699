//! `jwtgate check`: load everything, fetch every JWKS URL once, describe what would run.

use std::path::Path;

use super::{with_loaded, CommandError};
use crate::auth::IssuerKeys;
use crate::config::{ConfigError, ConfigErrors, Loc};

/// Validates the config at `path` and returns the description `check` prints.
pub fn check(path: &Path) -> Result<String, CommandError> {
    with_loaded(path, |snap| async move {
        // `check` fetches every JWKS URL once: a provider that cannot be reached is an error.
        let mut errors = Vec::new();
        for i in &snap.issuers {
            if !matches!(i.keys, IssuerKeys::Remote(_)) {
                continue;
            }
            let fetched = crate::keys::remote::fetch(&i.config).await;
            if let Err(e) = fetched {
                let msg = format!("issuer {:?}: {e}", i.config.name);
                errors.push(snap.config.error(i.config.source_loc, msg));
            }
        }
        // `[session]`: the provider's discovery must answer with login's endpoints.
        if let (Some(sc), Some(rt)) = (&snap.config.session, &snap.session) {
            if let Err(e) = crate::session::oidc::discover(&rt.discovery_url, &rt.issuer).await {
                let msg = format!("[session]: the provider's discovery document: {e}");
                errors.push(snap.config.error(sc.loc, msg));
            }
        }
        // The denylist file: the gateway skips a bad line, `check` reports it (GitOps review).
        let mut denylist_note = String::new();
        if let Some(path) = snap.config.denylist.as_ref().and_then(|d| d.file.clone()) {
            let p = path.clone();
            let loaded = tokio::task::spawn_blocking(move || crate::denylist::file::load(&p))
                .await
                .map_err(|e| CommandError::command("check", e.to_string()))?;
            let at = |line: usize, message: String| ConfigError {
                file: path.clone(),
                loc: Loc { line, col: 1 },
                message,
            };
            if let Some(e) = &loaded.error {
                errors.push(at(1, format!("cannot read the denylist file: {e}")));
            }
            for bad in &loaded.skipped {
                errors.push(at(
                    bad.line,
                    format!("{} (the gateway skips this line)", bad.error),
                ));
            }
            let [jti, sub, sid] = loaded.layer.counts();
            denylist_note = format!(
                "denylist {}: {jti} jti, {sub} sub, {sid} sid entries\n",
                path.display()
            );
            for e in loaded.layer.entries() {
                if !snap.config.issuers.iter().any(|i| i.name == e.issuer) {
                    denylist_note.push_str(&format!(
                        "warning: denylist entry {e} names an issuer the config does not have\n"
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).into());
        }
        Ok(crate::check::describe(&snap) + &denylist_note)
    })
}
