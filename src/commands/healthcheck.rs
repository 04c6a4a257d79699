//! `jwtgate healthcheck`: a probe of the running gateway's admin listener, for container
//! probes and HEALTHCHECK with no shell or curl.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::CommandError;
use crate::Config;

/// Succeeds when the admin listener answers 200 on `/readyz` (or `/healthz` with `live`).
pub fn healthcheck(config: &Path, addr: Option<String>, live: bool) -> Result<(), CommandError> {
    let addr = match addr {
        Some(a) => a,
        None => match Config::load(config)? {
            Config { admin: Some(a), .. } => {
                // A wildcard bind is reached on loopback.
                let mut sa = a.addr;
                if sa.ip().is_unspecified() {
                    sa.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                sa.to_string()
            }
            _ => {
                return Err(CommandError::command(
                    "healthcheck",
                    "the config has no [admin] addr; pass --addr",
                ))
            }
        },
    };
    let path = if live { "/healthz" } else { "/readyz" };
    match probe(&addr, path) {
        Ok(200) => Ok(()),
        Ok(status) => Err(CommandError::command(
            "healthcheck",
            format!("{path} answered {status}"),
        )),
        Err(e) => Err(CommandError::command(
            "healthcheck",
            format!("{addr}{path}: {e}"),
        )),
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
