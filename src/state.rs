//! The one immutable snapshot the request path reads: routes, issuers with their keys, and the
//! precomputed header plan. Built and validated whole, then swapped in with one store.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::Issuer;
use crate::config::{Config, ConfigErrors};
use crate::keys::{load_static, KeySet};
use crate::proxy::headers::HeaderPlan;
use crate::proxy::upstream::Clients;
use crate::routes::RouteTable;

/// Everything a request needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub issuers: Vec<Issuer>,
    pub table: RouteTable,
    pub headers: HeaderPlan,
    /// Pooled upstream clients, per route.
    pub clients: Clients,
    /// Entries of JWKS files that were left out, for `check` to print.
    pub skipped_keys: Vec<String>,
}

/// The live snapshot; requests `load()` it once each.
pub type Shared = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    /// Loads every local key and compiles the routes; all errors at once.
    pub fn build(config: Config) -> Result<Snapshot, ConfigErrors> {
        Snapshot::build_from(config, None)
    }

    /// Like [`Snapshot::build`], reusing what `previous` holds that did not change (warm
    /// upstream connection pools).
    pub fn build_from(
        config: Config,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut errors = Vec::new();
        let mut issuers = Vec::with_capacity(config.issuers.len());
        let mut skipped_keys = Vec::new();
        for ic in &config.issuers {
            let keys = match load_static(ic) {
                Ok(Some((keys, skipped))) => {
                    skipped_keys.extend(
                        skipped
                            .into_iter()
                            .map(|s| format!("issuer {:?}: {s}", ic.name)),
                    );
                    keys
                }
                Ok(None) => {
                    errors.push(config.error(
                        ic.source_loc,
                        format!(
                            "issuer {:?}: jwks_url and discovery_url are not supported by this build yet; use jwks_file, keys or an HMAC secret",
                            ic.name
                        ),
                    ));
                    KeySet::default()
                }
                Err(e) => {
                    errors.push(config.error(ic.source_loc, format!("issuer {:?}: {e}", ic.name)));
                    KeySet::default()
                }
            };
            issuers.push(Issuer {
                config: ic.clone(),
                keys,
            });
        }
        let clients = match Clients::build(&config, previous.map(|p| &p.clients)) {
            Ok(c) => c,
            Err((route, e)) => {
                errors.push(config.error(
                    config.routes[route].loc,
                    format!("route {:?}: upstream TLS: {e}", config.routes[route].name),
                ));
                Clients::default()
            }
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let table = RouteTable::new(&config.routes);
        let headers = HeaderPlan::new(&config.routes);
        Ok(Snapshot {
            config,
            issuers,
            table,
            headers,
            clients,
            skipped_keys,
        })
    }
}
