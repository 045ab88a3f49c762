//! Fully qualified path names: parsing, lexical normalisation and validation.
//!
//! Every file and directory is named by its full path, as in the paper (§4.4): there
//! is no directory traversal, so a path is checked once, here, and then looked up
//! directly. Rules, each with a stable status:
//!
//! - Names are UTF-8 (non-UTF-8 bytes: `InvalidPath`) without NUL bytes (`InvalidPath`).
//! - The empty path is `InvalidPath`; repeated slashes collapse and a trailing slash is
//!   ignored, as in POSIX.
//! - `.` components are dropped and `..` removes the previous component; `..` above
//!   the root is `InvalidPath`. Normalisation is lexical: `a/b/../c` is `a/c` whether
//!   or not `a/b` exists.
//! - A component longer than [`NAME_BYTES_MAX`] or a path (as given, or after joining
//!   a relative path to the current directory) longer than [`PATH_BYTES_MAX`] is
//!   `NameTooLong`.
//!
//! The first component of a path is a user name: `/<user>/...` lives on that user's
//! home partition. The root `/` itself is virtual.

use std::fmt;
use tabos_transport::Status;

/// Longest name of one directory entry, in bytes.
pub const NAME_BYTES_MAX: usize = 255;
/// Longest path, in bytes.
pub const PATH_BYTES_MAX: usize = 4096;

/// A normalised absolute path: `/`, or `/c1/c2/...` with every component a valid name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FsPath {
    text: String,
}

impl fmt::Debug for FsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for FsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Check one path component: not empty, at most [`NAME_BYTES_MAX`] bytes, no `/` and
/// no NUL, and not `.` or `..`.
pub fn check_name(name: &str) -> Result<(), Status> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Status::InvalidPath);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(Status::NameTooLong);
    }
    Ok(())
}

impl FsPath {
    /// The root directory `/`.
    pub fn root() -> FsPath {
        FsPath {
            text: "/".to_string(),
        }
    }

    /// Parse an absolute path (starting with `/`); see the module rules.
    pub fn parse(text: &str) -> Result<FsPath, Status> {
        if text.len() > PATH_BYTES_MAX {
            return Err(Status::NameTooLong);
        }
        if !text.starts_with('/') {
            return Err(Status::InvalidPath);
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(Status::InvalidPath);
                    }
                }
                name => {
                    check_name(name)?;
                    parts.push(name);
                }
            }
        }
        let mut out = String::with_capacity(text.len());
        for part in &parts {
            out.push('/');
            out.push_str(part);
        }
        if out.is_empty() {
            out.push('/');
        }
        // Normalisation only drops bytes, so the result is as bounded as the input.
        assert!(out.len() <= text.len(), "normalising lengthened {text:?}");
        assert!(out.starts_with('/'), "a normalised path is absolute");
        Ok(FsPath { text: out })
    }

    /// Parse untrusted bytes: not UTF-8 is `InvalidPath`.
    pub fn parse_bytes(bytes: &[u8]) -> Result<FsPath, Status> {
        if bytes.len() > PATH_BYTES_MAX {
            return Err(Status::NameTooLong);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| Status::InvalidPath)?;
        FsPath::parse(text)
    }

    /// `text` resolved against the directory `cwd`: an absolute path as it is, a
    /// relative one appended to `cwd` first.
    pub fn resolve(cwd: &FsPath, text: &str) -> Result<FsPath, Status> {
        if text.starts_with('/') {
            return FsPath::parse(text);
        }
        if text.is_empty() {
            return Err(Status::InvalidPath);
        }
        let joined = format!("{}/{}", cwd.text, text);
        FsPath::parse(&joined)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_root(&self) -> bool {
        self.text == "/"
    }

    /// Number of components: 0 for `/`, 1 for a home directory `/<user>`.
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The components, first to last.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.text.split('/').filter(|c| !c.is_empty())
    }

    /// The first component: the user whose tree holds the path. `None` for `/`.
    pub fn user(&self) -> Option<&str> {
        self.components().next()
    }

    /// The parent directory's path text (`/` for a home directory); `None` for `/`.
    /// This is the `d_name` of the path's directory entry.
    pub fn parent_str(&self) -> Option<&str> {
        if self.is_root() {
            return None;
        }
        let cut = self.text.rfind('/').expect("an absolute path has a slash");
        Some(if cut == 0 { "/" } else { &self.text[..cut] })
    }

    /// The parent directory; `None` for `/`.
    pub fn parent(&self) -> Option<FsPath> {
        self.parent_str().map(|p| FsPath {
            text: p.to_string(),
        })
    }

    /// The last component: the `content` of the path's directory entry. `None` for `/`.
    pub fn name(&self) -> Option<&str> {
        if self.is_root() {
            return None;
        }
        let cut = self.text.rfind('/').expect("an absolute path has a slash");
        Some(&self.text[cut + 1..])
    }

    /// This path with `name` appended.
    pub fn join(&self, name: &str) -> Result<FsPath, Status> {
        check_name(name)?;
        let text = if self.is_root() {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.text)
        };
        if text.len() > PATH_BYTES_MAX {
            return Err(Status::NameTooLong);
        }
        Ok(FsPath { text })
    }

    /// Whether `self` is `dir` or lies below it.
    pub fn is_within(&self, dir: &FsPath) -> bool {
        is_within_str(&self.text, &dir.text)
    }

    /// Build from text that is already a normalised path (table rows), checked in
    /// debug builds.
    pub fn from_normalised(text: String) -> FsPath {
        debug_assert_eq!(
            FsPath::parse(&text).map(|p| p.text),
            Ok(text.clone()),
            "not a normalised path"
        );
        FsPath { text }
    }
}

