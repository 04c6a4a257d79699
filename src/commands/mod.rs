//! What each `jwtgate` subcommand does, behind the argument parsing in `main.rs`: every
//! function returns a result, and `main` turns it into the exit code.

mod check;
mod demo;
mod explain;
mod healthcheck;
mod revoke;
mod serve;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::alg::Alg;
use crate::config::ConfigErrors;
use crate::{App, Snapshot};

pub use check::check;
pub use explain::{explain, Credentials};
pub use healthcheck::healthcheck;
pub use revoke::{revoke, RevokeArgs};
pub use serve::serve;

/// Why a command failed; its `Display` is what the command prints on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The config, its keys or certificates did not load: every error, located, one a line.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A command-specific failure, prefixed with the command's name.
    #[error("jwtgate {command}: {message}")]
    Command {
        command: &'static str,
        message: String,
    },
    /// Starting the runtime or serving failed; the message carries its context chain.
    #[error("jwtgate: {0:#}")]
    Fatal(#[from] anyhow::Error),
}

impl CommandError {
    fn command(command: &'static str, message: impl Into<String>) -> CommandError {
        CommandError::Command {
            command,
            message: message.into(),
        }
    }
}

/// `jwtgate dev-token`: mints a token with the key in `key` (see [`crate::devtoken::mint`]).
pub fn dev_token(
    key: &Path,
    alg: &str,
    kid: Option<&str>,
    claims: Option<&str>,
    ttl: Duration,
) -> Result<String, CommandError> {
    let alg = alg
        .parse::<Alg>()
        .map_err(|e| CommandError::command("dev-token", e.to_string()))?;
    crate::devtoken::mint(key, alg, kid, claims, ttl)
        .map_err(|e| CommandError::command("dev-token", e.to_string()))
}

/// `jwtgate assertion-jwks`: the JWKS of the config's `[assertion]` keys, for backends that
/// read their keys from a file rather than from the admin listener.
pub fn assertion_jwks(config: &Path) -> Result<String, CommandError> {
    let c = crate::Config::load(config)?;
    let a = c.assertion.as_ref().ok_or_else(|| {
        CommandError::command(
            "assertion-jwks",
            format!("{} has no [assertion] section", config.display()),
        )
    })?;
    crate::assertion::jwks_of_config(a)
        .map(|jwks| jwks + "\n")
        .map_err(|e| CommandError::Config(ConfigErrors(vec![c.error(a.keys_loc, e.to_string())])))
}

/// The async runtime: one worker per CPU this process may use, or `TOKIO_WORKER_THREADS`.
/// With a single worker (a one-CPU container or a pinned process) it is a current-thread
/// runtime: the same work without the work-stealing scheduler's cross-thread hand-offs,
/// measurably less CPU per request (benches/README.md).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Builds a runtime, loads the config whole (every error reported), and runs `f` on it.
fn with_loaded<T, F, Fut>(path: &Path, f: F) -> Result<T, CommandError>
where
    F: FnOnce(Arc<Snapshot>) -> Fut,
    Fut: std::future::Future<Output = Result<T, CommandError>>,
{
    let rt = runtime()?;
    rt.block_on(async {
        let app = App::load(path)?;
        f(app.state.load_full()).await
    })
}
