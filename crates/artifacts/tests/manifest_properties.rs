//! Property tests of the model manifest parser: random bytes and manifests with hostile file
//! paths give an error or a manifest whose every path is a safe relative key — never a panic,
//! never `..` or an absolute path that could escape the package folder.

use bytes::Bytes;
use flywheel_artifacts::package::{Manifest, PackageLineage};
use proptest::prelude::*;

fn valid() -> serde_json::Value {
    let manifest = Manifest::describe(
        "flywheel",
        "model.json",
        Default::default(),
        Default::default(),
        PackageLineage::default(),
        &[("model.json".to_owned(), Bytes::from_static(b"{}"))],
    )
    .and_then(|m| m.to_bytes());
    manifest
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn safe(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = Manifest::parse(&bytes);
    }

    #[test]
    fn accepted_paths_stay_inside_the_package(path in "(\\.\\.|\\.|/|[a-z]{1,3}|\\\\|%2e|\u{0}){1,6}") {
        let mut manifest = valid();
        prop_assert!(Manifest::parse(manifest.to_string().as_bytes()).is_ok());
        manifest["files"][0]["path"] = serde_json::Value::String(path);
        if let Ok(parsed) = Manifest::parse(manifest.to_string().as_bytes()) {
            for file in &parsed.files {
                prop_assert!(safe(&file.path), "accepted unsafe path {:?}", file.path);
            }
        }
    }
}
