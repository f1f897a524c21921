//! The one module that talks to S3: a bucket, and an object written to it
//! as a stream of parts.
//!
//! The rest of the connector is synchronous; the SDK is not, so the bucket
//! owns a small Tokio runtime and blocks on it. Parts upload in the
//! background, at most `upload_concurrency` at a time across every object:
//! a part waits for a permit before it leaves the encoder, so the encoder
//! stops when S3 is slower than it (memory stays bounded). The SDK's
//! standard retry (three attempts with backoff) is the one retry rule.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use sluice_connector_kit::Failure;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::{Config, Credentials};

/// The object metadata key that holds a record's generation, as Airbyte's.
pub const GENERATION_METADATA: &str = "ab-generation-id";

pub struct Bucket {
    client: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
    pub name: String,
    /// Where the errors say the bucket is: the endpoint or the region.
    place: String,
    uploads: Arc<Semaphore>,
}

impl Bucket {
    pub fn connect(config: &Config) -> Result<Arc<Bucket>, Failure> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-upload")
            .enable_all()
            .build()
            .map_err(|e| Failure::system(format!("cannot start the upload runtime: {e}")))?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new(config.region.clone()));
        if let Credentials::AccessKey { id, secret } = &config.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(id, secret, None, None, "destination-s3 config"));
        }
        let shared = runtime.block_on(loader.load());
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = &config.endpoint {
            // S3-compatible servers (moto, LocalStack, MinIO) address buckets by
            // path, and not all of them take the checksums AWS's S3 does.
            builder = builder
                .endpoint_url(endpoint)
                .force_path_style(true)
                .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
        }
        let place = match &config.endpoint {
            Some(endpoint) => format!("at {endpoint}"),
            None => format!("in {}", config.region),
        };
        Ok(Arc::new(Bucket {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            runtime,
            name: config.bucket.clone(),
            place,
            uploads: Arc::new(Semaphore::new(config.upload_concurrency)),
        }))
    }

    /// An S3 error as the user can act on it: which bucket, what to fix,
    /// and never a credential.
    fn failure<E>(&self, doing: &str, key: &str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (bucket, place) = (&self.name, &self.place);
        let object = format!("s3://{bucket}/{key}");
        match e.code() {
            Some("NoSuchBucket") => Failure::config(format!("{doing} {object}: the bucket {bucket} does not exist {place}: create it, or correct s3_bucket_name")),
            Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem") => Failure::config(format!(
                "{doing} {object}: access denied: the credentials need s3:PutObject, s3:GetObject, s3:ListBucket, s3:DeleteObject and s3:AbortMultipartUpload on the bucket and its path"
            )),
            Some(code @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken")) => {
                Failure::config(format!("{doing} {object}: S3 {place} refused the credentials ({code}): check access_key_id and secret_access_key, or the environment's credentials"))
            }
            Some("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException") => {
                Failure::config(format!("{doing} {object}: the bucket is not in the region {place}: set s3_bucket_region to the bucket's region"))
            }
            _ => match &e {
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                    Failure::system(format!("{doing} {object}: cannot reach S3 {place} ({}): check s3_endpoint and the network", DisplayErrorContext(&e)))
                }
                _ => Failure::system(format!("{doing} {object}: {}", DisplayErrorContext(&e))),
            },
        }
    }

    /// Stores a whole object in one request.
    pub fn put(&self, key: &str, body: Vec<u8>, generation: i64) -> Result<(), Failure> {
        let request = self.client.put_object().bucket(&self.name).key(key).metadata(GENERATION_METADATA, generation.to_string()).body(ByteStream::from(body));
        self.runtime.block_on(request.send()).map_err(|e| self.failure("writing", key, e))?;
        Ok(())
    }

    pub fn start_multipart(&self, key: &str, generation: i64) -> Result<String, Failure> {
        let request = self.client.create_multipart_upload().bucket(&self.name).key(key).metadata(GENERATION_METADATA, generation.to_string());
        let started = self.runtime.block_on(request.send()).map_err(|e| self.failure("starting the upload of", key, e))?;
        started.upload_id.ok_or_else(|| Failure::system(format!("S3 started the upload of {key} without an upload id")))
    }

    /// Sends a part in the background once a permit is free; waits for the permit.
    fn upload_part(self: &Arc<Self>, key: &str, upload_id: &str, number: i32, body: Vec<u8>) -> JoinHandle<Result<CompletedPart, Failure>> {
        let permit = self.runtime.block_on(self.uploads.clone().acquire_owned()).expect("the semaphore is never closed");
        let (bucket, key, upload_id) = (self.clone(), key.to_owned(), upload_id.to_owned());
        self.runtime.spawn(async move {
            let _permit = permit;
            let request = bucket.client.upload_part().bucket(&bucket.name).key(&key).upload_id(&upload_id).part_number(number).body(ByteStream::from(body));
            let sent = request.send().await.map_err(|e| bucket.failure(&format!("uploading part {number} of"), &key, e))?;
            Ok(CompletedPart::builder().part_number(number).set_e_tag(sent.e_tag).build())
        })
    }

    fn complete_multipart(&self, key: &str, upload_id: &str, parts: Vec<CompletedPart>) -> Result<(), Failure> {
        let upload = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        let request = self.client.complete_multipart_upload().bucket(&self.name).key(key).upload_id(upload_id).multipart_upload(upload);
        self.runtime.block_on(request.send()).map_err(|e| self.failure("completing", key, e))?;
        Ok(())
    }

    fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), Failure> {
        let request = self.client.abort_multipart_upload().bucket(&self.name).key(key).upload_id(upload_id);
        self.runtime.block_on(request.send()).map_err(|e| self.failure("aborting the upload of", key, e))?;
        Ok(())
    }

    /// Every key under `prefix`.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, Failure> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = self.client.list_objects_v2().bucket(&self.name).prefix(prefix).set_continuation_token(token.take());
            let page = self.runtime.block_on(request.send()).map_err(|e| self.failure("listing", prefix, e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            match page.next_continuation_token {
                Some(next) if page.is_truncated == Some(true) => token = Some(next),
                _ => return Ok(keys),
            }
        }
    }

    /// An object's generation from its metadata; None when it has none (not written by a generation-aware writer).
    pub fn generation(&self, key: &str) -> Result<Option<i64>, Failure> {
        let head = self.runtime.block_on(self.client.head_object().bucket(&self.name).key(key).send()).map_err(|e| self.failure("reading the metadata of", key, e))?;
        Ok(head.metadata().and_then(|m: &HashMap<String, String>| m.get(GENERATION_METADATA)).and_then(|g| g.parse().ok()))
    }

    /// Whether an object has this key. By listing, not HEAD: a role that
    /// may list only under its prefix is refused a HEAD of a missing key.
    pub fn exists(&self, key: &str) -> Result<bool, Failure> {
        let request = self.client.list_objects_v2().bucket(&self.name).prefix(key).max_keys(1);
        let page = self.runtime.block_on(request.send()).map_err(|e| self.failure("looking for", key, e))?;
        Ok(page.contents().first().and_then(|o| o.key()) == Some(key))
    }

    /// Deletes `keys`, a thousand (S3's most) per request.
    pub fn delete(&self, keys: &[String]) -> Result<(), Failure> {
        for chunk in keys.chunks(1000) {
            let objects = chunk.iter().map(|k| ObjectIdentifier::builder().key(k).build().expect("a key is set")).collect();
            let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().expect("objects are set");
            let deleted = self.runtime.block_on(self.client.delete_objects().bucket(&self.name).delete(delete).send()).map_err(|e| self.failure("deleting", &chunk[0], e))?;
            if let Some(error) = deleted.errors().first() {
                return Err(Failure::system(format!(
                    "S3 did not delete {} of s3://{}: {} {}",
                    error.key().unwrap_or("an object"),
                    self.name,
                    error.code().unwrap_or_default(),
                    error.message().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// What `check` does, as Airbyte's: write, list and delete a small object under the prefix.
    pub fn check(&self, prefix: &str) -> Result<(), Failure> {
        let key = if prefix.is_empty() { format!("_airbyte_connection_test_{}", uuid::Uuid::new_v4()) } else { format!("{prefix}/_airbyte_connection_test_{}", uuid::Uuid::new_v4()) };
        self.put(&key, b"check".to_vec(), 0)?;
        self.list(&key)?;
        self.delete(&[key])
    }
}

/// One object, written as a stream: bytes gather into a part, a full part
/// leaves for S3 in the background (the upload is started with the first),
/// and [`Upload::complete`] makes the object visible. An object smaller
/// than a part goes up in one request. Until completion nothing is
/// visible; [`Upload::abort`] (or a crash, for S3's lifecycle rules)
/// discards the parts.
pub struct Upload {
    bucket: Arc<Bucket>,
    pub key: String,
    generation: i64,
    part_bytes: usize,
    buffer: Vec<u8>,
    upload_id: Option<String>,
    parts: Vec<JoinHandle<Result<CompletedPart, Failure>>>,
    /// Bytes written so far, uploaded or not.
    pub written: u64,
    /// The first failure, kept: `Write` can only say it as an io::Error.
    failed: Option<Failure>,
}

impl Upload {
    pub fn new(bucket: Arc<Bucket>, key: String, generation: i64, part_bytes: u64) -> Upload {
        Upload { bucket, key, generation, part_bytes: part_bytes as usize, buffer: Vec::new(), upload_id: None, parts: Vec::new(), written: 0, failed: None }
    }

    fn send_part(&mut self) -> Result<(), Failure> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.bucket.start_multipart(&self.key, self.generation)?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let body = std::mem::take(&mut self.buffer);
        let number = self.parts.len() as i32 + 1;
        self.parts.push(self.bucket.upload_part(&self.key, &upload_id, number, body));
        Ok(())
    }

    /// Makes the object visible, whole; on any failure the upload is aborted.
    pub fn complete(mut self) -> Result<(), Failure> {
        if let Some(failure) = self.failed.take() {
            return Err(failure);
        }
        let Some(upload_id) = self.upload_id.clone() else {
            let body = std::mem::take(&mut self.buffer);
            return self.bucket.put(&self.key, body, self.generation);
        };
        if !self.buffer.is_empty() {
            self.send_part()?;
        }
        let mut parts = Vec::with_capacity(self.parts.len());
        // Taken one by one: on a failure the rest stay, for `drop` to stop before it aborts.
        while !self.parts.is_empty() {
            let handle = self.parts.remove(0);
            parts.push(self.bucket.runtime.block_on(handle).map_err(|e| Failure::system(format!("a part upload of {} stopped: {e}", self.key)))??);
        }
        self.bucket.complete_multipart(&self.key, &upload_id, parts)?;
        self.upload_id = None;
        Ok(())
    }

    /// Bytes gathered for the next part.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

/// An upload dropped before it completed (a failure, or the end of an
/// attempt) is aborted: its parts are discarded and the object never
/// appears. Best effort: parts S3 still holds after a crash are for the
/// bucket's lifecycle rule on incomplete multipart uploads.
impl Drop for Upload {
    fn drop(&mut self) {
        // Stopped and waited for, so no part lands after the abort (and the
        // runtime is never dropped by one of its own tasks).
        for handle in self.parts.drain(..) {
            handle.abort();
            let _ = self.bucket.runtime.block_on(handle);
        }
        if let Some(upload_id) = self.upload_id.take() {
            let _ = self.bucket.abort_multipart(&self.key, &upload_id);
        }
    }
}

impl Write for Upload {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other(format!("the upload of {} failed", self.key)));
        }
        self.buffer.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if self.buffer.len() >= self.part_bytes {
            if let Err(failure) = self.send_part() {
                let message = failure.message.clone();
                self.failed = Some(failure);
                return Err(io::Error::other(message));
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
