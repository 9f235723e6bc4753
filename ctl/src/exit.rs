//! Exit codes (shared by all rpool binaries) and the error that carries one.
//!
//! Any error without a [`Failure`] in its chain exits with [`UNEXPECTED`].

use std::fmt;

/// Success.
pub const OK: u8 = 0;
/// Unexpected error.
pub const UNEXPECTED: u8 = 1;
/// The thing asked for does not exist.
pub const NOT_FOUND: u8 = 3;
/// Bad flag, bad config file or bad value (EX_USAGE).
pub const USAGE: u8 = 64;
/// The controller rejected the input (INVALID_ARGUMENT).
pub const REJECTED: u8 = 65;
/// The controller is unreachable or unavailable (EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// Timed out (EX_TEMPFAIL).
pub const TIMED_OUT: u8 = 75;
/// Permission denied (EX_NOPERM).
pub const PERMISSION_DENIED: u8 = 77;

/// An error with a message meant for the user and the exit code to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A usage or config error (exit 64).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error: the first [`Failure`] in its chain, else 1.
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(UNEXPECTED, |f| f.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_failure_keeps_its_code_under_context() {
        let err = Err::<(), _>(Failure::new(NOT_FOUND, "no host with id abcd"))
            .context("showing host abcd")
            .unwrap_err();
        assert_eq!(code_of(&err), NOT_FOUND);
        assert_eq!(format!("{err:#}"), "showing host abcd: no host with id abcd");
    }

    #[test]
    fn an_error_without_a_failure_is_unexpected() {
        assert_eq!(code_of(&anyhow::anyhow!("boom")), UNEXPECTED);
    }
}
