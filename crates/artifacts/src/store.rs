//! The store: one handle over S3, a local directory or memory.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::{ArtifactError, ArtifactsConfig, Result, validate_key};

/// A stored content-addressed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRef {
    /// Key relative to the store's root, `<namespace>/sha256/<hex>`.
    pub key: String,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// An object found by listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// Artifact storage rooted at a URL (and optionally a prefix below it).
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    root: String,
    max_object_bytes: u64,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Multipart part size: S3's minimum is 5 MiB; 8 MiB keeps part counts low for big models.
const PART_SIZE: usize = 8 * 1024 * 1024;

impl ArtifactStore {
    /// Opens the store the configuration names.
    pub fn from_config(config: &ArtifactsConfig) -> Result<Self> {
        config.validate().map_err(ArtifactError::Config)?;
        let url = config.url.as_str();
        let (inner, root): (Arc<dyn ObjectStore>, String) = if url == "memory://" {
            (Arc::new(InMemory::new()), url.to_owned())
        } else if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).map_err(|e| {
                ArtifactError::Config(format!("cannot create artifacts directory `{dir}`: {e}"))
            })?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| ArtifactError::Config(format!("artifacts directory `{dir}`: {e}")))?
                .with_automatic_cleanup(true);
            (Arc::new(store), url.to_owned())
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let s3 = &config.s3;
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_region(&s3.region)
                .with_allow_http(s3.allow_http)
                .with_virtual_hosted_style_request(!s3.path_style);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(key) = &s3.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            let store: Arc<dyn ObjectStore> = Arc::new(
                builder
                    .build()
                    .map_err(|e| ArtifactError::Config(format!("S3 bucket `{bucket}`: {e}")))?,
            );
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                (store, format!("s3://{bucket}"))
            } else {
                validate_key(prefix)?;
                (
                    Arc::new(PrefixStore::new(store, prefix)),
                    format!("s3://{bucket}/{prefix}"),
                )
            }
        } else {
            return Err(ArtifactError::Config(format!(
                "unsupported artifacts URL `{url}`"
            )));
        };
        Ok(Self {
            inner,
            root,
            max_object_bytes: config.max_object_bytes,
        })
    }

    /// A view of this store below `prefix` (per project, per test...).
    pub fn scoped(&self, prefix: &str) -> Result<Self> {
        let prefix = validate_key(prefix.trim_end_matches('/'))?;
        Ok(Self {
            inner: Arc::new(PrefixStore::new(self.inner.clone(), prefix)),
            root: format!("{}/{prefix}", self.root.trim_end_matches('/')),
            max_object_bytes: self.max_object_bytes,
        })
    }

    /// The same store with another limit for streaming puts.
    pub fn with_max_object_bytes(&self, limit: u64) -> Self {
        Self {
            max_object_bytes: limit,
            ..self.clone()
        }
    }

    /// The URI of a key, e.g. `s3://bucket/prefix/key`, for events and lineage.
    pub fn uri(&self, key: &str) -> String {
        format!("{}/{key}", self.root.trim_end_matches('/'))
    }

    /// The key of a URI inside this store, if the URI points into it.
    pub fn key_of<'a>(&self, uri: &'a str) -> Option<&'a str> {
        let root = self.root.trim_end_matches('/');
        let rest = uri.strip_prefix(root)?.strip_prefix('/')?;
        (!rest.is_empty()).then_some(rest)
    }

    fn path(key: &str) -> Result<Path> {
        let key = validate_key(key)?;
        Path::parse(key).map_err(|_| ArtifactError::InvalidKey {
            key: key.to_owned(),
            reason: "not a valid object path",
        })
    }

    /// Stores bytes under a key (overwriting).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.inner
            .put(&Self::path(key)?, PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.inner.get(&Self::path(key)?).await?.bytes().await?)
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.inner.head(&Self::path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object (absent objects are fine).
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&Self::path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists objects whose key starts with the folder `prefix` (empty for everything).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            None
        } else {
            Some(Self::path(prefix)?)
        };
        let mut objects: Vec<ObjectInfo> = self
            .inner
            .list(path.as_ref())
            .map_ok(|meta| ObjectInfo {
                key: meta.location.to_string(),
                size: meta.size,
            })
            .try_collect()
            .await?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Immediate children of a folder: files and sub-folder keys (a missing folder is empty).
    pub async fn list_dir(&self, prefix: &str) -> Result<(Vec<ObjectInfo>, Vec<String>)> {
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            None
        } else {
            Some(Self::path(prefix)?)
        };
        let listing = match self.inner.list_with_delimiter(path.as_ref()).await {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e.into()),
        };
        let files = listing
            .objects
            .into_iter()
            .map(|meta| ObjectInfo {
                key: meta.location.to_string(),
                size: meta.size,
            })
            .collect();
        let dirs = listing
            .common_prefixes
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        Ok((files, dirs))
    }

    fn content_key(namespace: &str, sha256: &str) -> Result<String> {
        let key = format!("{}/sha256/{sha256}", namespace.trim_end_matches('/'));
        validate_key(&key)?;
        Ok(key)
    }

    /// Stores bytes content-addressed under `<namespace>/sha256/<hex>`; same bytes, same key,
    /// and an existing object is never rewritten.
    pub async fn put_content(&self, namespace: &str, bytes: Bytes) -> Result<ContentRef> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let key = Self::content_key(namespace, &sha256)?;
        let size = bytes.len() as u64;
        if !self.exists(&key).await? {
            self.put(&key, bytes).await?;
        }
        Ok(ContentRef { key, sha256, size })
    }

    /// Streams bytes into a content-addressed object with a multipart upload, hashing on the way,
    /// so memory stays bounded whatever the size. Refuses streams over the size limit.
    pub async fn put_content_stream<S>(&self, namespace: &str, mut source: S) -> Result<ContentRef>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin + Send,
    {
        let staging = format!(
            "{}/.staging/{}",
            namespace.trim_end_matches('/'),
            uuid::Uuid::now_v7()
        );
        let staging_path = Self::path(&staging)?;
        let upload = self.inner.put_multipart(&staging_path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let streamed: Result<()> = async {
            while let Some(chunk) = source.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                if size > self.max_object_bytes {
                    return Err(ArtifactError::TooLarge {
                        limit: self.max_object_bytes,
                    });
                }
                hasher.update(&chunk);
                // Bounded memory: at most a few parts in flight.
                writer.wait_for_capacity(4).await?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "aborting multipart upload failed");
            }
            return Err(e);
        }
        writer.finish().await?;
        let sha256 = hex::encode(hasher.finalize());
        let key = Self::content_key(namespace, &sha256)?;
        if self.exists(&key).await? {
            self.inner.delete(&staging_path).await?;
        } else {
            self.inner.rename(&staging_path, &Self::path(&key)?).await?;
        }
        Ok(ContentRef { key, sha256, size })
    }

    /// Streams a local file into a content-addressed object.
    pub async fn put_content_file(
        &self,
        namespace: &str,
        file: &std::path::Path,
    ) -> Result<ContentRef> {
        let file = tokio::fs::File::open(file).await?;
        let stream = futures::stream::try_unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1024 * 1024];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), file)))
        });
        self.put_content_stream(namespace, Box::pin(stream)).await
    }

    /// Reads an object and checks it hashes to `sha256`; a mismatch is [`ArtifactError::Corrupted`].
    pub async fn get_verified(&self, key: &str, sha256: &str) -> Result<Bytes> {
        let bytes = self.get(key).await?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(ArtifactError::Corrupted {
                key: key.to_owned(),
                expected: sha256.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Reads a content-addressed object, verified against the hash in its key.
    pub async fn get_content(&self, content: &ContentRef) -> Result<Bytes> {
        self.get_verified(&content.key, &content.sha256).await
    }
}
