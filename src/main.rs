//! The `jwtgate` command: argument parsing, logging, signals and exit codes.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use jwtgate::alg::Alg;
use jwtgate::{App, Config, Snapshot};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(name = "jwtgate", version, about = "JWT-verifying reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "JWTGATE_CONFIG",
        default_value = "gateway.toml"
    )]
    config: PathBuf,
    /// Log format.
    #[arg(long, global = true, env = "JWTGATE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    /// Log level (error, warn, info, debug); `JWTGATE_LOG` takes a full filter and wins.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic (the default).
    Run,
    /// Validate the config, load every key and certificate, fetch every JWKS URL; exit 1 with
    /// every error.
    Check,
    /// Mint a signed token for tests and quick starts.
    DevToken {
        /// PEM private key (PKCS#8) or HMAC secret file.
        #[arg(long)]
        key: PathBuf,
        /// Signing algorithm, e.g. ES256, RS256, HS256.
        #[arg(long)]
        alg: String,
        /// Key id to put in the header.
        #[arg(long)]
        kid: Option<String>,
        /// Extra or overriding claims, as a JSON object.
        #[arg(long)]
        claims: Option<String>,
        /// Lifetime, e.g. 15m.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Dry-run one request: the route chosen and why, every verification step, the headers the
    /// upstream would receive. Sends no traffic (a jwks_url issuer may fetch its keys).
    Explain {
        /// The token to check ("-" reads it from standard input); leave out for none.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = "localhost")]
        host: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Request path, with an optional query.
        path: String,
    },
    /// Run the shipped config with a built-in echo upstream and print a curl command to try.
    Demo,
    /// Exit 0 when the running gateway's admin listener reports ready (for exec probes).
    Healthcheck {
        /// Admin address; default: [admin] addr from the config.
        #[arg(long)]
        addr: Option<String>,
        /// Check liveness (/healthz) instead of readiness (/readyz).
        #[arg(long)]
        live: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::DevToken {
            key,
            alg,
            kid,
            claims,
            ttl,
        } => dev_token(&key, &alg, kid.as_deref(), claims.as_deref(), ttl),
        Command::Check => check(&cli.config),
        Command::Run => serve(&cli.config, &cli.log_format, &cli.log_level, false),
        Command::Demo => serve(&cli.config, &cli.log_format, &cli.log_level, true),
        Command::Healthcheck { addr, live } => healthcheck(&cli.config, addr, live),
        Command::Explain {
            token,
            method,
            host,
            json,
            path,
        } => explain(&cli.config, token, &method, &host, &path, json),
    }
}

fn dev_token(
    key: &Path,
    alg: &str,
    kid: Option<&str>,
    claims: Option<&str>,
    ttl: Duration,
) -> ExitCode {
    let result = alg
        .parse::<Alg>()
        .map_err(anyhow::Error::from)
        .and_then(|alg| Ok(jwtgate::devtoken::mint(key, alg, kid, claims, ttl)?));
    match result {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jwtgate dev-token: {e}");
            ExitCode::FAILURE
        }
    }
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

/// Builds a runtime, loads the config whole (printing every error), and runs `f` on it.
fn with_loaded<F, Fut>(path: &Path, f: F) -> ExitCode
where
    F: FnOnce(Arc<Snapshot>) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jwtgate: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match App::load(path) {
            Ok(app) => f(app.state.load_full()).await,
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        }
    })
}

fn check(path: &Path) -> ExitCode {
    with_loaded(path, |snap| async move {
        // `check` fetches every JWKS URL once: a provider that cannot be reached is an error.
        let mut failed = false;
        for i in &snap.issuers {
            if !matches!(i.keys, jwtgate::auth::IssuerKeys::Remote(_)) {
                continue;
            }
            let fetched =
                jwtgate::keys::remote::fetch(&i.config.source, &i.config.algorithms).await;
            if let Err(e) = fetched {
                let msg = format!("issuer {:?}: {e}", i.config.name);
                eprintln!("{}", snap.config.error(i.config.source_loc, msg));
                failed = true;
            }
        }
        if failed {
            return ExitCode::FAILURE;
        }
        print!("{}", jwtgate::check::describe(&snap));
        ExitCode::SUCCESS
    })
}

