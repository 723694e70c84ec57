//! The `.cfg` text format: `[section]` headers followed by `key=value` lines.
//!
//! This module only splits the text and converts values, remembering the line
//! of every section and key so that later steps can point at them. Which keys
//! a section accepts is decided in [`super::layers`].

use std::collections::HashSet;
use std::path::Path;

use super::{DarknetError, InvalidValue};

/// One `key=value` line.
#[derive(Clone, Debug)]
pub struct CfgOption {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// One `[section]` with its options in file order.
#[derive(Clone, Debug)]
pub struct CfgSection {
    pub name: String,
    pub line: usize,
    pub options: Vec<CfgOption>,
}

/// A parsed cfg file: the sections in order, and the file name for messages.
#[derive(Clone, Debug)]
pub struct CfgFile {
    pub file: String,
    pub sections: Vec<CfgSection>,
}

impl CfgFile {
    /// Reads and splits a cfg file.
    ///
    /// # Errors
    /// The file cannot be read, or a line is neither a section header, a
    /// `key=value` pair, a comment nor blank.
    pub fn read(path: &Path) -> Result<CfgFile, DarknetError> {
        let bytes = std::fs::read(path).map_err(|source| DarknetError::Io {
            action: "reading cfg",
            path: path.display().to_string(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| DarknetError::Syntax {
            file: path.display().to_string(),
            line: 1,
            message: "this is not a darknet .cfg text file (ONNX models need the .onnx extension)".into(),
        })?;
        CfgFile::parse(&text, &path.display().to_string())
    }

    /// Splits cfg text; `file` names the source in error messages.
    pub fn parse(text: &str, file: &str) -> Result<CfgFile, DarknetError> {
        let mut sections: Vec<CfgSection> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim().trim_start_matches('\u{feff}');
            if content.is_empty() || content.starts_with('#') || content.starts_with(';') {
                continue;
            }

            if let Some(name) = content.strip_prefix('[') {
                let name = name.strip_suffix(']').ok_or_else(|| DarknetError::Syntax {
                    file: file.into(),
                    line,
                    message: format!("section header {content:?} is missing its closing ']'"),
                })?;
                sections.push(CfgSection { name: name.trim().to_string(), line, options: Vec::new() });
                continue;
            }

            let (key, value) = content.split_once('=').ok_or_else(|| DarknetError::Syntax {
                file: file.into(),
                line,
                message: format!("expected `key=value` or `[section]`, found {content:?}"),
            })?;
            let section = sections.last_mut().ok_or_else(|| DarknetError::Syntax {
                file: file.into(),
                line,
                message: format!("option {:?} appears before the first [section]", key.trim()),
            })?;
            section.options.push(CfgOption { key: key.trim().to_string(), value: value.trim().to_string(), line });
        }
        Ok(CfgFile { file: file.into(), sections })
    }
}

/// Reads the options of one section by key, tracking which keys were used so
/// that leftovers can be reported.
pub struct SectionReader<'a> {
    file: &'a str,
    section: &'a CfgSection,
    used: HashSet<&'a str>,
}

impl<'a> SectionReader<'a> {
    pub fn new(file: &'a str, section: &'a CfgSection) -> SectionReader<'a> {
        SectionReader { file, section, used: HashSet::new() }
    }

    pub fn section(&self) -> &'a CfgSection {
        self.section
    }

    /// Returns the last occurrence of `key`, as darknet lets a later line override an earlier one.
    pub fn raw(&mut self, key: &'a str) -> Option<&'a CfgOption> {
        self.used.insert(key);
        self.section.options.iter().rev().find(|option| option.key == key)
    }

    pub fn int(&mut self, key: &'a str, default: i64) -> Result<i64, DarknetError> {
        match self.raw(key) {
            None => Ok(default),
            Some(option) => option.value.parse::<i64>().map_err(|_| self.invalid(option, "an integer")),
        }
    }

    pub fn float(&mut self, key: &'a str, default: f32) -> Result<f32, DarknetError> {
        match self.raw(key) {
            None => Ok(default),
            Some(option) => option
                .value
                .parse::<f32>()
                .ok()
                .filter(|value| value.is_finite())
                .ok_or_else(|| self.invalid(option, "a number")),
        }
    }

    pub fn string(&mut self, key: &'a str, default: &'a str) -> &'a str {
        self.raw(key).map(|option| option.value.as_str()).unwrap_or(default)
    }

    /// Parses a comma-separated list of integers; `None` when the key is absent.
    pub fn int_list(&mut self, key: &'a str) -> Result<Option<Vec<i64>>, DarknetError> {
        let Some(option) = self.raw(key) else { return Ok(None) };
        let values = split_list(&option.value)
            .map(|item| item.parse::<i64>().map_err(|_| self.invalid(option, "a comma-separated list of integers")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(values))
    }

    /// Parses a comma-separated list of numbers; `None` when the key is absent.
    pub fn float_list(&mut self, key: &'a str) -> Result<Option<Vec<f32>>, DarknetError> {
        let Some(option) = self.raw(key) else { return Ok(None) };
        let values = split_list(&option.value)
            .map(|item| item.parse::<f32>().map_err(|_| self.invalid(option, "a comma-separated list of numbers")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(values))
    }

    /// Builds an error about the value of `option`, saying what was expected.
    pub fn invalid(&self, option: &CfgOption, expected: &str) -> DarknetError {
        DarknetError::Value(Box::new(InvalidValue {
            file: self.file.into(),
            line: option.line,
            section: self.section.name.clone(),
            key: option.key.clone(),
            value: option.value.clone(),
            expected: expected.into(),
        }))
    }

    /// Builds an error about the section as a whole.
    pub fn section_error(&self, message: String) -> DarknetError {
        DarknetError::Layer {
            file: self.file.into(),
            line: self.section.line,
            section: self.section.name.clone(),
            message,
        }
    }

    /// Rejects keys that were never read unless `ignored` lists them as
    /// training-only, so that nothing which changes inference is silently dropped.
    pub fn finish(self, ignored: &[&str]) -> Result<(), DarknetError> {
        for option in &self.section.options {
            if !self.used.contains(option.key.as_str()) && !ignored.contains(&option.key.as_str()) {
                return Err(DarknetError::UnsupportedKey {
                    file: self.file.into(),
                    line: option.line,
                    section: self.section.name.clone(),
                    key: option.key.clone(),
                });
            }
        }
        Ok(())
    }
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keep_their_lines() {
        let cfg = CfgFile::parse("# comment\n[net]\nwidth=416\n\n[convolutional]\nfilters = 32\n", "t.cfg").unwrap();
        assert_eq!(cfg.sections.len(), 2);
        assert_eq!(cfg.sections[0].line, 2);
        assert_eq!(cfg.sections[1].options[0].key, "filters");
        assert_eq!(cfg.sections[1].options[0].value, "32");
        assert_eq!(cfg.sections[1].options[0].line, 6);
    }

    #[test]
    fn garbage_line_names_file_and_line() {
        let error = CfgFile::parse("[net]\nwidth 416\n", "bad.cfg").unwrap_err().to_string();
        assert!(error.contains("bad.cfg:2"), "{error}");
    }

    #[test]
    fn option_before_section_is_rejected() {
        let error = CfgFile::parse("width=416\n[net]\n", "bad.cfg").unwrap_err().to_string();
        assert!(error.contains("bad.cfg:1"), "{error}");
        assert!(error.contains("before the first [section]"), "{error}");
    }
}
