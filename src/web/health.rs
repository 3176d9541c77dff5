//! The health thresholds every view colours by: the web page (served to it
//! as `/health.js`), `tracemap map` and the DOT rendering.

/// Error rate from which an edge is amber.
pub const ERROR_RATE_WARN: f64 = 0.01;
/// Error rate from which an edge is red.
pub const ERROR_RATE_CRITICAL: f64 = 0.05;
/// Server p99 (ms) from which an edge is amber.
pub const P99_WARN_MS: f64 = 500.0;
/// Server p99 (ms) from which an edge is red.
pub const P99_CRITICAL_MS: f64 = 2000.0;

/// An edge's or node's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Below every threshold.
    Ok,
    /// At or above a warning threshold.
    Warn,
    /// At or above a critical threshold.
    Critical,
}

impl Health {
    /// The worse of the error rate's and the p99's verdicts.
    pub fn of(error_rate: f64, p99_ms: f64) -> Self {
        if error_rate >= ERROR_RATE_CRITICAL || p99_ms >= P99_CRITICAL_MS {
            Self::Critical
        } else if error_rate >= ERROR_RATE_WARN || p99_ms >= P99_WARN_MS {
            Self::Warn
        } else {
            Self::Ok
        }
    }
}

/// The thresholds as an ES module, so the page reads the same numbers.
pub fn es_module() -> String {
    format!(
        "// Served by tracemap from src/web/health.rs: the one source of these thresholds.\n\
         export const HEALTH = Object.freeze({{ errorWarn: {ERROR_RATE_WARN}, errorCrit: {ERROR_RATE_CRITICAL}, p99Warn: {P99_WARN_MS}, p99Crit: {P99_CRITICAL_MS} }});\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_inclusive_and_the_worse_wins() {
        assert_eq!(Health::of(0.0, 0.0), Health::Ok);
        assert_eq!(Health::of(0.01, 0.0), Health::Warn);
        assert_eq!(Health::of(0.0, 500.0), Health::Warn);
        assert_eq!(Health::of(0.05, 10.0), Health::Critical);
        assert_eq!(Health::of(0.02, 2000.0), Health::Critical);
    }

    #[test]
    fn the_page_module_carries_the_same_numbers() {
        assert_eq!(
            es_module().lines().nth(1).unwrap(),
            "export const HEALTH = Object.freeze({ errorWarn: 0.01, errorCrit: 0.05, p99Warn: 500, p99Crit: 2000 });"
        );
    }
}
