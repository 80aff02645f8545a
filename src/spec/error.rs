//! Spec errors and their rustc-style rendering.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What kind of problem a spec has; lets callers and tests branch without
/// matching on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The spec file could not be read.
    Io,
    /// The file's extension names no supported format.
    UnsupportedFormat,
    /// The file is not UTF-8.
    Encoding,
    /// TOML syntax, unknown keys, wrong types, missing required keys.
    Syntax,
    /// A name that is not `[A-Za-z][A-Za-z0-9_-]*` (at most 64 characters).
    InvalidName,
    /// A value out of range or malformed (ports, protocol, CIDR, count, URL…).
    InvalidValue,
    /// A key that is required in this context is missing.
    MissingField,
    /// A reference to a key pair, security group, host or resource that does
    /// not exist.
    UndefinedReference,
    /// A `depends_on` cycle.
    Cycle,
    /// Two definitions with the same name (a host and a key pair, say).
    DuplicateName,
    /// The same entry twice in one list, or a duplicate ingress rule.
    DuplicateEntry,
    /// Two keys that exclude each other, or neither of two alternatives.
    Conflict,
    /// A resource needs a provider that `[providers]` does not configure.
    MissingProvider,
    /// A host target no provider implements.
    UnsupportedTarget,
    /// A tag key reserved for prov or AWS.
    ReservedTag,
    /// A file the spec refers to (`public_key_file`, …) cannot be used.
    File,
}

/// One problem found in a spec, located by byte span in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diagnostic {
    /// The kind of problem.
    pub kind: ErrorKind,
    /// One-line message (without `error: `).
    pub message: String,
    /// Byte range in the source the carets go under.
    pub span: Range<usize>,
    /// `= help:` lines.
    pub help: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic without help lines.
    pub fn new(kind: ErrorKind, message: impl Into<String>, span: Range<usize>) -> Self {
        Self {
            kind,
            message: message.into(),
            span,
            help: Vec::new(),
        }
    }

    /// Adds a help line.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help.push(help.into());
        self
    }
}

/// A diagnostic resolved against its source: file, line, column and snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The kind of problem.
    pub kind: ErrorKind,
    /// One-line message (without `error: `).
    pub message: String,
    /// The spec file, as given by the caller.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// The text of the offending line (no line terminator).
    pub snippet: String,
    /// How many characters the carets cover (at least 1).
    pub width: usize,
    /// `= help:` lines.
    pub help: Vec<String>,
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("error: cannot read spec {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The extension names no supported format.
    #[error(
        "error: cannot load spec {}: unsupported spec format{}; supported formats: TOML (`.toml`), Nix (`.nix`, or a flake reference `PATH#ATTR`)",
        path.display(),
        extension_note(path)
    )]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// One or more located problems, in source order.
    #[error("{}", render_all(.0))]
    Invalid(Vec<Located>),
    /// Nix could not evaluate a `.nix` spec; its own message (with file and
    /// line) follows.
    #[error("error: cannot evaluate spec {source_name} with Nix:\n{message}")]
    Nix {
        /// The file or flake reference.
        source_name: String,
        /// Nix's error output.
        message: String,
    },
}

fn extension_note(path: &Path) -> String {
    match path.extension() {
        Some(ext) => format!(" `.{}`", ext.to_string_lossy()),
        None => " (no file extension)".to_owned(),
    }
}

impl SpecError {
    /// Line and column (1-based) of the first problem, when it has a location.
    #[must_use]
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            Self::Invalid(all) => all.first().map(|l| (l.line, l.col)),
            Self::Io { .. } | Self::UnsupportedFormat { .. } | Self::Nix { .. } => None,
        }
    }

    /// The kind of the first problem.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io { .. } | Self::Nix { .. } => ErrorKind::Io,
            Self::UnsupportedFormat { .. } => ErrorKind::UnsupportedFormat,
            Self::Invalid(all) => all.first().map_or(ErrorKind::Syntax, |l| l.kind),
        }
    }

    /// Every located problem, in source order (empty for I/O errors).
    #[must_use]
    pub fn diagnostics(&self) -> &[Located] {
        match self {
            Self::Invalid(all) => all,
            Self::Io { .. } | Self::UnsupportedFormat { .. } | Self::Nix { .. } => &[],
        }
    }

    /// Locates `diagnostics` in `source` (sorted by position, deduplicated).
    pub(crate) fn invalid(path: &Path, source: &str, mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by(|a, b| {
            (a.span.start, a.span.end, &a.message).cmp(&(b.span.start, b.span.end, &b.message))
        });
        diagnostics.dedup();
        let map = SourceMap::new(source);
        Self::Invalid(
            diagnostics
                .into_iter()
                .map(|d| map.locate(path, d))
                .collect(),
        )
    }
}

/// Line lookup over a source text.
struct SourceMap<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    fn new(source: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            source,
            line_starts,
        }
    }

    fn floor_char_boundary(&self, mut offset: usize) -> usize {
        offset = offset.min(self.source.len());
        while !self.source.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    fn locate(&self, path: &Path, d: Diagnostic) -> Located {
        let start = self.floor_char_boundary(d.span.start);
        let end = self.floor_char_boundary(d.span.end.max(start));
        let line_index = self.line_starts.partition_point(|&s| s <= start) - 1;
        let line_start = self.line_starts[line_index];
        let line_end = self.source[line_start..]
            .find('\n')
            .map_or(self.source.len(), |i| line_start + i);
        let snippet = self.source[line_start..line_end].trim_end_matches('\r');
        let col = self.source[line_start..start].chars().count() + 1;
        let width = self.source[start..end.min(line_end).max(start)]
            .trim_end_matches('\r')
            .chars()
            .count()
            .max(1);
        Located {
            kind: d.kind,
            message: d.message,
            file: path.to_owned(),
            line: line_index + 1,
            col,
            snippet: snippet.to_owned(),
            width,
            help: d.help,
        }
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        writeln!(f, "error: {}", self.message)?;
        writeln!(
            f,
            "{pad}--> {}:{}:{}",
            self.file.display(),
            self.line,
            self.col
        )?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{} | {}", self.line, self.snippet)?;
        // Keep tabs so the carets line up with the snippet.
        let indent: String = self
            .snippet
            .chars()
            .take(self.col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let missing = (self.col - 1).saturating_sub(indent.chars().count());
        let indent = indent + &" ".repeat(missing);
        write!(f, "{pad} | {indent}{}", "^".repeat(self.width))?;
        for help in &self.help {
            write!(f, "\n{pad} = help: {help}")?;
        }
        Ok(())
    }
}

fn render_all(all: &[Located]) -> String {
    let mut out = all
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n\n");
    if all.len() > 1 {
        out.push_str(&format!("\n\nerror: the spec has {} errors", all.len()));
    }
    out
}
