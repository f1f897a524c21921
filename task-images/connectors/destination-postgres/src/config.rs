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
}

impl Config {
    /// The parsed config from a file, with every problem said by name.
    pub fn load(path: &std::path::Path) -> Result<Config, Failure> {
        let value: Value = sluice_connector_kit::read_json("config", path)?;
        serde_json::from_value(value).map_err(|e| Failure::config(format!("the config is not destination-postgres's: {e}")))
    }

    /// The connection settings for the `postgres` client.
    pub fn connection(&self) -> Result<postgres::Config, Failure> {
        let mut c = postgres::Config::new();
        c.host(&self.host).port(self.port).dbname(&self.database).user(&self.username).application_name("sluice-destination-postgres");
        c.connect_timeout(std::time::Duration::from_secs(30));
        if let Some(password) = &self.password {
            c.password(password);
        }
        let mode = self.ssl_mode.as_ref().map_or("disable", |m| m.mode.as_str());
        c.ssl_mode(match mode {
            "disable" | "allow" | "prefer" => postgres::config::SslMode::Disable,
            "require" | "verify-ca" | "verify-full" => {
                return Err(Failure::config(format!(
                    "ssl_mode {mode} is not supported by this build of destination-postgres yet: use disable, allow or prefer (a plain connection), or reach the server over a TLS tunnel"
                )))
            }
            other => return Err(Failure::config(format!("ssl_mode {other} is not one of disable, allow, prefer, require, verify-ca, verify-full"))),
        });
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
        Ok(c)
    }

    /// What a connection problem means to a user, without the password.
    pub fn connect(&self) -> Result<postgres::Client, Failure> {
        let client = self.connection()?.connect(postgres::NoTls);
        client.map_err(|e| Failure::config(connect_error(self, &e)))
    }
}

fn connect_error(config: &Config, e: &postgres::Error) -> String {
    let at = format!("{}@{}:{}/{}", config.username, config.host, config.port, config.database);
    if let Some(db) = e.as_db_error() {
        return match db.code().code() {
            "28P01" | "28000" => format!("PostgreSQL at {at} refused the password for user {} (check the username and password)", config.username),
            "3D000" => format!("PostgreSQL at {at}: the database {} does not exist", config.database),
            _ => format!("PostgreSQL at {at} refused the connection: {}", db.message()),
        };
    }
    format!("cannot reach PostgreSQL at {at}: {e} (is the server running, and are host and port right?)")
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
                            "ca_certificate": {"type": "string", "airbyte_secret": true, "multiline": true}}},
                        {"title": "verify-full", "required": ["mode", "ca_certificate", "client_certificate", "client_key"], "properties": {"mode": {"type": "string", "const": "verify-full"},
                            "ca_certificate": {"type": "string", "airbyte_secret": true, "multiline": true},
                            "client_certificate": {"type": "string", "airbyte_secret": true, "multiline": true},
                            "client_key": {"type": "string", "airbyte_secret": true, "multiline": true}}}
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
