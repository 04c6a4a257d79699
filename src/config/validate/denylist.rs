//! `[denylist]`: the watched revocation file and how stale a Redis-fed copy may get.

use toml::Spanned;

use super::Validator;
use crate::config::raw;
use crate::config::DenylistConfig;

impl Validator<'_> {
    /// `with_redis`: whether `[redis]` is written (only a Redis-fed denylist goes stale).
    pub(super) fn denylist(
        &mut self,
        raw: &Spanned<raw::RawDenylist>,
        with_redis: bool,
    ) -> DenylistConfig {
        let d = raw.get_ref();
        if let (Some(m), false) = (&d.max_staleness, with_redis) {
            self.error(
                m,
                "[denylist] max_staleness needs [redis]: only a denylist fed by Redis can go stale (the file is local)",
            );
        }
        let max_staleness = d
            .max_staleness
            .is_some()
            .then(|| {
                self.duration(
                    &d.max_staleness,
                    "[denylist] max_staleness",
                    Default::default(),
                )
            })
            .filter(|d| !d.is_zero());
        DenylistConfig {
            file: d.file.as_ref().map(|f| self.file(f)),
            max_staleness,
        }
    }
}
