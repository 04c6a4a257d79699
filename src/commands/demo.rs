//! `jwtgate demo`: the echo upstream behind the shipped config, a token, commands to try.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::alg::Alg;
use crate::Snapshot;

/// Starts the echo upstream on every loopback upstream the config names, and prints a token
/// and a curl command.
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
        ("https", format!("--cacert {} ", ca.display()))
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
         jwtgate explain --config {} --token \"$TOKEN\" /api/orders/42\n\n\
         Press Ctrl-C to stop.\n",
        config_path.display()
    );
    Ok(())
}
