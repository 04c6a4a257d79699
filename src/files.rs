//! Reading the files the gateway depends on with a size cap each: a path pointed at a huge
//! file, `/dev/zero` or a FIFO must give a clear error, never unbounded memory or a hang.

use std::io::Read;
use std::path::Path;

/// The config file (`gateway.toml`); 100,000 routes fit well inside it.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// A JWKS file: the same cap as a fetched JWKS or discovery document.
pub const MAX_JWKS_FILE_BYTES: u64 = 1 << 20;
/// A PEM public key file, or a secret file (`hmac_secret_file`, `dev-token --key`).
pub const MAX_KEY_FILE_BYTES: u64 = 64 << 10;
/// A certificate chain, a private key or a CA bundle (a full system bundle is about 220 KiB).
pub const MAX_CERT_FILE_BYTES: u64 = 4 << 20;

/// Why a capped read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file (a device, FIFO, socket or directory); point it at a file")]
    NotAFile,
    #[error("larger than the {cap}-byte limit for this kind of file")]
    TooLarge { cap: u64 },
}

/// Reads a regular file of at most `cap` bytes. Symbolic links are followed (Kubernetes mounts
/// are links). Anything that is not a regular file is refused before it is opened, since
/// opening a FIFO blocks until a writer appears; the opened handle is checked again.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(ReadError::NotAFile);
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    if meta.len() > cap {
        return Err(ReadError::TooLarge { cap });
    }
    // The length can change between the stat and the read (or lie, as /proc files do): the
    // `take` is what bounds memory.
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(ReadError::TooLarge { cap });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_special_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, vec![b'a'; 100]).expect("write");
        assert_eq!(read_capped(&f, 100).expect("at the cap").len(), 100);
        assert!(matches!(
            read_capped(&f, 99),
            Err(ReadError::TooLarge { cap: 99 })
        ));
        assert!(matches!(
            read_capped(Path::new("/dev/zero"), 10),
            Err(ReadError::NotAFile)
        ));
        assert!(matches!(
            read_capped(dir.path(), 10),
            Err(ReadError::NotAFile)
        ));
        assert!(matches!(
            read_capped(&dir.path().join("missing"), 10),
            Err(ReadError::Io(_))
        ));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(matches!(read_capped(&fifo, 10), Err(ReadError::NotAFile)));
        }
    }
}
