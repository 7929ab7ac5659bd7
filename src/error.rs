//! The errors of setting tracing up: typed, each with the error it wraps as its `source()`.

pub use crate::env::EnvError;
pub use crate::propagate::{ContextError, TraceparentError};
use std::error::Error;
use std::fmt;

/// Why `init` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum InitError {
    /// A session is running in this process already.
    AlreadyRunning,
    /// `Config` names no exporter.
    NoExporter,
    /// A `Config` setting is out of range.
    BadConfig(ConfigError),
    /// The drainer or export thread could not start.
    Spawn(std::io::Error),
    /// An environment variable has a value that cannot be used.
    Env(EnvError),
    /// The exporter the configuration names could not be made.
    Exporter(ExporterError),
    /// This process was forked from a traced one and cannot start a session of its own; its
    /// calls stay dropped and counted (`Stats::calls_dropped_after_fork`).
    Forked(ForkError),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // What a variant wraps is its `source()`, so it is not repeated here.
        f.write_str(match self {
            InitError::AlreadyRunning => "slicetrace is already running in this process",
            InitError::NoExporter => "slicetrace Config has no exporter",
            InitError::BadConfig(_) => "slicetrace Config has a setting out of range",
            InitError::Spawn(_) => "slicetrace could not start its background threads",
            InitError::Env(_) => "slicetrace cannot use the tracing environment variables",
            InitError::Exporter(_) => "slicetrace could not make its exporter",
            InitError::Forked(_) => "slicetrace cannot trace in this forked process",
        })
    }
}

impl Error for InitError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            InitError::AlreadyRunning | InitError::NoExporter => None,
            InitError::BadConfig(e) => Some(e),
            InitError::Spawn(e) => Some(e),
            InitError::Env(e) => Some(e),
            InitError::Exporter(e) => Some(e),
            InitError::Forked(e) => Some(e),
        }
    }
}

/// Why a forked child cannot start a session of its own (see `slicetrace::process`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForkError {
    /// Not a child forked while a session ran, or one that already traces on its own: there
    /// is no parent's session to start again. `init` starts one.
    NoParentSession,
    /// A lock the new session needs was held by one of the parent's threads at the fork. That
    /// thread does not exist in the child, so the lock stays held: starting would wait forever.
    LockHeld(&'static str),
    /// The parent's exporter was given as a value and cannot be made again; configure it with
    /// `Config::exporter_factory` (or from the environment) to re-initialise forked children.
    NoRecipe,
}

impl fmt::Display for ForkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForkError::NoParentSession => {
                f.write_str("no session of the parent to start again in this process")
            }
            ForkError::LockHeld(what) => write!(
                f,
                "{what} was locked by another thread at the fork, and stays locked here"
            ),
            ForkError::NoRecipe => {
                f.write_str("the parent's exporter was given as a value and cannot be made again")
            }
        }
    }
}

impl Error for ForkError {}

/// A `Config` field whose value `init` refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's name.
    pub setting: &'static str,
    pub value: u64,
    /// What it must be.
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {}; expected {}",
            self.setting, self.value, self.expected
        )
    }
}

impl Error for ConfigError {}

/// Why an exporter could not be made: what was being made, and the error underneath.
#[derive(Debug)]
pub struct ExporterError {
    what: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl ExporterError {
    pub(crate) fn new(what: impl Into<String>) -> ExporterError {
        ExporterError {
            what: what.into(),
            source: None,
        }
    }

    pub(crate) fn caused(
        what: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync + 'static>>,
    ) -> ExporterError {
        ExporterError {
            what: what.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for ExporterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl Error for ExporterError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error and its sources, one line.
    fn chain(e: &dyn Error) -> String {
        let mut s = e.to_string();
        let mut next = e.source();
        while let Some(cause) = next {
            s.push_str(": ");
            s.push_str(&cause.to_string());
            next = cause.source();
        }
        s
    }

    #[test]
    fn sources_chain_from_init_to_the_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = InitError::Exporter(ExporterError::caused("cannot create /x.json", io));
        assert_eq!(
            chain(&e),
            "slicetrace could not make its exporter: cannot create /x.json: denied"
        );
        let inner = e.source().unwrap().source().unwrap();
        assert!(inner.downcast_ref::<std::io::Error>().is_some());
        let bad = InitError::BadConfig(ConfigError {
            setting: "max_export_batch",
            value: 0,
            expected: "at least 1",
        });
        assert_eq!(
            chain(&bad),
            "slicetrace Config has a setting out of range: max_export_batch is 0; expected at least 1"
        );
        assert!(InitError::NoExporter.source().is_none());
    }
}