fn explain(
    config: &Path,
    token: Option<String>,
    method: &str,
    host: &str,
    path: &str,
    json: bool,
) -> ExitCode {
    let token = match token.as_deref() {
        Some("-") => {
            let mut t = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut t) {
                eprintln!("jwtgate explain: reading the token from stdin: {e}");
                return ExitCode::FAILURE;
            }
            Some(t.trim().to_owned())
        }
        other => other.map(str::to_owned),
    };
    let Ok(method) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        eprintln!("jwtgate explain: {method:?} is not an HTTP method");
        return ExitCode::FAILURE;
    };
    with_loaded(config, |snap| async move {
        // A fresh process: give remote issuers their first fetch before judging the token.
        for r in snap.remote_keys() {
            r.first_attempt(Duration::from_secs(5)).await;
        }
        let report = jwtgate::explain::explain(&snap, token.as_deref(), &method, host, path).await;
        if json {
            match serde_json::to_string_pretty(&report) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("jwtgate explain: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            print!("{}", jwtgate::explain::render_text(&report));
        }
        // Exit 0 when the request would be forwarded, 2 when the gateway would refuse it.
        if report.status == 200 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        }
    })
}

fn serve(config: &Path, log_format: &str, log_level: &str, demo: bool) -> ExitCode {
    jwtgate::logging::init(log_format, log_level);
    let result = runtime().and_then(|rt| rt.block_on(serve_async(config, demo)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jwtgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT drains too, but for at most this long: someone is waiting at a terminal.
const SIGINT_GRACE: Duration = Duration::from_secs(2);

async fn serve_async(config_path: &Path, demo: bool) -> anyhow::Result<()> {
    // SIGHUP's default action kills the process: take it over before anything else.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let app = App::load(config_path).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    let app = Arc::new(app);
    let snapshot = app.state.load_full();
    let addr = snapshot.config.listen.addr;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the traffic listener on {addr}"))?;
    let admin = match &snapshot.config.admin {
        Some(a) => Some(
            TcpListener::bind(a.addr)
                .await
                .with_context(|| format!("binding the admin listener on {}", a.addr))?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if demo {
        let local = listener.local_addr()?;
        start_demo(&snapshot, config_path, local, stop_rx.clone()).await?;
    }
    let reloader = app.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            reloader.request_reload();
        }
    });
    let tls = snapshot.config.listen.tls.is_some();
    tracing::info!(%addr, tls, "jwtgate serving");
    drop(snapshot);
    let state = app.state.clone();
    let shutdown = async move {
        let sigint = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); false }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); true }
        };
        let _ = stop_tx.send(true);
        // The grace period of the config in effect now: a reload may have changed it.
        let grace = state.load().config.limits.shutdown_grace;
        if sigint {
            grace.min(SIGINT_GRACE)
        } else {
            grace
        }
    };
    let listeners = jwtgate::Listeners {
        traffic: listener,
        admin,
    };
    jwtgate::run(listeners, app, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// `jwtgate healthcheck`: exit 0 when the admin listener answers 200 on `/readyz` (or
/// `/healthz` with `--live`), for container probes and HEALTHCHECK with no shell or curl.
fn healthcheck(config: &Path, addr: Option<String>, live: bool) -> ExitCode {
    let addr = match addr {
        Some(a) => a,
        None => match Config::load(config) {
            Ok(Config { admin: Some(a), .. }) => {
                // A wildcard bind is reached on loopback.
                let mut sa = a.addr;
                if sa.ip().is_unspecified() {
                    sa.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                sa.to_string()
            }
            Ok(_) => {
                eprintln!("jwtgate healthcheck: the config has no [admin] addr; pass --addr");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let path = if live { "/healthz" } else { "/readyz" };
    match probe(&addr, path) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("jwtgate healthcheck: {path} answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("jwtgate healthcheck: {addr}{path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A blocking HTTP/1.0 GET with a 2 s budget, returning the status code.
fn probe(addr: &str, path: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(2);
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let sa: SocketAddr = addr.parse().map_err(|_| bad("not an IP:port"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    let line = std::str::from_utf8(&head[..n]).unwrap_or("");
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("not an HTTP answer"))
}

/// Starts the echo upstream on every loopback upstream the config names, and prints a token
/// and a curl command.
async fn start_demo(
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
        tokio::spawn(jwtgate::echo::serve(l, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        started.push(addr);
    }
    let base = config_path.parent().unwrap_or(Path::new(""));
    let key = base.join("certs/dev-signing-es256.key");
    let token = jwtgate::devtoken::mint(
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
