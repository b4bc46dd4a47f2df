//! The built-in object store: `s3://bucket/key` maps onto `<objects dir>/bucket/key`, so
//! clients that name an S3 output location work offline and unmodified. Objects are written
//! to a temporary file and renamed into place, so a reader never sees half an object.

use std::path::{Component, Path, PathBuf};

/// `s3://bucket/key…` split into bucket and key, checked as Bedrock checks `S3Uri`
/// (`s3://[a-z0-9][.-a-z0-9]{1,61}[a-z0-9](/.*)?`, at most 1,024 characters).
pub fn parse_s3_uri(uri: &str) -> Result<(&str, &str), String> {
    let bad = || {
        format!(
            "1 validation error detected: Value '{uri}' at 's3Uri' failed to satisfy constraint: Member must satisfy regular expression pattern: s3://[a-z0-9][\\.\\-a-z0-9]{{1,61}}[a-z0-9](/.*)?"
        )
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

/// Objects under one directory.
#[derive(Debug, Clone)]
pub struct Objects {
    root: PathBuf,
}

impl Objects {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Where the store keeps its objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `s3://bucket/key`; refuses keys that would leave the bucket (`..`).
    pub fn path_of(&self, uri: &str) -> Result<PathBuf, String> {
        let (bucket, key) = parse_s3_uri(uri)?;
        let mut path = self.root.join(bucket);
        for c in Path::new(key).components() {
            match c {
                Component::Normal(part) => path.push(part),
                Component::CurDir => {}
                _ => return Err(format!("the object key of '{uri}' may not contain '..'")),
            }
        }
        Ok(path)
    }

    /// Write an object (replacing one there).
    pub async fn put(&self, uri: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path_of(uri).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, &path).await
    }

    /// Read an object.
    pub async fn get(&self, uri: &str) -> std::io::Result<Vec<u8>> {
        let path = self.path_of(uri).map_err(std::io::Error::other)?;
        tokio::fs::read(path).await
    }

    /// Delete an object (nothing when it is not there).
    pub async fn delete(&self, uri: &str) -> std::io::Result<()> {
        let path = self.path_of(uri).map_err(std::io::Error::other)?;
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
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
        let o = Objects::new(PathBuf::from("/data/objects"));
        assert_eq!(
            o.path_of("s3://bkt/a/b.json").ok(),
            Some(PathBuf::from("/data/objects/bkt/a/b.json"))
        );
        assert!(o.path_of("s3://bkt/../../etc/passwd").is_err());
    }
}
