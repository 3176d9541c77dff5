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

/// A config section that passed its component's `validate()`, the only
/// way one is made: the component's `start()` takes this, so nothing starts
/// from settings that were not checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid<T>(T);

impl<T> Valid<T> {
    /// Runs `check` over `value`: the value, when it reported no problem.
    pub(crate) fn check(
        value: &T,
        problems: &mut Vec<Invalid>,
        check: impl FnOnce(&T, &mut Vec<Invalid>),
    ) -> Option<Self>
    where
        T: Clone,
    {
        let before = problems.len();
        check(value, problems);
        (problems.len() == before).then(|| Self(value.clone()))
    }

    /// The checked settings.
    pub fn get(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::Deref for Valid<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Validates one section on its own, for tests, benchmarks and embedders:
/// the checked value, or every problem found.
pub fn section<T>(
    validate: impl FnOnce(&mut Vec<Invalid>) -> Option<Valid<T>>,
) -> Result<Valid<T>, Vec<Invalid>> {
    let mut problems = Vec::new();
    match validate(&mut problems) {
        Some(valid) if problems.is_empty() => Ok(valid),
        _ => Err(problems),
    }
}
