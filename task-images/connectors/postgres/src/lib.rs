//! What the PostgreSQL connectors share: the server's settings in the shape
//! of Airbyte's configs (`host`, `port`, `database`, `username`,
//! `password`, `ssl_mode`, `jdbc_url_params`), a connection with TLS as
//! `ssl_mode` asks, and connection errors that say what to do without
//! showing a secret.

use serde::Deserialize;
use serde_json::{json, Value};
use sluice_connector_kit::Failure;

/// The server and how to reach it; a connector's config flattens it in.
#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub database: String,
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ssl_mode: Option<SslMode>,
    /// Extra connection parameters, `key=value&key=value` as Airbyte's
    /// `jdbc_url_params` (those libpq knows: `application_name`,
    /// `connect_timeout`, `options`, `keepalives`, `target_session_attrs` ...).
    #[serde(default)]
    pub jdbc_url_params: Option<String>,
}

fn default_port() -> u16 {
    5432
}

/// Airbyte's `ssl_mode` object: `{"mode": "require"}` and, for the
/// verifying modes, the certificates.
#[derive(Debug, Clone, Deserialize)]
pub struct SslMode {
    pub mode: String,
    #[serde(default)]
    pub ca_certificate: Option<String>,
    #[serde(default)]
    pub client_certificate: Option<String>,
    #[serde(default)]
    pub client_key: Option<String>,
    #[serde(default)]
    pub client_key_password: Option<String>,
}

impl Server {
    /// The connection settings for the `postgres` client, and the TLS
    /// they need (None: a plain connection).
    pub fn connection(&self, application: &str) -> Result<(postgres::Config, Option<rustls::ClientConfig>), Failure> {
        let mut c = postgres::Config::new();
        c.host(&self.host).port(self.port).dbname(&self.database).user(&self.username).application_name(application);
        c.connect_timeout(std::time::Duration::from_secs(30));
        if let Some(password) = &self.password {
            c.password(password);
        }
        let tls = match &self.ssl_mode {
            None => None,
            Some(ssl) => {
                use postgres::config::SslMode::*;
                // `allow` (plain first, TLS if the server insists) is taken
                // as `prefer` (TLS first, plain if the server has none):
                // both end on whatever the server allows, unverified.
                let (mode, verify) = match ssl.mode.as_str() {
                    "disable" => (Disable, None),
                    "allow" | "prefer" => (Prefer, Some(tls::Verify::Nothing)),
                    "require" => (Require, Some(tls::Verify::Nothing)),
                    "verify-ca" => (Require, Some(tls::Verify::Chain)),
                    "verify-full" => (Require, Some(tls::Verify::ChainAndHost)),
                    other => return Err(Failure::config(format!("ssl_mode {other} is not one of disable, allow, prefer, require, verify-ca, verify-full"))),
                };
                c.ssl_mode(mode);
                verify.map(|v| tls::client_config(ssl, v)).transpose()?
            }
        };
        if tls.is_none() {
            c.ssl_mode(postgres::config::SslMode::Disable);
        }
        for pair in self.jdbc_url_params.as_deref().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| Failure::config(format!("jdbc_url_params: `{pair}` is not key=value")))?;
            match key {
                "application_name" => {
                    c.application_name(value);
                }
                "options" => {
                    c.options(value);
                }
                "connect_timeout" | "connectTimeout" => {
                    let secs: u64 = value.parse().map_err(|_| Failure::config(format!("jdbc_url_params: {key}={value} is not a number of seconds")))?;
                    c.connect_timeout(std::time::Duration::from_secs(secs));
                }
                "keepalives" | "tcpKeepAlive" => {
                    c.keepalives(value != "0" && value != "false");
                }
                "target_session_attrs" => {
                    c.target_session_attrs(if value == "read-write" { postgres::config::TargetSessionAttrs::ReadWrite } else { postgres::config::TargetSessionAttrs::Any });
                }
                other => return Err(Failure::config(format!("jdbc_url_params: `{other}` is not a connection parameter destination-postgres knows"))),
            }
        }
        Ok((c, tls))
    }

    /// What a connection problem means to a user, without the password.
    pub fn connect(&self, application: &str) -> Result<postgres::Client, Failure> {
        let client = match self.connection(application)? {
            (c, None) => c.connect(postgres::NoTls),
            (c, Some(tls)) => c.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)),
        };
        client.map_err(|e| Failure::config(connect_error(self, &e)))
    }
}

