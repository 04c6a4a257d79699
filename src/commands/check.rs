//! `jwtgate check`: load everything, fetch every JWKS URL once, describe what would run.

use std::path::Path;

use super::{with_loaded, CommandError};
use crate::auth::IssuerKeys;
use crate::config::ConfigErrors;

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
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).into());
        }
        Ok(crate::check::describe(&snap))
    })
}
