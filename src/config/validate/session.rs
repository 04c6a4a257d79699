//! `[session]`: browser sessions through OpenID Connect login (SPEC "Browser sessions").

use std::time::Duration;

use toml::Spanned;

use super::issuer::IssuerNames;
use super::Validator;
use crate::config::raw::{RawIssuer, RawRoute, RawSession};
use crate::config::{AuthMode, RouteConfig, SecretSource, SessionConfig, SessionStore, TokenAuth};

impl Validator<'_> {
    /// `[session]` validated; `None` when it has errors (they are collected).
    pub(super) fn session(
        &mut self,
        s: &Spanned<RawSession>,
        raw_issuers: &[Spanned<RawIssuer>],
        names: &IssuerNames<'_>,
        routes: &[RouteConfig],
        has_redis: bool,
    ) -> Option<SessionConfig> {
        let r = s.get_ref();
        let before = self.errors.len();
        let issuer_name = r.issuer.get_ref().as_str();
        let issuer = names.index.get(issuer_name).copied();
        match issuer {
            None => self.error(
                &r.issuer,
                format!("[session] issuer: no [[issuer]] is named {issuer_name:?}"),
            ),
            Some(i) if raw_issuers[i].get_ref().discovery_url.is_none() => self.error(
                &r.issuer,
                format!("[session] issuer: [[issuer]] {issuer_name:?} needs a discovery_url: login needs the provider's authorization and token endpoints"),
            ),
            Some(_) => {}
        }
        if r.client_id.get_ref().is_empty() {
            self.error(&r.client_id, "[session] client_id must not be empty");
        }
        let client_secret = match (&r.client_secret_env, &r.client_secret_file) {
            (Some(_), Some(f)) => {
                self.error(
                    f,
                    "[session] set client_secret_env or client_secret_file, not both",
                );
                None
            }
            (Some(e), None) => Some(SecretSource::Env(e.get_ref().clone())),
            (None, Some(f)) => Some(SecretSource::File(self.file(f))),
            (None, None) => None,
        };
        let scopes = match &r.scopes {
            Some(list) => {
                let scopes = self.strings(list, "[session] scopes");
                if !scopes.iter().any(|s| s == "openid") {
                    self.error(
                        list,
                        "[session] scopes must include \"openid\": login verifies an ID token",
                    );
                }
                for s in list.get_ref() {
                    if s.get_ref().is_empty() || s.get_ref().contains([' ', '"', '\\']) {
                        self.error(
                            s,
                            format!("[session] scopes: {:?} is not a scope token", s.get_ref()),
                        );
                    }
                }
                scopes
            }
            None => vec!["openid".into()],
        };
        let external_url = r
            .external_url
            .as_ref()
            .and_then(|u| match origin_of(u.get_ref()) {
                Ok(o) => Some(o),
                Err(why) => {
                    self.error(
                        u,
                        format!("[session] external_url {:?}: {why}", u.get_ref()),
                    );
                    None
                }
            });
        let store = match r.store.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "cookie")) => SessionStore::Cookie,
            Some((at, "redis")) => {
                if !has_redis {
                    self.error(
                        at,
                        "[session] store = \"redis\" needs a [redis] section (the shared Redis)",
                    );
                }
                SessionStore::Redis
            }
            Some((at, other)) => {
                self.error(
                    at,
                    format!("[session] store {other:?} must be \"cookie\" or \"redis\""),
                );
                SessionStore::Cookie
            }
        };
        let token_auth = match r.token_auth.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "basic")) => TokenAuth::Basic,
            Some((_, "post")) => TokenAuth::Post,
            Some((at, other)) => {
                self.error(
                    at,
                    format!("[session] token_auth {other:?} must be \"basic\" (client_secret_basic) or \"post\" (client_secret_post)"),
                );
                TokenAuth::Basic
            }
        };
        let lifetime = self.duration(
            &r.lifetime,
            "[session] lifetime",
            Duration::from_secs(12 * 3600),
        );
        let idle_timeout = self.duration(
            &r.idle_timeout,
            "[session] idle_timeout",
            Duration::from_secs(3600),
        );
        let post_logout_redirect = r.post_logout_redirect.as_ref().and_then(|u| {
            match u.get_ref().parse::<http::Uri>() {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
                    Some(u.get_ref().clone())
                }
                _ => {
                    self.error(
                        u,
                        format!("[session] post_logout_redirect {:?} must be an absolute http:// or https:// URL", u.get_ref()),
                    );
                    None
                }
            }
        });
        if let Some(i) = issuer {
            for route in routes.iter().filter(|rt| rt.auth == AuthMode::Session) {
                if !route.issuers.contains(&i) {
                    self.error_at(
                        s.span().start,
                        format!("route {:?} has auth = \"session\" but does not accept [session] issuer {issuer_name:?} (add it to the route's issuers)", route.name),
                    );
                }
            }
        }
        if self.errors.len() > before {
            return None;
        }
        Some(SessionConfig {
            issuer: issuer?,
            client_id: r.client_id.get_ref().clone(),
            client_secret,
            scopes,
            cookie_keys_file: self.file(&r.cookie_keys_file),
            external_url,
            store,
            lifetime,
            idle_timeout,
            post_logout_redirect,
            backchannel_logout: r.backchannel_logout.as_ref().is_none_or(|b| *b.get_ref()),
            token_auth,
            loc: self.loc(s.span().start),
        })
    }

    /// Without `[session]`, a route with `auth = "session"` is an error (it could never log in).
    pub(super) fn session_routes_need_session(&mut self, routes: &[Spanned<RawRoute>]) {
        for r in routes {
            let r = r.get_ref();
            if r.auth.get_ref() == "session" {
                self.error(
                    &r.auth,
                    format!(
                        "route {:?}: auth = \"session\" needs a [session] section (the OpenID Connect client)",
                        r.name.get_ref()
                    ),
                );
            }
        }
    }
}

/// `scheme://host[:port]` of an `external_url`, which must be an origin (a trailing `/` is
/// allowed): the callback path is appended to it, and the `__Host-` cookie prefix needs https
/// (browsers treat loopback http as secure, so `http://localhost` is allowed for development).
fn origin_of(url: &str) -> Result<String, &'static str> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "is not a URL such as \"https://orders.example.com\"")?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err("must be an absolute URL such as \"https://orders.example.com\"");
    };
    if authority.as_str().contains('@') {
        return Err("must not carry credentials");
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err("must be an origin (scheme, host and port) without a path or query");
    }
    match scheme {
        "https" => {}
        "http" if crate::session::is_loopback_host(authority.host()) => {}
        "http" => {
            return Err("must be https: the session cookie is Secure (http is only allowed for a loopback host)")
        }
        _ => return Err("must be an http:// or https:// URL"),
    }
    Ok(format!("{scheme}://{authority}").to_ascii_lowercase())
}
