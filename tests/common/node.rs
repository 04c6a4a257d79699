//! The node side of the end-to-end tests: tests/oidc holds the scripts (oidc-provider and its
//! clients) and their npm packages (`npm ci --prefix tests/oidc`, which scripts/test.sh runs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// tests/oidc: the node scripts and their node_modules.
pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Panics, naming the package to install, unless node and the npm packages are there (a test
/// that needs them fails, never skips).
pub fn require_node() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "these tests need node (>= 20.19): install the `nodejs` package"
    );
    for package in ["oidc-provider", "openid-client", "dpop", "jose"] {
        assert!(
            oidc_dir().join("node_modules").join(package).is_dir(),
            "these tests need the npm package {package}: run `npm ci --prefix tests/oidc`"
        );
    }
}
