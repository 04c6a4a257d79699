//! `[route.cors]`: the gateway answers CORS preflights itself (never forwarded, no token
//! needed) and adds `Access-Control-Allow-Origin` to the actual answers, its own included, so
//! a browser can read a 401 or a 429 (SPEC "CORS and rate limits"; Fetch standard §3.2).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::config::Cors;

/// `Vary` on a preflight answer: each of these changes it.
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// For a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, as the
/// Fetch standard defines one), the method the browser asks about; `None` for anything else,
/// including a request method that is not a valid token.
pub fn preflight_method(method: &Method, h: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !h.contains_key(header::ORIGIN) {
        return None;
    }
    let m = h.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(m.as_bytes()).ok()
}

/// True when `origin` is allowed by `cors` (origins compare case-insensitively in scheme and
/// host, which is all an origin holds).
fn origin_allowed(cors: &Cors, origin: &HeaderValue) -> bool {
    if cors.any_origin {
        return true;
    }
    let Ok(o) = origin.to_str() else { return false };
    cors.allow_origins.iter().any(|a| a.eq_ignore_ascii_case(o))
}

/// The CORS-safelisted methods, which a browser lets through whatever the answer lists.
fn safelisted(m: &Method) -> bool {
    *m == Method::GET || *m == Method::HEAD || *m == Method::POST
}

/// The gateway's answer to a preflight on a route with `[route.cors]`: 204 with the CORS
/// headers when the origin, the method and every requested header are allowed, else 403
/// without them.
pub fn preflight(cors: &Cors, h: &HeaderMap, requested: &Method) -> Response<Full<Bytes>> {
    let origin = h.get(header::ORIGIN);
    let request_headers = h.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
    let refusal = if !origin.is_some_and(|o| origin_allowed(cors, o)) {
        Some("this origin may not call this route")
    } else if !(cors.any_method || safelisted(requested) || cors.allow_methods.contains(requested))
    {
        Some("this method is not allowed from another origin on this route")
    } else if !request_headers.is_none_or(|v| headers_allowed(cors, v)) {
        Some("a requested header is not allowed from another origin on this route")
    } else {
        None
    };
    if let Some(why) = refusal {
        return refused(why);
    }
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let out = res.headers_mut();
    if let Some(o) = origin {
        set_allow_origin(cors, out, o);
    }
    let methods = cors
        .allow_methods_value
        .clone()
        .or_else(|| HeaderValue::from_str(requested.as_str()).ok());
    if let Some(m) = methods {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
    }
    // The requested list, every name of which was just checked: echoing it is exact where a
    // configured "*" would not cover Authorization.
    if let Some(v) = request_headers {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
    }
    if let Some(age) = &cors.max_age {
        out.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
    }
    out.insert(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
    res
}

/// A refused preflight: 403 without any CORS header.
pub fn refused(why: &'static str) -> Response<Full<Bytes>> {
    let mut res = super::answer::json_answer(StatusCode::FORBIDDEN, "cors_refused", why);
    res.headers_mut()
        .insert(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
    res
}

/// Every name in `Access-Control-Request-Headers` is listed in `allow_headers` (or covered by
/// `*`, which never covers `Authorization`).
fn headers_allowed(cors: &Cors, v: &HeaderValue) -> bool {
    let Ok(v) = v.to_str() else { return false };
    v.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .all(|n| {
            cors.allow_headers.iter().any(|a| a.eq_ignore_ascii_case(n))
                || (cors.any_header && !n.eq_ignore_ascii_case("authorization"))
        })
}

fn set_allow_origin(cors: &Cors, out: &mut HeaderMap, origin: &HeaderValue) {
    let value = if cors.any_origin {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    };
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if cors.allow_credentials {
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// An actual (not preflight) answer on a route with `[route.cors]`, the upstream's or the
/// gateway's own: the upstream's `Access-Control-*` headers are removed, `Vary: Origin` is
/// added, and an allowed `origin` gets `Access-Control-Allow-Origin` (with
/// `-Allow-Credentials` and `-Expose-Headers` as configured).
pub fn decorate(cors: &Cors, out: &mut HeaderMap, origin: Option<&HeaderValue>) {
    let upstream_cors: Vec<HeaderName> = out
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in &upstream_cors {
        out.remove(name);
    }
    out.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin.filter(|o| origin_allowed(cors, o)) else {
        return;
    };
    set_allow_origin(cors, out, origin);
    if let Some(expose) = &cors.expose_headers {
        out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors {
            allow_origins: vec!["https://app.example.com".into()],
            any_origin: false,
            allow_methods: vec![Method::PUT],
            any_method: false,
            allow_headers: vec!["authorization".into(), "content-type".into()],
            any_header: false,
            expose_headers: None,
            allow_credentials: true,
            max_age: Some(HeaderValue::from_static("600")),
            allow_methods_value: Some(HeaderValue::from_static("PUT")),
        }
    }

    fn request(origin: &str, method: &str, headers: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap(),
        );
        if let Some(v) = headers {
            h.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn preflights_follow_the_fetch_standard() {
        let c = cors();
        let h = request(
            "https://app.example.com",
            "PUT",
            Some("authorization,content-type"),
        );
        assert_eq!(preflight_method(&Method::OPTIONS, &h), Some(Method::PUT));
        assert_eq!(preflight_method(&Method::GET, &h), None);
        let ok = preflight(&c, &h, &Method::PUT);
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(
            ok.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        for (origin, method, headers) in [
            ("https://evil.example.com", "PUT", None),
            ("https://app.example.com", "DELETE", None),
            ("https://app.example.com", "PUT", Some("x-other")),
        ] {
            let h = request(origin, method, headers);
            let m = preflight_method(&Method::OPTIONS, &h).unwrap();
            let no = preflight(&c, &h, &m);
            assert_eq!(no.status(), StatusCode::FORBIDDEN);
            assert!(!no
                .headers()
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")));
        }
        // Safelisted methods pass whatever is listed, as browsers let them through anyway.
        let h = request("https://app.example.com", "GET", None);
        assert_eq!(
            preflight(&c, &h, &Method::GET).status(),
            StatusCode::NO_CONTENT
        );
    }

    #[test]
    fn actual_answers_lose_the_upstreams_cors_headers() {
        let c = cors();
        let mut out = HeaderMap::new();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("*"),
        );
        decorate(
            &c,
            &mut out,
            Some(&HeaderValue::from_static("https://evil.example.com")),
        );
        assert!(out.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(out.get(header::ACCESS_CONTROL_ALLOW_METHODS).is_none());
        assert_eq!(out[header::VARY], "Origin");
        decorate(
            &c,
            &mut out,
            Some(&HeaderValue::from_static("https://app.example.com")),
        );
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
    }
}
