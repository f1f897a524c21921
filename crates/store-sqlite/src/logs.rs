//! Attempt logs as files, `<dir>/<job>/<attempt>.log`, so a running
//! attempt's log can be read (and followed) while it grows.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use async_trait::async_trait;
use jiff::Timestamp;
use sluice_store::{AttemptLogs, StoreError};

pub struct FileLogs {
    dir: PathBuf,
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

impl FileLogs {
    pub fn new(dir: PathBuf) -> Self {
        FileLogs { dir }
    }

    /// Where the log of one attempt is: a local task writes there directly.
    pub fn path(&self, job_id: i64, attempt: u32) -> PathBuf {
        self.dir.join(job_id.to_string()).join(format!("{attempt}.log"))
    }
}

#[async_trait]
impl AttemptLogs for FileLogs {
    async fn append(&self, job_id: i64, attempt: u32, text: &str) -> Result<(), StoreError> {
        let path = self.path(job_id, attempt);
        fs::create_dir_all(path.parent().expect("has a parent")).map_err(io_error)?;
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_error)?;
        file.write_all(text.as_bytes()).map_err(io_error)
    }

    async fn read(&self, job_id: i64, attempt: u32, offset: u64, max: usize) -> Result<(String, u64), StoreError> {
        let mut file = match fs::File::open(self.path(job_id, attempt)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), offset)),
            Err(e) => return Err(io_error(e)),
        };
        let length = file.metadata().map_err(io_error)?.len();
        if offset >= length {
            return Ok((String::new(), offset));
        }
        file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
        let mut buf = Vec::with_capacity(max.min(1 << 20));
        file.take(max as u64).read_to_end(&mut buf).map_err(io_error)?;
        // Hand out whole lines only, unless one line is longer than `max`.
        if buf.len() == max {
            if let Some(end) = buf.iter().rposition(|&b| b == b'\n') {
                buf.truncate(end + 1);
            }
        }
        let next = offset + buf.len() as u64;
        Ok((String::from_utf8_lossy(&buf).into_owned(), next))
    }

    async fn delete_older_than(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let mut deleted = 0;
        let Ok(entries) = fs::read_dir(&self.dir) else { return Ok(0) };
        for entry in entries.flatten() {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            let old = modified.and_then(|m| Timestamp::try_from(m).ok()).is_some_and(|m| m < cutoff);
            if old && fs::remove_dir_all(entry.path()).is_ok() {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
