//! Model packages: a folder of model files and `flywheel-model.json`, the manifest naming the
//! flavor, signature, metrics, lineage and the sha256 of every file. Packages are stored
//! content-addressed under `packages/<sha256 of the manifest>/`, so the same model gives the
//! same URI, and every file is verified against the manifest when read.

use std::collections::BTreeMap;

use bytes::Bytes;
use flywheel_events::payloads::{DatasetRef, Params, Signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ArtifactError, ArtifactStore, Result, validate_key};

/// The manifest's file name inside a package.
pub const MANIFEST: &str = "flywheel-model.json";

/// The manifest format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// One file of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFile {
    /// Path inside the package, `/`-separated.
    pub path: String,
    /// sha256 of the bytes, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Where a packaged model came from. No job ids or times: the same data, parameters and seed
/// give a bit-identical manifest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PackageLineage {
    /// Training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetRef>,
    /// Trainer (`builtin:<algorithm>` or `external`).
    pub trainer: String,
    /// Parameters as used.
    #[serde(default)]
    pub params: Params,
    /// Random seed.
    pub seed: u64,
    /// Code reference, e.g. a git commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_ref: Option<String>,
}

/// `flywheel-model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format_version: u32,
    /// How to load the model: `flywheel` (built-in trainers) or `onnx`; other flavors are
    /// stored but not served.
    pub flavor: String,
    /// The file holding the model, inside the package.
    pub model_file: String,
    /// Inputs and outputs.
    pub signature: Signature,
    /// Evaluation metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Where it came from.
    pub lineage: PackageLineage,
    /// Every file but the manifest, sorted by path.
    pub files: Vec<PackageFile>,
}

impl Manifest {
    /// A manifest for `files` (path, bytes), hashing each; files are sorted by path.
    pub fn describe(
        flavor: &str,
        model_file: &str,
        signature: Signature,
        metrics: BTreeMap<String, f64>,
        lineage: PackageLineage,
        files: &[(String, Bytes)],
    ) -> Result<Self> {
        let mut described: Vec<PackageFile> = files
            .iter()
            .map(|(path, bytes)| {
                validate_key(path)?;
                Ok(PackageFile {
                    path: path.clone(),
                    sha256: hex::encode(Sha256::digest(bytes)),
                    size: bytes.len() as u64,
                })
            })
            .collect::<Result<_>>()?;
        described.sort_by(|a, b| a.path.cmp(&b.path));
        if !described.iter().any(|f| f.path == model_file) {
            return Err(ArtifactError::InvalidKey {
                key: model_file.to_owned(),
                reason: "the model file is not among the package's files",
            });
        }
        Ok(Self {
            format_version: FORMAT_VERSION,
            flavor: flavor.to_owned(),
            model_file: model_file.to_owned(),
            signature,
            metrics,
            lineage,
            files: described,
        })
    }

    /// The manifest's canonical bytes (pretty JSON, fields in declaration order).
    pub fn to_bytes(&self) -> Result<Bytes> {
        serde_json::to_vec_pretty(self)
            .map(Bytes::from)
            .map_err(|e| ArtifactError::Config(format!("manifest: {e}")))
    }

    /// Parses a manifest, refusing unknown format versions and unsafe paths.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            ArtifactError::InvalidPackage(format!("{MANIFEST} is not a valid manifest: {e}"))
        })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(ArtifactError::InvalidPackage(format!(
                "manifest format {} is not supported (expected {FORMAT_VERSION})",
                manifest.format_version
            )));
        }
        for file in &manifest.files {
            validate_key(&file.path)?;
        }
        Ok(manifest)
    }
}

/// A stored package.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPackage {
    /// Key of the package folder, `packages/<sha256 of the manifest>`.
    pub key: String,
    /// URI of the package folder.
    pub uri: String,
    /// sha256 of the manifest.
    pub manifest_sha256: String,
}

/// Uploads `files` and their manifest; the same package uploads to the same place once.
pub async fn upload(
    store: &ArtifactStore,
    manifest: &Manifest,
    files: &[(String, Bytes)],
) -> Result<StoredPackage> {
    let manifest_bytes = manifest.to_bytes()?;
    let manifest_sha256 = hex::encode(Sha256::digest(&manifest_bytes));
    let key = format!("packages/{manifest_sha256}");
    for (path, bytes) in files {
        let file_key = format!("{key}/{path}");
        if !store.exists(&file_key).await? {
            store.put(&file_key, bytes.clone()).await?;
        }
    }
    // The manifest last: a package whose manifest exists is complete.
    let manifest_key = format!("{key}/{MANIFEST}");
    if !store.exists(&manifest_key).await? {
        store.put(&manifest_key, manifest_bytes).await?;
    }
    Ok(StoredPackage {
        uri: store.uri(&key),
        key,
        manifest_sha256,
    })
}

/// Downloads a package by URI, verifying every file against the manifest.
pub async fn download(
    store: &ArtifactStore,
    uri: &str,
) -> Result<(Manifest, Vec<(String, Bytes)>)> {
    let key = store.key_of(uri).ok_or_else(|| {
        ArtifactError::InvalidPackage(format!(
            "{uri} is outside this artifact store ({})",
            store.uri("")
        ))
    })?;
    let key = key.trim_end_matches('/');
    let manifest = Manifest::parse(&store.get(&format!("{key}/{MANIFEST}")).await?)?;
    let mut files = Vec::with_capacity(manifest.files.len());
    for file in &manifest.files {
        let bytes = store
            .get_verified(&format!("{key}/{}", file.path), &file.sha256)
            .await?;
        files.push((file.path.clone(), bytes));
    }
    Ok((manifest, files))
}
