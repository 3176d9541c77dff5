//! The health thresholds every view colours by: `tracemap map`, the DOT
//! rendering and the web page, whose `web/health.js` carries the same
//! numbers (a test below fails when the two drift apart).

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
    fn the_page_colours_by_the_same_numbers() {
        let page = include_str!("../../web/health.js");
        let line = page
            .lines()
            .find(|l| l.starts_with("export const HEALTH = "))
            .expect("web/health.js defines HEALTH");
        assert_eq!(
            line,
            format!(
                "export const HEALTH = {{ errorWarn: {ERROR_RATE_WARN}, errorCrit: {ERROR_RATE_CRITICAL}, p99Warn: {P99_WARN_MS}, p99Crit: {P99_CRITICAL_MS} }};"
            )
        );
    }
}
