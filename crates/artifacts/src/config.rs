use serde::{Deserialize, Serialize};

/// Where artifacts live.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactsConfig {
    /// `file://<dir>`, `memory://` or `s3://<bucket>[/<prefix>]`.
    pub url: String,
    /// S3 connection settings, used by `s3://` URLs.
    pub s3: S3Config,
    /// Largest object accepted by streaming puts, in bytes.
    pub max_object_bytes: u64,
}

/// S3-compatible endpoint settings (MinIO, moto, AWS...).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://minio:9000`; empty for AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Access key id; empty to use the environment's AWS credentials.
    pub access_key_id: Option<String>,
    /// Secret access key (never logged).
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// Path-style addressing (`endpoint/bucket/key`), as MinIO and moto need.
    pub path_style: bool,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        Self {
            url: "file://.flywheel/artifacts".into(),
            s3: S3Config::default(),
            max_object_bytes: 10 * 1024 * 1024 * 1024,
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            path_style: true,
        }
    }
}

impl std::fmt::Debug for ArtifactsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactsConfig")
            .field("url", &self.url)
            .field("s3", &self.s3)
            .field("max_object_bytes", &self.max_object_bytes)
            .finish()
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .finish()
    }
}

impl ArtifactsConfig {
    /// Checks the URL form; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.url == "memory://"
            || self
                .url
                .strip_prefix("file://")
                .is_some_and(|p| !p.is_empty())
            || self
                .url
                .strip_prefix("s3://")
                .is_some_and(|p| !p.is_empty() && !p.starts_with('/'));
        if !ok {
            return Err(format!(
                "artifacts.url: expected file://<dir>, memory:// or s3://<bucket>[/<prefix>], got `{}`",
                self.url
            ));
        }
        if let Some(endpoint) = &self.s3.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "artifacts.s3.endpoint: expected http(s)://host:port, got `{endpoint}`"
            ));
        }
        Ok(())
    }
}
