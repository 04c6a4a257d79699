//! `[listen]` (address, TLS files, trust settings), `[admin]` and `[limits]`.

use http::header::HeaderName;
use toml::Spanned;

use super::Validator;
use crate::config::raw;
use crate::config::{Admin, CertFiles, Limits, Listen, Loc, TlsFiles};

impl Validator<'_> {
    pub(super) fn listen(&mut self, raw: &Spanned<raw::RawListen>) -> Option<Listen> {
        let l = raw.get_ref();
        let addr = self.addr(&l.addr, "listen addr");
        let tls = l.tls.as_ref().map(|t| {
            let t = t.get_ref();
            TlsFiles {
                cert: self.file(&t.cert),
                key: self.file(&t.key),
                client_ca: t.client_ca.as_ref().map(|c| self.file(c)),
                client_auth_optional: self.client_auth(t),
            }
        });
        let certificates: Vec<CertFiles> = l
            .certificates
            .iter()
            .map(|c| CertFiles {
                cert: self.file(&c.get_ref().cert),
                key: self.file(&c.get_ref().key),
            })
            .collect();
        if !certificates.is_empty() && tls.is_none() {
            self.error(
                &l.certificates[0],
                "[[listen.certificates]] needs [listen] tls, whose certificate is the default",
            );
        }
        let tls_loc = l
            .tls
            .as_ref()
            .map_or(Loc { line: 1, col: 1 }, |t| self.loc(t.span().start));
        let trusted_proxies = l
            .trusted_proxies
            .as_ref()
            .map(|list| list.get_ref().iter().filter_map(|c| self.cidr(c)).collect())
            .unwrap_or_default();
        let strip_headers = l
            .strip_headers
            .as_ref()
            .map(|list| {
                list.get_ref()
                    .iter()
                    .filter_map(|h| self.strip_header(h))
                    .collect()
            })
            .unwrap_or_default();
        Some(Listen {
            addr: addr?,
            tls,
            certificates,
            tls_loc,
            trusted_proxies,
            strip_headers,
            forward_client_cert: l.forward_client_cert.as_ref().is_none_or(|f| *f.get_ref()),
        })
    }

    /// `client_auth`: `"required"` (the default) or `"optional"`, and only with `client_ca`.
    fn client_auth(&mut self, t: &raw::RawTls) -> bool {
        let Some(a) = &t.client_auth else {
            return false;
        };
        let optional = match a.get_ref().as_str() {
            "required" => false,
            "optional" => true,
            other => {
                self.error(a, format!("[listen] tls client_auth {other:?} is neither \"required\" nor \"optional\""));
                return false;
            }
        };
        if t.client_ca.is_none() {
            self.error(a, "[listen] tls client_auth needs client_ca: it says whether clients must present a certificate from that CA");
        }
        optional
    }

    /// `[admin]`: its address.
    pub(super) fn admin(&mut self, raw: &raw::RawAdmin) -> Option<Admin> {
        self.addr(&raw.addr, "admin addr")
            .map(|addr| Admin { addr })
    }

    /// One `trusted_proxies` entry: a CIDR in canonical form, or one address.
    fn cidr(&mut self, c: &Spanned<String>) -> Option<ipnet::IpNet> {
        let text = c.get_ref().trim();
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Some(ipnet::IpNet::from(ip));
        }
        match text.parse::<ipnet::IpNet>() {
            // "10.0.0.1/8" trusts all of 10/8, which is rarely what was meant: ask for the
            // network itself.
            Ok(net) if net.trunc() != net => {
                self.error(
                    c,
                    format!(
                        "trusted_proxies: {text:?} has host bits set: write {:?} (or the single address {:?})",
                        net.trunc().to_string(),
                        net.addr().to_string()
                    ),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                self.error(
                    c,
                    format!("trusted_proxies: {text:?} is not a CIDR such as \"10.0.0.0/8\" or \"::1/128\", nor an IP address"),
                );
                None
            }
        }
    }

    /// One `strip_headers` entry: a header name, or a prefix ending in `*`.
    fn strip_header(&mut self, h: &Spanned<String>) -> Option<String> {
        let text = h.get_ref();
        let (name, star) = match text.strip_suffix('*') {
            Some(p) => (p, "*"),
            None => (text.as_str(), ""),
        };
        if name.is_empty() || HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.error(
                h,
                format!("strip_headers: {text:?} is not a header name (a trailing * makes it a prefix, such as \"X-Internal-*\")"),
            );
            return None;
        }
        let protected = ["host", "content-length", "transfer-encoding"];
        let norm = format!("{}{star}", name.to_ascii_lowercase().replace('_', "-"));
        if protected.iter().any(|p| {
            if star.is_empty() {
                norm == *p
            } else {
                p.starts_with(&norm[..norm.len() - 1])
            }
        }) {
            self.error(
                h,
                format!("strip_headers: {text:?} would remove Host or the body's framing, which requests need"),
            );
            return None;
        }
        Some(norm)
    }

    pub(super) fn limits(&mut self, raw: &raw::RawLimits) -> Limits {
        let d = Limits::default();
        let mut size = |v: &Option<Spanned<i64>>, key: &str, min: i64, max: i64, default: usize| {
            let Some(v) = v else { return default };
            if (min..=max).contains(v.get_ref()) {
                usize::try_from(*v.get_ref()).unwrap_or(default)
            } else {
                self.error(v, format!("{key} must be between {min} and {max}"));
                default
            }
        };
        let max_token_bytes = size(
            &raw.max_token_bytes,
            "max_token_bytes",
            256,
            1 << 20,
            d.max_token_bytes,
        );
        let max_header_bytes = size(
            &raw.max_header_bytes,
            "max_header_bytes",
            8192,
            1 << 20,
            d.max_header_bytes,
        );
        let token_cache_entries = size(
            &raw.token_cache_entries,
            "token_cache_entries",
            0,
            1_000_000,
            d.token_cache_entries,
        );
        let max_connections = size(
            &raw.max_connections,
            "max_connections",
            1,
            1_000_000,
            d.max_connections,
        );
        let max_concurrent_streams = size(
            &raw.max_concurrent_streams,
            "max_concurrent_streams",
            1,
            10_000,
            d.max_concurrent_streams as usize,
        );
        Limits {
            max_connections,
            // Within 1..=10_000 by the check above.
            max_concurrent_streams: u32::try_from(max_concurrent_streams)
                .unwrap_or(d.max_concurrent_streams),
            max_token_bytes,
            max_header_bytes,
            header_read_timeout: self.duration(
                &raw.header_read_timeout,
                "header_read_timeout",
                d.header_read_timeout,
            ),
            body_read_timeout: self.duration(
                &raw.body_read_timeout,
                "body_read_timeout",
                d.body_read_timeout,
            ),
            send_timeout: self.duration(&raw.send_timeout, "send_timeout", d.send_timeout),
            upstream_connect_timeout: self.duration(
                &raw.upstream_connect_timeout,
                "upstream_connect_timeout",
                d.upstream_connect_timeout,
            ),
            upstream_timeout: self.duration(
                &raw.upstream_timeout,
                "upstream_timeout",
                d.upstream_timeout,
            ),
            shutdown_grace: self.duration(&raw.shutdown_grace, "shutdown_grace", d.shutdown_grace),
            token_cache_entries,
        }
    }
}