/// Whether the normalised path `path` is `dir` or lies below it.
pub fn is_within_str(path: &str, dir: &str) -> bool {
    if dir == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(dir) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `path` (within `from`) moved to lie at the same place within `to`.
pub fn rebase_str(path: &str, from: &str, to: &str) -> String {
    assert!(is_within_str(path, from), "{path:?} is not within {from:?}");
    assert!(from != "/", "the root is never renamed");
    format!("{to}{}", &path[from.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<String, Status> {
        FsPath::parse(text).map(|p| p.text)
    }

    #[test]
    fn normalises_lexically() {
        assert_eq!(p("/"), Ok("/".into()));
        assert_eq!(p("//"), Ok("/".into()));
        assert_eq!(p("/alice"), Ok("/alice".into()));
        assert_eq!(p("/alice/"), Ok("/alice".into()));
        assert_eq!(p("/alice//a/./b"), Ok("/alice/a/b".into()));
        assert_eq!(p("/alice/a/b/../c"), Ok("/alice/a/c".into()));
        assert_eq!(p("/alice/.."), Ok("/".into()));
        assert_eq!(p("/alice/../bob/x"), Ok("/bob/x".into()));
        assert_eq!(p("/alice/h\u{e9}llo w"), Ok("/alice/h\u{e9}llo w".into()));
    }

    #[test]
    fn rejects_bad_paths_with_stable_statuses() {
        assert_eq!(p(""), Err(Status::InvalidPath));
        assert_eq!(p("alice"), Err(Status::InvalidPath));
        assert_eq!(p("/.."), Err(Status::InvalidPath));
        assert_eq!(p("/alice/../.."), Err(Status::InvalidPath));
        assert_eq!(p("/alice/a\0b"), Err(Status::InvalidPath));
        let long = "x".repeat(NAME_BYTES_MAX + 1);
        assert_eq!(p(&format!("/alice/{long}")), Err(Status::NameTooLong));
        let ok = "x".repeat(NAME_BYTES_MAX);
        assert!(p(&format!("/alice/{ok}")).is_ok());
        let deep = "/a".repeat(PATH_BYTES_MAX / 2 + 1);
        assert_eq!(p(&deep), Err(Status::NameTooLong));
        assert_eq!(
            FsPath::parse_bytes(b"/alice/\xff\xfe"),
            Err(Status::InvalidPath)
        );
        assert_eq!(check_name("a/b"), Err(Status::InvalidPath));
        assert_eq!(check_name(".."), Err(Status::InvalidPath));
        assert_eq!(check_name(""), Err(Status::InvalidPath));
    }

    #[test]
    fn resolves_relative_paths_against_the_current_directory() {
        let cwd = FsPath::parse("/alice/docs").unwrap();
        let r = |t: &str| FsPath::resolve(&cwd, t).map(|p| p.text);
        assert_eq!(r("a"), Ok("/alice/docs/a".into()));
        assert_eq!(r("./a/../b"), Ok("/alice/docs/b".into()));
        assert_eq!(r(".."), Ok("/alice".into()));
        assert_eq!(r("../../bob"), Ok("/bob".into()));
        assert_eq!(r("../../.."), Err(Status::InvalidPath));
        assert_eq!(r("/x"), Ok("/x".into()));
        assert_eq!(r(""), Err(Status::InvalidPath));
        let root = FsPath::root();
        assert_eq!(
            FsPath::resolve(&root, "alice").map(|p| p.text),
            Ok("/alice".into())
        );
    }

    #[test]
    fn splits_into_parent_name_and_user() {
        let path = FsPath::parse("/alice/a/b").unwrap();
        assert_eq!(path.user(), Some("alice"));
        assert_eq!(path.parent_str(), Some("/alice/a"));
        assert_eq!(path.name(), Some("b"));
        assert_eq!(path.depth(), 3);
        let home = FsPath::parse("/alice").unwrap();
        assert_eq!(home.parent_str(), Some("/"));
        assert_eq!(home.name(), Some("alice"));
        assert_eq!(FsPath::root().parent_str(), None);
        assert_eq!(FsPath::root().user(), None);
        assert_eq!(FsPath::root().join("bob").unwrap().as_str(), "/bob");
        assert_eq!(home.join("x").unwrap().as_str(), "/alice/x");
        assert_eq!(home.join(".."), Err(Status::InvalidPath));
    }

    #[test]
    fn containment_respects_component_boundaries() {
        assert!(is_within_str("/alice/a", "/alice/a"));
        assert!(is_within_str("/alice/a/b", "/alice/a"));
        assert!(!is_within_str("/alice/ab", "/alice/a"));
        assert!(is_within_str("/alice", "/"));
        assert_eq!(
            rebase_str("/alice/a/b/c", "/alice/a", "/alice/z"),
            "/alice/z/b/c"
        );
        assert_eq!(rebase_str("/alice/a", "/alice/a", "/alice/z"), "/alice/z");
    }

    /// Random bytes never panic the parser, and whatever parses is a fixed point.
    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let alphabet = [b'/', b'.', b'a', b'\0', 0xff, 0xc3, 0xa9];
        for _ in 0..5000 {
            let len = rng.gen_range(0..24);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            if let Ok(path) = FsPath::parse_bytes(&bytes) {
                assert_eq!(FsPath::parse(path.as_str()).as_ref(), Ok(&path));
                assert!(path.as_str().starts_with('/'));
            }
        }
    }
}
