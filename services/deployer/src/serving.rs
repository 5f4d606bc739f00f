//! What is being served: one loaded model per deployment, swapped whole when a new version is
//! loaded. Requests clone an `Arc` under a short read lock; no lock is held while predicting.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use flywheel_artifacts::ArtifactStore;
use flywheel_artifacts::package::{self, Manifest};
use flywheel_events::payloads::Signature;
use flywheel_model::Model;

use crate::{DeployerError, Result};

/// A model version loaded for serving.
#[derive(Debug)]
pub struct Loaded {
    /// Deployment name.
    pub deployment: String,
    /// Registered model name.
    pub model_name: String,
    /// Version.
    pub version: u32,
    /// The model.
    pub model: Model,
    /// Inputs and outputs.
    pub signature: Signature,
}

/// Deployments being served.
#[derive(Debug, Default)]
pub struct Serving {
    loaded: RwLock<HashMap<String, Arc<Loaded>>>,
}

impl Serving {
    /// The loaded model of a deployment.
    pub fn get(&self, deployment: &str) -> Option<Arc<Loaded>> {
        self.loaded.read().ok()?.get(deployment).cloned()
    }

    /// Serves `loaded` under its deployment name from now on.
    pub fn put(&self, loaded: Loaded) {
        if let Ok(mut map) = self.loaded.write() {
            map.insert(loaded.deployment.clone(), Arc::new(loaded));
        }
    }

    /// Stops serving a deployment.
    pub fn remove(&self, deployment: &str) {
        if let Ok(mut map) = self.loaded.write() {
            map.remove(deployment);
        }
    }

    /// Every served deployment.
    pub fn all(&self) -> Vec<Arc<Loaded>> {
        self.loaded
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Fetches a package, verifies every file against its manifest and loads the model. A package
/// that fails any step never serves.
pub(crate) async fn load(
    store: &ArtifactStore,
    deployment: &str,
    model_name: &str,
    version: u32,
    package_uri: &str,
) -> Result<Loaded> {
    let (manifest, files): (Manifest, _) = package::download(store, package_uri)
        .await
        .map_err(|e| DeployerError::Load(format!("package {package_uri}: {e}")))?;
    let model = match manifest.flavor.as_str() {
        "flywheel" => {
            let (_, bytes) = files
                .iter()
                .find(|(path, _)| *path == manifest.model_file)
                .ok_or_else(|| DeployerError::Load("the model file is missing".into()))?;
            serde_json::from_slice::<Model>(bytes)
                .map_err(|e| DeployerError::Load(format!("model.json: {e}")))?
        }
        other => {
            return Err(DeployerError::Load(format!(
                "flavor `{other}` cannot be served yet (built-in `flywheel` models can)"
            )));
        }
    };
    Ok(Loaded {
        deployment: deployment.to_owned(),
        model_name: model_name.to_owned(),
        version,
        model,
        signature: manifest.signature,
    })
}
