//! The config-problem type every component reports with: a leaf, so each
//! component's `validate()` can name it without depending on the file format.

use std::fmt;

/// One invalid setting: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted path of the key, such as `pipeline.workers`.
    pub key: String,
    /// Why the value is refused.
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}
