//! Config errors, each naming the file and, where the file has one, the line and column.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// An invalid or unreadable config. The command line maps it to exit status 78.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A problem at a known place in the file.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: PathBuf, line: usize, column: usize, message: String },
    /// A problem that belongs to no line, such as an unusable host name.
    #[error("{path}: {message}")]
    Unlocated { path: PathBuf, message: String },
    /// A file or folder that the config names and that is not there.
    #[error("{path}: {key} {target} does not exist or cannot be accessed")]
    MissingFile {
        path: PathBuf,
        key: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ConfigError {
    /// Builds an error at byte `span` of `text`, the contents of the config file at `path`.
    pub(crate) fn at(path: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(text, span.start);
        ConfigError::Invalid { path: path.to_path_buf(), line, column, message: message.into() }
    }

    pub(crate) fn unlocated(path: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError::Unlocated { path: path.to_path_buf(), message: message.into() }
    }
}

/// Converts a byte offset into a 1-based line and a 1-based column counted in characters.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_column(text, 9), (2, 3));
        assert_eq!(line_column(text, 1000), (3, 1));
    }
}
