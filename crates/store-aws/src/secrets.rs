//! Secrets on Secrets Manager, one secret per value, named
//! `<prefix>/<hint>-<unique>`, so that IAM can scope access to the prefix.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use sluice_store::{SecretStore, StoreError};

pub struct SecretsManagerStore {
    client: Client,
    prefix: String,
    counter: AtomicU64,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other(e.to_string())))
}

impl SecretsManagerStore {
    pub fn new(config: &aws_config::SdkConfig, prefix: &str) -> Self {
        SecretsManagerStore { client: Client::new(config), prefix: prefix.to_owned(), counter: AtomicU64::new(0) }
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn put_secret(&self, hint: &str, value: &str) -> Result<String, StoreError> {
        // Secret names allow letters, digits and /_+=.@-; anything else becomes `_`.
        let clean: String = hint.chars().map(|c| if c.is_ascii_alphanumeric() || "_+=.@-".contains(c) { c } else { '_' }).collect();
        let unique = format!("{}-{}", jiff::Timestamp::now().as_nanosecond(), self.counter.fetch_add(1, Ordering::Relaxed));
        let name = format!("{}/{}-{unique}", self.prefix, clean.trim_matches('_'));
        self.client.create_secret().name(&name).secret_string(value).send().await.map_err(|e| failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
        Ok(name)
    }

    async fn get_secret(&self, reference: &str) -> Result<String, StoreError> {
        if !reference.starts_with(&format!("{}/", self.prefix)) {
            return Err(StoreError::NotFound { entity: "secret", id: reference.to_owned() });
        }
        match self.client.get_secret_value().secret_id(reference).send().await {
            Ok(got) => got.secret_string.ok_or_else(|| failed(format!("secret {reference} holds no string"))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                Err(StoreError::NotFound { entity: "secret", id: reference.to_owned() })
            }
            Err(e) => Err(failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e))),
        }
    }

    async fn delete_secret(&self, reference: &str) -> Result<(), StoreError> {
        if !reference.starts_with(&format!("{}/", self.prefix)) {
            return Err(StoreError::NotFound { entity: "secret", id: reference.to_owned() });
        }
        match self.client.delete_secret().secret_id(reference).force_delete_without_recovery(true).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                Err(StoreError::NotFound { entity: "secret", id: reference.to_owned() })
            }
            Err(e) => Err(failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e))),
        }
    }
}
