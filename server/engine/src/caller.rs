//! Who is calling: established by the transport from the connection (SO_PEERCRED on
//! the local socket), never from an unchecked argument.

use std::fmt;

/// Longest user name (as Linux login names).
pub const USER_NAME_BYTES_MAX: usize = 32;

/// A user name stored inline, so a [`Caller`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserName {
    len: u8,
    bytes: [u8; USER_NAME_BYTES_MAX],
}

impl UserName {
    /// A valid user name: 1 to 32 bytes of ASCII letters, digits, `_`, `-` or `.`,
    /// not starting with `-` or `.`.
    pub fn new(name: &str) -> Option<UserName> {
        let ok_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.';
        let b = name.as_bytes();
        if b.is_empty() || b.len() > USER_NAME_BYTES_MAX || !b.iter().all(|c| ok_char(*c)) {
            return None;
        }
        if b[0] == b'-' || b[0] == b'.' {
            return None;
        }
        let mut bytes = [0u8; USER_NAME_BYTES_MAX];
        bytes[..b.len()].copy_from_slice(b);
        Some(UserName {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("validated at construction")
    }

    /// Whether this is the superuser.
    pub fn is_root(&self) -> bool {
        self.as_str() == "root"
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for UserName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for UserName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        UserName::new(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid user name {name:?}")))
    }
}

/// Who called: the task's user id, process id and user name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Kernel user id of the connection.
    pub uid: u32,
    /// Kernel process id of the connection.
    pub pid: u32,
    /// The user the call acts as: the uid's name, or the user root chose with `--as`.
    pub user: UserName,
}

impl Caller {
    /// The superuser, for tests and start-up.
    pub fn root() -> Caller {
        Caller {
            uid: 0,
            pid: 0,
            user: UserName::new("root").expect("valid"),
        }
    }

    /// A caller acting as `user` (tests).
    pub fn user(name: &str) -> Caller {
        Caller {
            uid: 1000,
            pid: 0,
            user: UserName::new(name).expect("valid user name"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_checked() {
        assert_eq!(UserName::new("alice").unwrap().as_str(), "alice");
        assert!(UserName::new("").is_none());
        assert!(UserName::new("-x").is_none());
        assert!(UserName::new("a/b").is_none());
        assert!(UserName::new(&"a".repeat(33)).is_none());
        assert!(UserName::new("root").unwrap().is_root());
    }
}
