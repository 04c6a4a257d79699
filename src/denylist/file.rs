//! The `[denylist] file`: JSON lines managed like config. A bad line is skipped and reported
//! with its number, never a reason to drop the other entries.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::entry::{Entry, EntryError};
use super::index::Layer;
use crate::files::{read_capped, ReadError};

/// A million entries take about 100 MB of JSON lines; past this the file is refused (and the
/// entries last read from it keep applying).
pub const MAX_DENYLIST_FILE_BYTES: u64 = 512 << 20;

/// A line that is not an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    pub error: EntryError,
}

/// What reading the file gave.
#[derive(Debug, Default)]
pub struct Loaded {
    pub layer: Layer,
    pub skipped: Vec<BadLine>,
    /// The file could not be read at all (a missing file is empty, not an error).
    pub error: Option<ReadError>,
}

/// Parses JSON-lines text; blank lines and lines starting with `#` are ignored.
pub fn parse(text: &str) -> (Layer, Vec<BadLine>) {
    let mut layer = Layer::default();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match Entry::parse(line) {
            Ok(e) => layer.insert(&e),
            Err(error) => skipped.push(BadLine { line: i + 1, error }),
        }
    }
    (layer, skipped)
}

/// Reads and parses the file at `path`; a file that does not exist (yet) holds no entry.
pub fn load(path: &Path) -> Loaded {
    match read_capped(path, MAX_DENYLIST_FILE_BYTES) {
        Ok(bytes) => {
            // A line with invalid UTF-8 is one bad line, not a bad file.
            let text = String::from_utf8_lossy(&bytes);
            let (layer, skipped) = parse(&text);
            Loaded {
                layer,
                skipped,
                error: None,
            }
        }
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Loaded::default(),
        Err(e) => Loaded {
            error: Some(e),
            ..Loaded::default()
        },
    }
}

/// What identifies the file's content cheaply: a change to any of these is a change of file
/// (an editor's rename, a Kubernetes `..data` flip, an append).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
    device: u64,
}

/// The file's stamp, following symbolic links (re-read by path every time); `None` when it
/// cannot be looked at.
pub fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
        device: m.dev(),
    })
}

/// Appends `entry` as one line, creating the file when missing; a last line without its
/// newline gets one first, so the entry never joins it.
pub fn append(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let mut line = String::new();
    if f.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&entry.to_json());
    line.push('\n');
    // One write of a whole line on an O_APPEND file: concurrent appenders never interleave.
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_skipped_with_their_numbers() {
        let (layer, skipped) = parse(
            "{\"issuer\":\"corp\",\"jti\":\"a\",\"until\":9}\n\n# a comment\n{oops\n{\"issuer\":\"corp\",\"sub\":\"b\"}\n",
        );
        assert_eq!(layer.counts(), [1, 1, 0]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].line, 4);
    }

    #[test]
    fn append_adds_a_line_even_after_one_without_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("deny.jsonl");
        std::fs::write(&p, "{\"issuer\":\"corp\",\"jti\":\"a\"}").expect("write");
        let e = Entry::parse(r#"{"issuer":"corp","jti":"b","until":5}"#).expect("entry");
        append(&p, &e).expect("append");
        let loaded = load(&p);
        assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
        assert_eq!(loaded.layer.counts(), [2, 0, 0]);
        assert!(load(&dir.path().join("missing")).error.is_none());
    }
}
