//! The connector's config, in the shape of Airbyte's destination-postgres,
//! its spec, and `check`.

use serde::Deserialize;
use serde_json::{json, Value};
use sluice_connector_kit::Failure;
use sluice_protocol::ConnectorSpecification;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub database: String,
    /// Where streams without a namespace go.
    #[serde(default = "default_schema")]
    pub schema: String,
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
    /// Airbyte's options that have no meaning here are accepted and ignored.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

fn default_port() -> u16 {
    5432
}

fn default_schema() -> String {
    "public".into()
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

impl Config {
    /// The parsed config from a file, with every problem said by name.
    pub fn load(path: &std::path::Path) -> Result<Config, Failure> {
        let value: Value = sluice_connector_kit::read_json("config", path)?;
        serde_json::from_value(value).map_err(|e| Failure::config(format!("the config is not destination-postgres's: {e}")))
    }

    /// The connection settings for the `postgres` client, and the TLS
    /// they need (None: a plain connection).
    pub fn connection(&self) -> Result<(postgres::Config, Option<rustls::ClientConfig>), Failure> {
        let mut c = postgres::Config::new();
        c.host(&self.host).port(self.port).dbname(&self.database).user(&self.username).application_name("sluice-destination-postgres");
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
    pub fn connect(&self) -> Result<postgres::Client, Failure> {
        let client = match self.connection()? {
            (c, None) => c.connect(postgres::NoTls),
            (c, Some(tls)) => c.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)),
        };
        client.map_err(|e| Failure::config(connect_error(self, &e)))
    }
}

fn connect_error(config: &Config, e: &postgres::Error) -> String {
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

/// `check`: the server answers, and the user may create tables in the schema.
pub fn check(config: &Config) -> Result<(), Failure> {
    let mut client = config.connect()?;
    let row = client
        .query_one(
            "select exists(select 1 from pg_namespace where nspname = $1), \
             case when exists(select 1 from pg_namespace where nspname = $1) then has_schema_privilege(current_user, $1, 'CREATE') \
                  else has_database_privilege(current_user, current_database(), 'CREATE') end",
            &[&config.schema],
        )
        .map_err(|e| Failure::config(format!("PostgreSQL answered the privilege check with an error: {e}")))?;
    let (exists, may_create): (bool, bool) = (row.get(0), row.get(1));
    match (exists, may_create) {
        (_, true) => Ok(()),
        (true, false) => Err(Failure::config(format!(
            "user {} may not create tables in schema {}: GRANT CREATE ON SCHEMA {} TO {}",
            config.username, config.schema, crate::layout::quoted(&config.schema), crate::layout::quoted(&config.username)
        ))),
        (false, false) => Err(Failure::config(format!(
            "schema {} does not exist and user {} may not create it: create it, or GRANT CREATE ON DATABASE {} TO {}",
            config.schema, config.username, crate::layout::quoted(&config.database), crate::layout::quoted(&config.username)
        ))),
    }
}

pub fn spec() -> ConnectorSpecification {
    serde_json::from_value(json!({
        "documentationUrl": "https://docs.airbyte.com/integrations/destinations/postgres",
        "connectionSpecification": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "Postgres Destination Spec",
            "type": "object",
            "required": ["host", "port", "username", "database", "schema"],
            "properties": {
                "host": {"title": "Host", "type": "string", "order": 0, "description": "Hostname of the database."},
                "port": {"title": "Port", "type": "integer", "minimum": 0, "maximum": 65536, "default": 5432, "order": 1},
                "database": {"title": "DB Name", "type": "string", "order": 2},
                "schema": {"title": "Default Schema", "type": "string", "default": "public", "order": 3,
                    "description": "The schema tables are written to when a stream has no namespace."},
                "username": {"title": "User", "type": "string", "order": 4},
                "password": {"title": "Password", "type": "string", "airbyte_secret": true, "order": 5},
                "ssl_mode": {
                    "title": "SSL modes", "type": "object", "order": 7,
                    "oneOf": [
                        {"title": "disable", "required": ["mode"], "properties": {"mode": {"type": "string", "const": "disable"}}},
                        {"title": "allow", "required": ["mode"], "properties": {"mode": {"type": "string", "const": "allow"}}},
                        {"title": "prefer", "required": ["mode"], "properties": {"mode": {"type": "string", "const": "prefer"}}},
                        {"title": "require", "required": ["mode"], "properties": {"mode": {"type": "string", "const": "require"}}},
                        {"title": "verify-ca", "required": ["mode", "ca_certificate"], "properties": {"mode": {"type": "string", "const": "verify-ca"},
                            "ca_certificate": {"type": "string", "airbyte_secret": true, "multiline": true},
                            "client_certificate": {"type": "string", "airbyte_secret": true, "multiline": true},
                            "client_key": {"type": "string", "airbyte_secret": true, "multiline": true},
                            "client_key_password": {"type": "string", "airbyte_secret": true}}},
                        {"title": "verify-full", "required": ["mode", "ca_certificate", "client_certificate", "client_key"], "properties": {"mode": {"type": "string", "const": "verify-full"},
                            "ca_certificate": {"type": "string", "airbyte_secret": true, "multiline": true},
                            "client_certificate": {"type": "string", "airbyte_secret": true, "multiline": true},
                            "client_key": {"type": "string", "airbyte_secret": true, "multiline": true},
                            "client_key_password": {"type": "string", "airbyte_secret": true}}}
                    ]
                },
                "jdbc_url_params": {"title": "JDBC URL Params", "type": "string", "order": 8,
                    "description": "Additional connection properties, key=value pairs joined by '&'."}
            }
        },
        "supportsIncremental": true,
        "supported_destination_sync_modes": ["overwrite", "append", "append_dedup", "overwrite_dedup"],
        "protocol_version": "0.5.2"
    }))
    .expect("static spec")
}
