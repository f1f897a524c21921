//! The embedded secrets store: one file per secret, mode 0600, in a 0700
//! directory beside the database and never inside it, so no SQLite row ever
//! holds a secret.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sluice_store::{SecretStore, StoreError};

pub struct FileSecrets {
    dir: PathBuf,
    counter: AtomicU64,
}

impl FileSecrets {
    pub fn open(dir: PathBuf) -> Result<Self, StoreError> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Ok(FileSecrets { dir, counter: AtomicU64::new(0) })
    }

    /// A reference is `[a-z0-9_-]` only, so it can never name a path outside the directory.
    fn path(&self, reference: &str) -> Result<PathBuf, StoreError> {
        let safe = !reference.is_empty() && reference.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !safe {
            return Err(StoreError::NotFound { entity: "secret", id: reference.to_owned() });
        }
        Ok(self.dir.join(reference))
    }
}

#[async_trait]
impl SecretStore for FileSecrets {
    async fn put_secret(&self, hint: &str, value: &str) -> Result<String, StoreError> {
        let clean: String = hint.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let unique = format!(
            "{}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let reference = format!("{}-{unique}", clean.trim_matches('_'));
        let path = self.path(&reference)?;
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path)?;
            file.write_all(value.as_bytes())?;
            file.sync_all()
        };
        write().map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Ok(reference)
    }

    async fn get_secret(&self, reference: &str) -> Result<String, StoreError> {
        match std::fs::read_to_string(self.path(reference)?) {
            Ok(value) => Ok(value),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound { entity: "secret", id: reference.to_owned() }),
            Err(e) => Err(StoreError::Unavailable(Box::new(e))),
        }
    }

    async fn delete_secret(&self, reference: &str) -> Result<(), StoreError> {
        match std::fs::remove_file(self.path(reference)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Unavailable(Box::new(e))),
        }
    }
}