fn connect_error(config: &Server, e: &postgres::Error) -> String {
    let at = format!("{}@{}:{}/{}", config.username, config.host, config.port, config.database);
    if let Some(db) = e.as_db_error() {
        return match db.code().code() {
            "28P01" => format!("PostgreSQL at {at} refused the password for user {} (check the username and password)", config.username),
            "28000" => format!("PostgreSQL at {at} refused user {}: {} (the server's pg_hba.conf says who may connect from where, and whether over TLS)", config.username, db.message()),
            "3D000" => format!("PostgreSQL at {at}: the database {} does not exist", config.database),
            _ => format!("PostgreSQL at {at} refused the connection: {}", db.message()),
        };
    }
    let detail = std::iter::successors(std::error::Error::source(e), |e| e.source()).last().map(|e| e.to_string()).unwrap_or_default();
    if e.to_string().contains("TLS") {
        let mode = config.ssl_mode.as_ref().map_or("disable", |m| m.mode.as_str());
        return format!("the TLS handshake with PostgreSQL at {at} failed (ssl_mode {mode}): {detail} (check ssl_mode and its certificates, and that the server has ssl on)");
    }
    format!("cannot reach PostgreSQL at {at}: {e} (is the server running, and are host and port right?)")
}

/// TLS as `ssl_mode` asks: encryption only, or a server proven by the
/// configured CA (and, for verify-full, by its name), optionally with a
/// client certificate.
mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
    use sluice_connector_kit::Failure;

    use super::SslMode;

    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Verify {
        Nothing,
        Chain,
        ChainAndHost,
    }

    pub fn client_config(ssl: &SslMode, verify: Verify) -> Result<rustls::ClientConfig, Failure> {
        let mode = &ssl.mode;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::system(format!("TLS: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match verify {
            Verify::Nothing => Arc::new(Unverified(provider)),
            Verify::Chain | Verify::ChainAndHost => {
                let pem = ssl.ca_certificate.as_deref().filter(|p| !p.trim().is_empty()).ok_or_else(|| Failure::config(format!("ssl_mode {mode} needs ca_certificate: the PEM of the CA that signed the server's certificate")))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| Failure::config(format!("ssl_mode {mode}: ca_certificate is not a PEM certificate: {e}")))?;
                    roots.add(cert).map_err(|e| Failure::config(format!("ssl_mode {mode}: ca_certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(Failure::config(format!("ssl_mode {mode}: ca_certificate holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
                }
                let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| Failure::config(format!("ssl_mode {mode}: ca_certificate: {e}")))?;
                if verify == Verify::Chain {
                    Arc::new(ChainOnly(chain))
                } else {
                    chain
                }
            }
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        if ssl.client_key_password.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(Failure::config(format!(
                "ssl_mode {mode}: an encrypted client_key (client_key_password) is not supported; give the key unencrypted (openssl pkcs8 -topk8 -nocrypt)"
            )));
        }
        match (ssl.client_certificate.as_deref().filter(|p| !p.trim().is_empty()), ssl.client_key.as_deref().filter(|p| !p.trim().is_empty())) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Failure::config(format!("ssl_mode {mode}: client_certificate is not a PEM certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| Failure::config(format!("ssl_mode {mode}: client_key is not a PEM private key: {e}")))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| Failure::config(format!("ssl_mode {mode}: the client certificate and key do not go together: {e}")))
            }
            (Some(_), None) => Err(Failure::config(format!("ssl_mode {mode}: client_certificate is set but client_key is not"))),
            (None, Some(_)) => Err(Failure::config(format!("ssl_mode {mode}: client_key is set but client_certificate is not"))),
        }
    }

    /// `prefer` and `require`: encrypted, the server's certificate taken
    /// as it comes (libpq's meaning of these modes). The handshake's
    /// signatures are still checked against it.
    #[derive(Debug)]
    struct Unverified(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `verify-ca`: the chain must lead to the configured CA; the name in
    /// the certificate need not be the host's. webpki checks the chain
    /// before the name, so a name error means the chain was good.
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self.0.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
                Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}


/// An identifier, quoted for SQL.
pub fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The spec of `ssl_mode`, as Airbyte's Postgres connectors have it.
pub fn ssl_mode_spec(order: u32) -> Value {
    let certificate = json!({"type": "string", "airbyte_secret": true, "multiline": true});
    let password = json!({"type": "string", "airbyte_secret": true});
    let verifying = |mode: &str, required: Value| {
        json!({"title": mode, "required": required, "properties": {"mode": {"type": "string", "const": mode},
            "ca_certificate": certificate, "client_certificate": certificate, "client_key": certificate, "client_key_password": password}})
    };
    json!({
        "title": "SSL modes", "type": "object", "order": order,
        "description": "How the connection is encrypted: disable; allow and prefer (TLS when the server has it, unverified); require (TLS, unverified); verify-ca (the server's certificate must lead to ca_certificate); verify-full (and must name the host).",
        "oneOf": [
            {"title": "disable", "required": ["mode"], "properties": {"mode": {"type": "string", "const": "disable"}}},
            {"title": "allow", "required": ["mode"], "properties": {"mode": {"type": "string", "const": "allow"}}},
            {"title": "prefer", "required": ["mode"], "properties": {"mode": {"type": "string", "const": "prefer"}}},
            {"title": "require", "required": ["mode"], "properties": {"mode": {"type": "string", "const": "require"}}},
            verifying("verify-ca", json!(["mode", "ca_certificate"])),
            verifying("verify-full", json!(["mode", "ca_certificate", "client_certificate", "client_key"]))
        ]
    })
}
