//! Where asynchronous outputs and uploaded files go, by `s3://bucket/key` URI.
//!
//! By default the built-in store maps `s3://bucket/key` onto `<objects dir>/bucket/key`, so
//! clients that name an S3 output location work offline and unmodified (objects are written to
//! a temporary file and renamed into place, so a reader never sees half an object). With
//! `[jobs.object_store] type = "s3"` they go to an S3-compatible service (AWS S3, MinIO, Ceph…)
//! through the `object_store` crate, one client per bucket.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use modelgate_core::jobs::{ObjectStoreConfig, ObjectStoreKind};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore as _, PutPayload};

/// `s3://bucket/key…` split into bucket and key, checked as Bedrock checks `S3Uri`
/// (`s3://[a-z0-9][.-a-z0-9]{1,61}[a-z0-9](/.*)?`, at most 1,024 characters).
pub fn parse_s3_uri(uri: &str) -> Result<(&str, &str), String> {
    let bad = || {
        crate::errors::aws_constraint(
            uri,
            "s3Uri",
            "Member must satisfy regular expression pattern: s3://[a-z0-9][\\.\\-a-z0-9]{1,61}[a-z0-9](/.*)?",
        )
        .message
    };
    if uri.len() > 1024 {
        return Err(bad());
    }
    let rest = uri.strip_prefix("s3://").ok_or_else(bad)?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let ok_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bucket
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok_bucket {
        return Err(bad());
    }
    Ok((bucket, key))
}

/// Where objects live: a folder (the built-in store) or an S3-compatible service.
#[derive(Clone)]
pub struct Objects {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Local(PathBuf),
    S3(Arc<S3>),
}

/// An S3-compatible service: one client per bucket, made on first use.
struct S3 {
    settings: ObjectStoreConfig,
    access_key_id: String,
    secret_access_key: String,
    buckets: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Local(root) => write!(f, "Objects({})", root.display()),
            Backend::S3(s) => write!(
                f,
                "Objects(s3 at {})",
                s.settings.endpoint.as_deref().unwrap_or("AWS")
            ),
        }
    }
}

fn io_error(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
        }
        other => std::io::Error::other(other.to_string()),
    }
}

impl Objects {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> Self {
        Self {
            backend: Backend::Local(root),
        }
    }

    /// The store `[jobs.object_store]` describes (`local` under `root`, or S3-compatible).
    pub fn from_config(config: &ObjectStoreConfig, root: PathBuf) -> anyhow::Result<Self> {
        if config.kind == ObjectStoreKind::Local {
            return Ok(Self::new(root));
        }
        let read = |var: &Option<String>, what: &str| -> anyhow::Result<String> {
            let var = var.as_deref().ok_or_else(|| {
                anyhow::anyhow!("jobs.object_store.{what}_env is required for type = \"s3\"")
            })?;
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| anyhow::anyhow!("jobs.object_store.{what}_env: {var} is not set"))
        };
        Ok(Self {
            backend: Backend::S3(Arc::new(S3 {
                access_key_id: read(&config.access_key_id_env, "access_key_id")?,
                secret_access_key: read(&config.secret_access_key_env, "secret_access_key")?,
                settings: config.clone(),
                buckets: Mutex::new(HashMap::new()),
            })),
        })
    }

    /// The folder of the built-in store (none for S3).
    pub fn root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local(root) => Some(root),
            Backend::S3(_) => None,
        }
    }

    /// The file of `s3://bucket/key` in the built-in store; refuses keys that would leave the
    /// bucket (`..`).
    pub fn path_of(root: &Path, uri: &str) -> Result<PathBuf, String> {
        let (bucket, key) = parse_s3_uri(uri)?;
        let mut path = root.join(bucket);
        for c in Path::new(key).components() {
            match c {
                Component::Normal(part) => path.push(part),
                Component::CurDir => {}
                _ => return Err(format!("the object key of '{uri}' may not contain '..'")),
            }
        }
        Ok(path)
    }

    /// The client of a bucket and the object's path in it.
    fn s3_object(s3: &S3, uri: &str) -> std::io::Result<(Arc<AmazonS3>, object_store::path::Path)> {
        let (bucket, key) = parse_s3_uri(uri).map_err(std::io::Error::other)?;
        let path = object_store::path::Path::parse(key)
            .map_err(|e| std::io::Error::other(format!("object key of '{uri}': {e}")))?;
        let mut buckets = s3
            .buckets
            .lock()
            .map_err(|_| std::io::Error::other("object store lock poisoned"))?;
        if let Some(client) = buckets.get(bucket) {
            return Ok((Arc::clone(client), path));
        }
        let c = &s3.settings;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(c.region.clone())
            .with_access_key_id(&s3.access_key_id)
            .with_secret_access_key(&s3.secret_access_key)
            .with_allow_http(c.allow_http)
            .with_virtual_hosted_style_request(c.virtual_hosted_style);
        if let Some(endpoint) = &c.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let client = Arc::new(builder.build().map_err(io_error)?);
        buckets.insert(bucket.to_string(), Arc::clone(&client));
        Ok((client, path))
    }

    /// Write an object (replacing one there).
    pub async fn put(&self, uri: &str, bytes: &[u8]) -> std::io::Result<()> {
        match &self.backend {
            Backend::Local(root) => {
                let path = Self::path_of(root, uri).map_err(std::io::Error::other)?;
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
                tokio::fs::write(&tmp, bytes).await?;
                tokio::fs::rename(&tmp, &path).await
            }
            Backend::S3(s3) => {
                let (client, path) = Self::s3_object(s3, uri)?;
                client
                    .put(&path, PutPayload::from(bytes.to_vec()))
                    .await
                    .map(|_| ())
                    .map_err(io_error)
            }
        }
    }

    /// Read an object.
    pub async fn get(&self, uri: &str) -> std::io::Result<Vec<u8>> {
        match &self.backend {
            Backend::Local(root) => {
                let path = Self::path_of(root, uri).map_err(std::io::Error::other)?;
                tokio::fs::read(path).await
            }
            Backend::S3(s3) => {
                let (client, path) = Self::s3_object(s3, uri)?;
                let got = client.get(&path).await.map_err(io_error)?;
                Ok(got.bytes().await.map_err(io_error)?.to_vec())
            }
        }
    }

    /// Delete an object (nothing when it is not there).
    pub async fn delete(&self, uri: &str) -> std::io::Result<()> {
        match &self.backend {
            Backend::Local(root) => {
                let path = Self::path_of(root, uri).map_err(std::io::Error::other)?;
                match tokio::fs::remove_file(path).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }
            Backend::S3(s3) => {
                let (client, path) = Self::s3_object(s3, uri)?;
                match client.delete(&path).await {
                    Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
                    Err(e) => Err(io_error(e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_checked_and_keys_stay_inside_the_bucket() {
        assert_eq!(
            parse_s3_uri("s3://my-bucket/out/x").ok(),
            Some(("my-bucket", "out/x"))
        );
        assert_eq!(parse_s3_uri("s3://my-bucket").ok(), Some(("my-bucket", "")));
        for bad in ["http://b/x", "s3://B/x", "s3://-ab/x", "s3://a/x", "s3://"] {
            assert!(parse_s3_uri(bad).is_err(), "{bad}");
        }
        let root = Path::new("/data/objects");
        assert_eq!(
            Objects::path_of(root, "s3://bkt/a/b.json").ok(),
            Some(PathBuf::from("/data/objects/bkt/a/b.json"))
        );
        assert!(Objects::path_of(root, "s3://bkt/../../etc/passwd").is_err());
    }
}
