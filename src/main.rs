//! The `jwtgate` command: argument parsing, logging and exit codes; what each subcommand does
//! is in [`jwtgate::commands`].
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jwtgate::commands::{self, CommandError};

/// The allocator trial (issue 18): mimalloc instead of the system allocator, with
/// `--features mimalloc` only.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// A session cookie instead of a token: the `__Host-jwtgate` value, or a whole Cookie
        /// header; opened with [session] cookie_keys_file.
        #[arg(long, conflicts_with = "token")]
        cookie: Option<String>,
        /// A DPoP proof: the token is then checked as `Authorization: DPoP` with this proof.
        #[arg(long)]
        dpop: Option<String>,
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
    /// Print the JWKS of the [assertion] keys (the public keys backends verify assertions with).
    AssertionJwks,
    /// Revoke a token (--jti), a subject's tokens (--sub) or an IdP session (--sid), or list
    /// every entry in effect (--list). Writes to Redis with [redis], else to the [denylist] file.
    Revoke(commands::RevokeArgs),
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
    let mut cli = Cli::parse();
    match cli.command.take().unwrap_or(Command::Run) {
        Command::DevToken {
            key,
            alg,
            kid,
            claims,
            ttl,
        } => print_or_fail(
            commands::dev_token(&key, &alg, kid.as_deref(), claims.as_deref(), ttl)
                .map(|token| token + "\n"),
        ),
        Command::Check => print_or_fail(commands::check(&cli.config)),
        Command::AssertionJwks => print_or_fail(commands::assertion_jwks(&cli.config)),
        Command::Revoke(args) => print_or_fail(commands::revoke(&cli.config, args)),
        Command::Run => serve(&cli, false),
        Command::Demo => serve(&cli, true),
        Command::Healthcheck { addr, live } => {
            exit_code(commands::healthcheck(&cli.config, addr, live))
        }
        Command::Explain {
            token,
            cookie,
            dpop,
            method,
            host,
            json,
            path,
        } => match commands::explain(
            &cli.config,
            commands::Credentials {
                token,
                cookie,
                dpop,
            },
            &method,
            &host,
            &path,
            json,
        ) {
            Ok((report, forwarded)) => {
                print!("{report}");
                // Exit 0 when the request would be forwarded, 2 when the gateway would refuse it.
                if forwarded {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                }
            }
            Err(e) => exit_code::<()>(Err(e)),
        },
    }
}

/// `run` and `demo`: the only commands that log.
fn serve(cli: &Cli, demo: bool) -> ExitCode {
    jwtgate::logging::init(&cli.log_format, &cli.log_level);
    let result = commands::serve(&cli.config, demo);
    // Lines logged before the exit (the drain included) reach stdout first.
    jwtgate::logging::flush();
    exit_code(result)
}

/// Prints a command's output on stdout (exit 0), or its error on stderr (exit 1).
fn print_or_fail(result: Result<String, CommandError>) -> ExitCode {
    exit_code(result.map(|out| print!("{out}")))
}

/// Exit 0 on success; otherwise the error on stderr and exit 1.
fn exit_code<T>(result: Result<T, CommandError>) -> ExitCode {
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
