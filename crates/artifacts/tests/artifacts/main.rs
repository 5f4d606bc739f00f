//! One suite for every backend: local filesystem, memory and a real S3 server.

use bytes::Bytes;
use flywheel_artifacts::{ArtifactError, ArtifactStore, ArtifactsConfig};
use rand::RngCore;
use sha2::{Digest, Sha256};

fn local() -> anyhow::Result<(ArtifactStore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir()?;
    let config = ArtifactsConfig {
        url: format!("file://{}", dir.path().display()),
        ..ArtifactsConfig::default()
    };
    Ok((ArtifactStore::from_config(&config)?, Some(dir)))
}

fn memory() -> anyhow::Result<(ArtifactStore, Option<tempfile::TempDir>)> {
    let config = ArtifactsConfig {
        url: "memory://".into(),
        ..ArtifactsConfig::default()
    };
    Ok((ArtifactStore::from_config(&config)?, None))
}

fn s3() -> anyhow::Result<(ArtifactStore, Option<tempfile::TempDir>)> {
    Ok((flywheel_testkit::s3_store()?, None))
}

fn random_bytes(len: usize) -> Bytes {
    let mut buf = vec![0u8; len];
    rand::rng().fill_bytes(&mut buf);
    Bytes::from(buf)
}

macro_rules! backend_suite {
    ($($backend:ident),*) => { $(
        mod $backend {
            #[tokio::test]
            async fn round_trip_and_listing() -> anyhow::Result<()> {
                let (store, _keep) = super::$backend()?;
                super::round_trip_and_listing(store).await
            }

            #[tokio::test]
            async fn content_addressing_is_idempotent_and_verified() -> anyhow::Result<()> {
                let (store, _keep) = super::$backend()?;
                super::content_addressing_is_idempotent_and_verified(store).await
            }

            #[tokio::test]
            async fn corruption_is_detected() -> anyhow::Result<()> {
                let (store, _keep) = super::$backend()?;
                super::corruption_is_detected(store).await
            }

            #[tokio::test]
            async fn traversal_keys_are_refused() -> anyhow::Result<()> {
                let (store, _keep) = super::$backend()?;
                super::traversal_keys_are_refused(store).await
            }

            #[tokio::test]
            async fn streaming_put_respects_the_size_limit() -> anyhow::Result<()> {
                let (store, _keep) = super::$backend()?;
                super::streaming_put_respects_the_size_limit(store).await
            }
        }
    )* };
}

backend_suite!(local, memory, s3);

async fn round_trip_and_listing(store: ArtifactStore) -> anyhow::Result<()> {
    store
        .put("runs/r1/metrics.json", Bytes::from_static(b"{\"a\":1}"))
        .await?;
    store
        .put("runs/r1/model/weights.bin", random_bytes(1000))
        .await?;
    store
        .put("runs/r2/metrics.json", Bytes::from_static(b"{}"))
        .await?;
    assert_eq!(
        store.get("runs/r1/metrics.json").await?,
        Bytes::from_static(b"{\"a\":1}")
    );
    let listed: Vec<_> = store
        .list("runs/r1")
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("runs/r1/metrics.json".to_owned(), 7),
            ("runs/r1/model/weights.bin".to_owned(), 1000)
        ]
    );
    assert!(store.exists("runs/r2/metrics.json").await?);
    store.delete("runs/r2/metrics.json").await?;
    assert!(!store.exists("runs/r2/metrics.json").await?);
    assert!(matches!(
        store.get("runs/r2/metrics.json").await,
        Err(ArtifactError::NotFound(_))
    ));
    let scoped = store.scoped("runs/r1")?;
    assert_eq!(
        scoped.get("metrics.json").await?,
        Bytes::from_static(b"{\"a\":1}")
    );
    assert!(scoped.uri("metrics.json").ends_with("runs/r1/metrics.json"));
    Ok(())
}

async fn content_addressing_is_idempotent_and_verified(store: ArtifactStore) -> anyhow::Result<()> {
    let bytes = random_bytes(4096);
    let first = store.put_content("datasets/iris", bytes.clone()).await?;
    assert_eq!(first.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(first.key, format!("datasets/iris/sha256/{}", first.sha256));
    let streamed = store
        .put_content_stream(
            "datasets/iris",
            futures::stream::iter(bytes.chunks(1000).map(|c| Ok(Bytes::copy_from_slice(c)))),
        )
        .await?;
    assert_eq!(
        streamed, first,
        "same bytes, same reference, whichever way they came"
    );
    assert_eq!(store.get_content(&first).await?, bytes);
    let listed = store.list("datasets/iris").await?;
    assert_eq!(
        listed.len(),
        1,
        "no staging leftovers, one object: {listed:?}"
    );
    Ok(())
}

async fn corruption_is_detected(store: ArtifactStore) -> anyhow::Result<()> {
    let content = store.put_content("models/m", random_bytes(2048)).await?;
    store.put(&content.key, random_bytes(2048)).await?;
    match store.get_content(&content).await {
        Err(ArtifactError::Corrupted {
            expected, actual, ..
        }) => {
            assert_eq!(expected, content.sha256);
            assert_ne!(actual, content.sha256);
        }
        other => panic!("corruption not detected: {other:?}"),
    }
    Ok(())
}

async fn traversal_keys_are_refused(store: ArtifactStore) -> anyhow::Result<()> {
    for key in [
        "../escape",
        "a/../../escape",
        "/etc/passwd",
        "a//b",
        "a\\..\\b",
    ] {
        let err = store
            .put(key, Bytes::from_static(b"x"))
            .await
            .expect_err(key);
        assert!(
            matches!(err, ArtifactError::InvalidKey { .. }),
            "{key}: {err}"
        );
        assert!(
            matches!(store.get(key).await, Err(ArtifactError::InvalidKey { .. })),
            "{key}"
        );
    }
    assert!(matches!(
        store.put_content("../up", Bytes::from_static(b"x")).await,
        Err(ArtifactError::InvalidKey { .. })
    ));
    assert!(matches!(
        store.scoped(".."),
        Err(ArtifactError::InvalidKey { .. })
    ));
    Ok(())
}

async fn streaming_put_respects_the_size_limit(store: ArtifactStore) -> anyhow::Result<()> {
    // A store with a 1 MiB limit over the same backend.
    let limited = store.with_max_object_bytes(1024 * 1024);
    let chunks = (0..3).map(|_| Ok(random_bytes(512 * 1024)));
    let err = limited
        .put_content_stream("uploads", futures::stream::iter(chunks))
        .await
        .expect_err("over the limit");
    assert!(
        matches!(err, ArtifactError::TooLarge { limit: 1_048_576 }),
        "{err}"
    );
    assert!(
        limited.list("uploads").await?.is_empty(),
        "nothing of a refused upload stays"
    );
    Ok(())
}

/// 50 MB through the S3 server in a streaming multipart upload, read back and verified.
#[tokio::test]
async fn fifty_megabytes_round_trip_through_s3() -> anyhow::Result<()> {
    let store = flywheel_testkit::s3_store()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("big.bin");
    let bytes = random_bytes(50 * 1024 * 1024);
    tokio::fs::write(&file, &bytes).await?;
    let content = store.put_content_file("datasets/big", &file).await?;
    assert_eq!(content.size, 50 * 1024 * 1024);
    assert_eq!(content.sha256, hex::encode(Sha256::digest(&bytes)));
    let read = store.get_content(&content).await?;
    assert_eq!(read.len(), bytes.len());
    assert!(read == bytes);
    Ok(())
}
