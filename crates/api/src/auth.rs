//! Credentials without a token table: access tokens and workload
//! credentials are HMAC-SHA256 signatures under one key that lives in the
//! secrets port, so any instance (one process, or many Lambdas) can check
//! them, and nothing that grants access is stored in the clear.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sluice_domain::resources::Role;
use sluice_domain::Version;
use sluice_store::{ConfigStore, Doc, DocKind, SecretStore, StoreError};

type HmacSha256 = Hmac<Sha256>;

/// Access tokens carry this prefix, so a token is recognisable in a leak report.
/// (`sl1` tokens carried no role.)
const TOKEN_PREFIX: &str = "sl2";

/// Who a request comes from: an application, its role, and for a
/// workspace role the workspace. The token check puts it in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub client_id: String,
    pub role: Role,
    pub workspace: Option<String>,
}

impl Grant {
    pub fn of(application: &sluice_domain::resources::Application) -> Grant {
        Grant { client_id: application.client_id.clone(), role: application.permission_type, workspace: application.workspace_id.clone() }
    }
}

pub struct Keys {
    key: Vec<u8>,
}

impl Keys {
    pub fn new(key: Vec<u8>) -> Self {
        Keys { key }
    }

    /// A fresh random key, hex-encoded, for the secrets port to keep.
    pub fn generate() -> String {
        hex(&random_bytes::<32>())
    }

    fn mac(&self, purpose: &str, message: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(message.as_bytes());
        mac
    }

    fn sign(&self, purpose: &str, message: &str) -> String {
        hex(&self.mac(purpose, message).finalize().into_bytes())
    }

    fn verify(&self, purpose: &str, message: &str, signature: &str) -> bool {
        let Some(bytes) = unhex(signature) else { return false };
        self.mac(purpose, message).verify_slice(&bytes).is_ok()
    }

    /// A bearer token for `grant`, valid until `expires_at` (unix seconds).
    /// The role travels in the token, signed, so a request needs no lookup.
    pub fn access_token(&self, grant: &Grant, expires_at: i64) -> String {
        let workspace = grant.workspace.as_deref().unwrap_or("-");
        let body = format!("{TOKEN_PREFIX}.{}.{}.{workspace}.{expires_at}", grant.client_id, grant.role.as_str());
        let signature = self.sign("access", &body);
        format!("{body}.{signature}")
    }

    /// What a token grants, or why it is refused.
    pub fn check_access_token(&self, token: &str, now: i64) -> Result<Grant, &'static str> {
        let parts: Vec<&str> = token.split('.').collect();
        let [prefix, client_id, role, workspace, expires_at, signature] = parts[..] else { return Err("the bearer token is malformed") };
        if prefix != TOKEN_PREFIX || !self.verify("access", &format!("{prefix}.{client_id}.{role}.{workspace}.{expires_at}"), signature) {
            return Err("the bearer token is not one this server issued");
        }
        let expires_at: i64 = expires_at.parse().map_err(|_| "the bearer token is malformed")?;
        if expires_at <= now {
            return Err("the bearer token has expired; request a new one from /applications/token");
        }
        let role = Role::parse(role).ok_or("the bearer token is malformed")?;
        let workspace = (workspace != "-").then(|| workspace.to_owned());
        Ok(Grant { client_id: client_id.to_owned(), role, workspace })
    }

    /// The credential a task presents to act on its own workload, and no other.
    pub fn workload_token(&self, workload_id: &str) -> String {
        self.sign("workload", workload_id)
    }

    pub fn check_workload_token(&self, workload_id: &str, token: &str) -> bool {
        self.verify("workload", workload_id, token)
    }

    /// What an application's client secret is stored as.
    pub fn secret_hash(&self, client_secret: &str) -> String {
        self.sign("client-secret", client_secret)
    }

    pub fn check_secret(&self, client_secret: &str, hash: &str) -> bool {
        self.verify("client-secret", client_secret, hash)
    }
}

const SIGNING_KEY: &str = "signing-key";

/// The key that signs tokens and workload credentials: made once, kept in
/// the secrets port, found again through a setting. Of two instances that
/// start together, the first to record its key wins and the other uses it.
pub async fn signing_key(store: &dyn ConfigStore, secrets: &dyn SecretStore) -> Result<String, StoreError> {
    for _ in 0..3 {
        match store.get_doc(DocKind::Setting, SIGNING_KEY).await {
            Ok(doc) => {
                let Some(reference) = doc.body["secret"].as_str() else {
                    return Err(StoreError::Unavailable(Box::new(std::io::Error::other("the signing key setting is damaged"))));
                };
                return secrets.get_secret(reference).await;
            }
            Err(StoreError::NotFound { .. }) => {
                let key = Keys::generate();
                let reference = secrets.put_secret(SIGNING_KEY, &key).await?;
                let doc = Doc { id: SIGNING_KEY.into(), workspace_id: None, body: serde_json::json!({"secret": reference}), version: Version::INITIAL };
                match store.insert_doc(DocKind::Setting, &doc).await {
                    Ok(_) => return Ok(key),
                    Err(StoreError::Duplicate { .. }) => {
                        let _ = secrets.delete_secret(&reference).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(Box::new(std::io::Error::other("the signing key setting kept changing"))))
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_for_signature_and_expiry() {
        let keys = Keys::new(b"k".to_vec());
        let grant = Grant { client_id: "client".into(), role: Role::WorkspaceReader, workspace: Some("w1".into()) };
        let token = keys.access_token(&grant, 100);
        assert_eq!(keys.check_access_token(&token, 99).unwrap(), grant);
        let promoted = token.replace("workspace_reader", "workspace_admin");
        assert!(keys.check_access_token(&promoted, 99).unwrap_err().contains("not one this server issued"));
        assert!(keys.check_access_token(&token, 100).unwrap_err().contains("expired"));
        let forged = token.replace(".100.", ".999.");
        assert!(keys.check_access_token(&forged, 99).unwrap_err().contains("not one this server issued"));
        assert!(Keys::new(b"other".to_vec()).check_access_token(&token, 99).is_err());
        assert!(keys.check_access_token("garbage", 0).is_err());
    }

    #[test]
    fn a_workload_credential_opens_only_its_workload() {
        let keys = Keys::new(b"k".to_vec());
        let token = keys.workload_token("w1");
        assert!(keys.check_workload_token("w1", &token));
        assert!(!keys.check_workload_token("w2", &token));
        assert!(!keys.check_workload_token("w1", "zz"));
        assert!(keys.check_secret("s3cret", &keys.secret_hash("s3cret")));
        assert!(!keys.check_secret("guess", &keys.secret_hash("s3cret")));
    }
}
