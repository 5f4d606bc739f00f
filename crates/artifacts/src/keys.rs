//! Key validation: artifact keys are relative, `/`-separated and cannot escape their prefix.

use crate::{ArtifactError, Result};

/// Checks a key before it reaches the store.
pub fn validate_key(key: &str) -> Result<&str> {
    let refuse = |reason| {
        Err(ArtifactError::InvalidKey {
            key: key.chars().take(200).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return refuse("empty");
    }
    if key.len() > 1024 {
        return refuse("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return refuse("absolute paths are not allowed");
    }
    if key.contains('\\') {
        return refuse("backslashes are not allowed");
    }
    if key.chars().any(char::is_control) {
        return refuse("control characters are not allowed");
    }
    for segment in key.split('/') {
        match segment {
            "" => return refuse("empty path segment"),
            "." | ".." => return refuse("`.` and `..` segments are not allowed"),
            _ => {}
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_traversal_and_absolute_keys() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a/./b",
            "a//b",
            "a\\..\\b",
            "a/\0",
            "x/..",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a",
            "datasets/iris/sha256/ab12",
            "models/m/v1/model.onnx",
            "a..b/c..",
        ] {
            assert!(validate_key(good).is_ok(), "{good:?} refused");
        }
    }
}
