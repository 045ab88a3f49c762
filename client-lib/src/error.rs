//! What can go wrong in a call: the transport (no server, a broken connection), or a
//! business status from the procedure, with its stable numeric code.

use tabos_transport::Status;

/// Error of a client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Could not reach the server, or the connection broke. Says what to do.
    Transport(String),
    /// The server answered with a non-`Ok` status.
    Status(Status),
    /// The server answered with a status code this client does not know.
    UnknownStatus(u32),
}

impl Error {
    /// The business status, if this is one.
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Status(s) => Some(*s),
            _ => None,
        }
    }

    pub(crate) fn from_code(code: u32) -> Error {
        match Status::from_code(code) {
            Some(s) => Error::Status(s),
            None => Error::UnknownStatus(code),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Transport(why) => write!(f, "{why}"),
            Error::Status(s) => write!(f, "{s}"),
            Error::UnknownStatus(code) => write!(f, "unknown status {code} (newer server?)"),
        }
    }
}

impl std::error::Error for Error {}
