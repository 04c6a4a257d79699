//! Where things are in the config file: located errors, byte offsets to `line:col`, and the
//! keys `serde_ignored` reports as unknown, found again in the document and described.

use std::fmt;
use std::path::PathBuf;

/// Where in the config file something was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
}

/// One problem in the config, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub loc: Loc,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.loc.line,
            self.loc.col,
            self.message
        )
    }
}

/// Every problem found in a config, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// How far apart [`LineIndex`] keeps its char-count checkpoints, in bytes.
const CHECKPOINT_BYTES: usize = 1024;

/// Byte offsets in config text to `line:col`.
pub(super) struct LineIndex<'t> {
    text: &'t str,
    /// Byte offset of each line's start, so locating an offset is a binary search rather than
    /// a scan from the top (which made validation quadratic in the number of routes).
    line_starts: Vec<usize>,
    /// `(byte offset, chars before it)` at char boundaries about [`CHECKPOINT_BYTES`] apart: a
    /// column is counted from the nearest checkpoint, not from the line's start, which made
    /// validation quadratic again when every route sits on one line (an inline array of tables).
    checkpoints: Vec<(usize, usize)>,
}

impl<'t> LineIndex<'t> {
    /// Indexes `text`; linear in its length.
    pub(super) fn new(text: &'t str) -> Self {
        let mut checkpoints = vec![(0, 0)];
        let mut next = CHECKPOINT_BYTES;
        for (chars, (byte, _)) in text.char_indices().enumerate() {
            if byte >= next {
                checkpoints.push((byte, chars));
                next = byte + CHECKPOINT_BYTES;
            }
        }
        LineIndex {
            text,
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            checkpoints,
        }
    }

    /// The 1-based line and column (in chars) of a byte offset; past the end or inside a char
    /// it is the end of the text.
    pub(super) fn loc(&self, offset: usize) -> Loc {
        let offset = if self.text.is_char_boundary(offset.min(self.text.len())) {
            offset.min(self.text.len())
        } else {
            self.text.len()
        };
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self.chars_before(offset) - self.chars_before(start) + 1;
        Loc { line, col }
    }

    /// How many chars precede `offset`, a char boundary.
    fn chars_before(&self, offset: usize) -> usize {
        // The first checkpoint is (0, 0), so one is always at or before `offset`.
        let i = self
            .checkpoints
            .partition_point(|&(b, _)| b <= offset)
            .max(1);
        let (byte, chars) = self.checkpoints[i - 1];
        chars + self.text[byte..offset].chars().count()
    }
}

/// One step of a path into the TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn segments(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path as P;
    let mut out = match path {
        P::Root => return Vec::new(),
        P::Seq { parent, .. }
        | P::Map { parent, .. }
        | P::Some { parent }
        | P::NewtypeStruct { parent }
        | P::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        P::Seq { index, .. } => out.push(Seg::Index(*index)),
        // toml's Spanned wrapper shows up as private keys; they are not part of the document.
        P::Map { key, .. } if !key.starts_with("$__") => out.push(Seg::Key(key.clone())),
        _ => {}
    }
    out
}

/// The byte offset of the key (or array element) a path names.
pub(super) fn locate(table: &toml::de::DeTable<'_>, path: &[Seg]) -> Option<usize> {
    let (Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let (k, v) = table.get_key_value(first.as_str())?;
    if rest.is_empty() {
        return Some(k.span().start);
    }
    let mut value = v;
    for (i, seg) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        match (seg, value.get_ref()) {
            (Seg::Key(key), toml::de::DeValue::Table(t)) => {
                let (k, v) = t.get_key_value(key.as_str())?;
                if last {
                    return Some(k.span().start);
                }
                value = v;
            }
            (Seg::Index(n), toml::de::DeValue::Array(a)) => {
                value = a.get(*n)?;
                if last {
                    return Some(value.span().start);
                }
            }
            _ => return Some(value.span().start),
        }
    }
    Some(value.span().start)
}

/// `colour` in `[[issuer]]` #1 → "`colour` in [[issuer]] number 1".
pub(super) fn describe_path(path: &[Seg]) -> String {
    let name = match path.last() {
        Some(Seg::Key(k)) => k.as_str(),
        _ => "?",
    };
    let section: Vec<String> = path[..path.len().saturating_sub(1)]
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.clone()),
            Seg::Index(_) => None,
        })
        .collect();
    if name.contains("secret") || name.contains("password") {
        format!("{name:?}: secrets are never read from this file; use hmac_secret_env (environment) or hmac_secret_file (a mounted file)")
    } else if section.is_empty() {
        format!("{name:?} at the top level")
    } else {
        format!(
            "{name:?} in [{}] (a misspelled key would silently change behaviour, so it is refused)",
            section.join(".")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counting from the line's start, as before checkpoints: the reference.
    fn naive(text: &str, offset: usize) -> Loc {
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Loc {
            line: before.matches('\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
        }
    }

    #[test]
    fn checkpoints_give_the_columns_counted_from_the_line_start() {
        // Long lines of multi-byte chars put checkpoints mid-line and next to char boundaries.
        let long = "aé€😀".repeat(700);
        let text = format!("{long}\nshort\n\n{long}x\n{long}");
        let index = LineIndex::new(&text);
        assert!(index.checkpoints.len() > 10);
        for offset in (0..=text.len()).filter(|&o| text.is_char_boundary(o)) {
            assert_eq!(index.loc(offset), naive(&text, offset), "offset {offset}");
        }
        // Past the end, or inside a char ('é' starts at byte 1): the end of the text.
        assert_eq!(index.loc(text.len() + 5), naive(&text, text.len()));
        assert_eq!(index.loc(2), naive(&text, text.len()));
    }
}
