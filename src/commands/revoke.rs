//! `jwtgate revoke`: adds a denylist entry where the running gateways read it (Redis with
//! `[redis]`, else the `[denylist] file`), or lists every entry in effect.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{runtime, CommandError};
use crate::config::Config;
use crate::denylist::{parse_time, Denylist, Destination, Entry, Kind, Source};
use crate::metrics::Metrics;

/// `--until` when not given: a day, longer than access tokens live.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// What `jwtgate revoke` was asked, as typed (checked here, for messages that say what to
/// fix).
#[derive(Debug, Default, clap::Args)]
pub struct RevokeArgs {
    /// The issuer's name in the config.
    #[arg(long)]
    pub issuer: Option<String>,
    /// A token id.
    #[arg(long)]
    pub jti: Option<String>,
    /// A subject: its tokens issued before --before are refused (log out everywhere).
    #[arg(long)]
    pub sub: Option<String>,
    /// An IdP session id.
    #[arg(long)]
    pub sid: Option<String>,
    /// Unix seconds or RFC 3339; default now (--sub and --sid).
    #[arg(long)]
    pub before: Option<String>,
    /// When the entry drops out: Unix seconds or RFC 3339; default now + 24h.
    #[arg(long)]
    pub until: Option<String>,
    /// Print every entry in effect (file and Redis) instead.
    #[arg(long)]
    pub list: bool,
}

fn fail(message: impl Into<String>) -> CommandError {
    CommandError::command("revoke", message)
}

/// The entry `args` describe, checked against the config's issuers.
fn entry_of(args: RevokeArgs, config: &Config, now: u64) -> Result<Entry, CommandError> {
    let Some(issuer) = args.issuer else {
        return Err(fail(
            "--issuer NAME is required (the issuer's name in the config)",
        ));
    };
    if !config.issuers.iter().any(|i| i.name == issuer) {
        let names: Vec<_> = config.issuers.iter().map(|i| i.name.as_str()).collect();
        return Err(fail(format!(
            "issuer {issuer:?} is not in {}; its issuers are: {}",
            config.path.display(),
            names.join(", ")
        )));
    }
    let (kind, id) = match (args.jti, args.sub, args.sid) {
        (Some(id), None, None) => (Kind::Jti, id),
        (None, Some(id), None) => (Kind::Sub, id),
        (None, None, Some(id)) => (Kind::Sid, id),
        _ => {
            return Err(fail(
                "give exactly one of --jti ID, --sub SUB and --sid SID",
            ))
        }
    };
    let time = |s: Option<String>| s.map(|s| parse_time(&s).map_err(fail)).transpose();
    let before = time(args.before)?;
    let until = time(args.until)?.unwrap_or(now + DEFAULT_TTL.as_secs());
    let before = match kind {
        Kind::Jti if before.is_some() => {
            return Err(fail("--before applies to --sub and --sid only"));
        }
        Kind::Jti => None,
        // "Log out everywhere": the tokens issued until now.
        Kind::Sub | Kind::Sid => Some(before.unwrap_or(now)),
    };
    let entry = Entry {
        issuer,
        kind,
        id,
        before,
        until: Some(until),
    };
    entry.validate().map_err(|e| fail(e.to_string()))?;
    Ok(entry)
}

/// Runs `jwtgate revoke` on the config at `path`; returns what it prints.
pub fn revoke(path: &Path, args: RevokeArgs) -> Result<String, CommandError> {
    let config = Config::load(path)?;
    let list = args.list;
    if list
        && [
            &args.issuer,
            &args.jti,
            &args.sub,
            &args.sid,
            &args.before,
            &args.until,
        ]
        .iter()
        .any(|a| a.is_some())
    {
        return Err(fail("--list takes no other option"));
    }
    let entry = if list {
        None
    } else {
        let now = crate::unix_secs(crate::unix_now());
        Some(entry_of(args, &config, now)?)
    };
    let rt = runtime()?;
    rt.block_on(async move {
        // Adding an entry needs only the destination; listing reads every source.
        let denylist = if entry.is_some() {
            shell(config).await?
        } else {
            load(config).await?
        };
        match entry {
            None => Ok(listing(&denylist)),
            Some(e) => {
                let shown = e.to_string();
                let to = denylist.destination();
                if to == Destination::Memory {
                    return Err(fail(format!(
                        "{} has neither [redis] nor [denylist] file: there is nowhere the gateways would read the entry from",
                        path.display()
                    )));
                }
                denylist
                    .revoke(e)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                Ok(format!("revoked: {shown} (written to {to})\n"))
            }
        }
    })
}

/// A denylist for `config` holding every entry its sources hold now.
async fn load(config: Config) -> Result<Arc<Denylist>, CommandError> {
    let denylist = shell(config).await?;
    denylist
        .load_once()
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(denylist)
}

/// A denylist for `config` that has read nothing yet (enough to write where it says).
async fn shell(config: Config) -> Result<Arc<Denylist>, CommandError> {
    let metrics = Metrics::new();
    let store = match &config.redis {
        Some(r) => Some(
            crate::store::Store::open(r, &metrics).map_err(|e| fail(format!("[redis]: {e}")))?,
        ),
        None => None,
    };
    let state = Arc::new(ArcSwap::from_pointee(
        crate::Snapshot::build(config).map_err(CommandError::Config)?,
    ));
    let denylist = Arc::new(Denylist::new(state, metrics).with_store(store));
    denylist
        .load_once()
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(denylist)
}

/// One line per entry in effect: where it comes from, then its JSON line.
fn listing(denylist: &Denylist) -> String {
    let mut entries = denylist.entries();
    entries.sort_by(|(a, sa), (b, sb)| {
        (*sa as u8, &a.issuer, a.kind, &a.id).cmp(&(*sb as u8, &b.issuer, b.kind, &b.id))
    });
    let mut out = String::new();
    for (e, source) in entries {
        out.push_str(match source {
            Source::File => "file\t",
            Source::Shared => "redis\t",
        });
        out.push_str(&e.to_json());
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("no entry in effect\n");
    }
    out
}
