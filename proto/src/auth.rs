//! Tokens: the token file, constant-time checks and the `Authorization:
//! Bearer` header ([`bearer`]).
//!
//! A token file holds one entry per line: `TOKEN` (any node may report with
//! it) or `NODE:TOKEN` (only node NODE may). Blank lines and lines starting
//! with `#` are ignored. Tokens are compared in constant time against every
//! entry (no early exit), and never logged.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq;

use crate::report::valid_node_name;

/// One entry of a token file.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    node: Option<String>,
    token: Vec<u8>,
}

/// The tokens the control plane accepts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    /// Never prints a token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// Who a valid token lets in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Any node name.
    AnyNode,
    /// Only this node.
    Node(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: {what}")]
    Syntax {
        path: String,
        line: usize,
        what: &'static str,
    },
    #[error("token file {path} holds no token; write one per line, `TOKEN` or `NODE:TOKEN`")]
    Empty { path: String },
    #[error("token file {path} has no token for node {node:?} (nor one without a node)")]
    NoTokenFor { path: String, node: String },
}

impl Tokens {
    /// Parses the text of a token file (`path` only names it in errors).
    pub fn parse(text: &str, path: &str) -> Result<Tokens, TokenFileError> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |what| TokenFileError::Syntax {
                path: path.into(),
                line: n + 1,
                what,
            };
            let (node, token) = match line.split_once(':') {
                Some((node, token)) if valid_node_name(node) => (Some(node.to_string()), token),
                _ => (None, line),
            };
            if token.is_empty() {
                return Err(syntax("empty token"));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(syntax(
                    "a token may not contain spaces or control characters",
                ));
            }
            if token.len() < 8 {
                return Err(syntax("token shorter than 8 characters"));
            }
            entries.push(Entry {
                node,
                token: token.as_bytes().to_vec(),
            });
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty { path: path.into() });
        }
        Ok(Tokens { entries })
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: p.clone(),
            source,
        })?;
        Tokens::parse(&text, &p)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What `presented` grants, comparing against every entry in constant
    /// time (per entry length) without stopping at a match.
    pub fn check(&self, presented: &[u8]) -> Option<Grant> {
        self.check_entry(presented).map(|(_, g)| g)
    }

    /// Like [`Tokens::check`], with the entry's index in the file: names the
    /// token (for its own rate limit) without holding or logging it.
    pub fn check_entry(&self, presented: &[u8]) -> Option<(usize, Grant)> {
        let mut found: Option<(usize, &Entry)> = None;
        for (k, e) in self.entries.iter().enumerate() {
            let eq: bool = e.token.as_slice().ct_eq(presented).into();
            if eq && found.is_none() {
                found = Some((k, e));
            }
        }
        found.map(|(k, e)| {
            (
                k,
                match &e.node {
                    Some(n) => Grant::Node(n.clone()),
                    None => Grant::AnyNode,
                },
            )
        })
    }

    /// The first token of the file, whatever its node (what a CLI sends to
    /// the read API).
    pub fn first(&self, path: &str) -> Result<String, TokenFileError> {
        self.entries
            .first()
            .map(|e| String::from_utf8_lossy(&e.token).into_owned())
            .ok_or_else(|| TokenFileError::Empty { path: path.into() })
    }

    /// The token a node sends: its `NODE:TOKEN` entry, else the first bare one.
    pub fn token_for(&self, node: &str, path: &str) -> Result<String, TokenFileError> {
        let e = self
            .entries
            .iter()
            .find(|e| e.node.as_deref() == Some(node))
            .or_else(|| self.entries.iter().find(|e| e.node.is_none()))
            .ok_or_else(|| TokenFileError::NoTokenFor {
                path: path.into(),
                node: node.into(),
            })?;
        Ok(String::from_utf8_lossy(&e.token).into_owned())
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer(headers: &http::HeaderMap) -> Option<&[u8]> {
    let v = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_check() {
        let t = Tokens::parse("# comment\n\nshared-token-1\ngw-a:secret-a-123\n", "f").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.check(b"shared-token-1"), Some(Grant::AnyNode));
        assert_eq!(t.check(b"secret-a-123"), Some(Grant::Node("gw-a".into())));
        assert_eq!(t.check(b"secret-a-12"), None);
        assert_eq!(t.check(b""), None);
        assert_eq!(t.token_for("gw-a", "f").unwrap(), "secret-a-123");
        assert_eq!(t.token_for("gw-b", "f").unwrap(), "shared-token-1");
        assert!(!format!("{t:?}").contains("secret"));
        assert!(Tokens::parse("\n# x\n", "f").is_err());
        assert!(Tokens::parse("short", "f").is_err());
        assert!(Tokens::parse("has space inside", "f").is_err());
        let only = Tokens::parse("gw-a:secret-a-123", "f").unwrap();
        assert!(only.token_for("gw-b", "f").is_err());
        assert_eq!(t.first("f").unwrap(), "shared-token-1");
    }

    /// The comparison is subtle's `ct_eq` over every entry, without an early
    /// exit: a presented token that differs from an entry only in its last
    /// byte, or is a prefix or an extension of it, is refused like any other;
    /// a later entry matches even after an earlier one did not.
    #[test]
    fn check_compares_every_entry_in_full() {
        let t = Tokens::parse("aaaaaaaa-1\nbbbbbbbb-2\ngw:cccccccc-3\n", "f").unwrap();
        for near in [
            &b"aaaaaaaa-2"[..],
            b"aaaaaaaa-",
            b"aaaaaaaa-11",
            b"Aaaaaaaa-1",
            b"aaaaaaaa-1\0",
            b"",
        ] {
            assert_eq!(t.check(near), None, "{near:?}");
        }
        assert_eq!(t.check(b"cccccccc-3"), Some(Grant::Node("gw".into())));
        assert_eq!(t.check(b"bbbbbbbb-2"), Some(Grant::AnyNode));
        // Duplicates: the first entry wins, the loop still runs over all.
        let d = Tokens::parse("gw:dddddddd-4\ndddddddd-4\n", "f").unwrap();
        assert_eq!(d.check(b"dddddddd-4"), Some(Grant::Node("gw".into())));
    }
}
