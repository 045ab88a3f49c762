//! Why a benchmark run failed: the server would not start or stop, a call failed, or
//! a baseline's I/O failed. Each carries what was being done.

/// Error of a benchmark run.
#[derive(Debug)]
pub enum Error {
    /// Starting, reaching or stopping tabosd.
    Server(String),
    /// A tabos call failed or answered something unexpected.
    Call {
        /// What the workload was doing.
        doing: String,
        /// What went wrong.
        why: String,
    },
    /// I/O of a baseline or of writing a report.
    Io {
        /// What was being done.
        doing: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// A failed call while `doing` something.
    pub fn call(doing: impl Into<String>, why: impl std::fmt::Display) -> Error {
        Error::Call {
            doing: doing.into(),
            why: why.to_string(),
        }
    }

    /// Failed I/O while `doing` something.
    pub fn io(doing: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            doing: doing.into(),
            source,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Server(why) => write!(f, "tabosd: {why}"),
            Error::Call { doing, why } => write!(f, "{doing}: {why}"),
            Error::Io { doing, source } => write!(f, "{doing}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
