//! Cross-service test suites live in the test targets of this crate.
