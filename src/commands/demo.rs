//! `jwtgate demo`: the echo upstream behind the shipped config, a token, commands to try.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::alg::Alg;
use crate::Snapshot;

/// Starts the echo upstream on every loopback upstream the config names, and prints a token
/// and commands to try. Every command works as printed, pasted into a shell in the directory
/// the demo was started from (paths relative to it; this binary by the path that reaches it,
/// since after `cargo run` there is no `jwtgate` on the PATH).
pub(super) async fn start(
    snapshot: &Snapshot,
    config_path: &Path,
    gateway_addr: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut started = Vec::new();
    for r in &snapshot.config.routes {
        let Ok(addr) = r.upstream.authority.as_str().parse::<SocketAddr>() else {
            continue;
        };
        if !addr.ip().is_loopback() || started.contains(&addr) {
            continue;
        }
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the demo echo upstream on {addr}"))?;
        let mut stop = stop.clone();
        tokio::spawn(crate::echo::serve(l, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        started.push(addr);
    }
    let base = config_path.parent().unwrap_or(Path::new(""));
    let key = base.join("certs/dev-signing-es256.key");
    let token = crate::devtoken::mint(
        &key,
        Alg::ES256,
        Some("dev-signing-es256"),
        Some(r#"{"email":"dev@example.com","scope":"orders:read","roles":["reader","demo"]}"#),
        Duration::from_secs(3600),
    )
    .with_context(|| format!("minting the demo token with {}", key.display()))?;
    let host = if gateway_addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", gateway_addr.port())
    } else {
        gateway_addr.to_string()
    };
    let (scheme, ca) = if snapshot.config.listen.tls.is_some() {
        let ca = base.join("certs/dev-ca.crt");
        (
            "https",
            format!(
                "--cacert {} ",
                shell_word(&shown(&ca).display().to_string())
            ),
        )
    } else {
        ("http", String::new())
    };
    let upstreams = started
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "\njwtgate demo: gateway on {scheme}://{host}, echo upstream on {upstreams}\n\
         Try it (the upstream echoes what it received, claim headers included):\n\n  \
         TOKEN={token}\n\n  \
         curl -s {ca}-H \"Authorization: Bearer $TOKEN\" {scheme}://{host}/api/orders/42\n  \
         curl -s {ca}--http2 -H \"Authorization: Bearer $TOKEN\" {scheme}://{host}/api/orders/42\n\n\
         Without the token the answer is 401, and explain says why:\n\n  \
         curl -si {ca}{scheme}://{host}/api/orders/42\n  \
         {jwtgate} explain --config {config} --token \"$TOKEN\" /api/orders/42\n\n\
         Press Ctrl-C to stop.\n",
        jwtgate = shell_word(&this_command()),
        config = shell_word(&shown(config_path).display().to_string()),
    );
    Ok(())
}

/// How to run this binary from the current directory: `jwtgate` when that name on the PATH
/// is this binary, else its path (relative to the current directory when inside it).
fn this_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "jwtgate".to_owned();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|dir| dir.join("jwtgate").canonicalize().is_ok_and(|p| p == exe))
    });
    if on_path {
        return "jwtgate".to_owned();
    }
    let shown = shown(&exe);
    if shown.is_relative() {
        // A bare relative name would be looked up on the PATH.
        Path::new(".").join(shown).display().to_string()
    } else {
        shown.display().to_string()
    }
}

/// `path` as the user should type it from the current directory: relative to it when the
/// path is inside it, else unchanged.
fn shown(path: &Path) -> PathBuf {
    // A relative path is already relative to the current directory.
    let Some(cwd) = path
        .is_absolute()
        .then(std::env::current_dir)
        .and_then(Result::ok)
    else {
        return path.to_owned();
    };
    let cwd = cwd.canonicalize().unwrap_or(cwd);
    match path.strip_prefix(&cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_owned(),
        _ => path.to_owned(),
    }
}

/// `word` quoted for a POSIX shell when it holds anything but plainly safe characters.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
