//! The connector's config, in the shape of Airbyte's source-postgres, its
//! spec, and `check`.

use serde::Deserialize;
use serde_json::{json, Value};
use sluice_connector_kit::Failure;
use sluice_postgres::Server;
use sluice_protocol::ConnectorSpecification;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub server: Server,
    /// The schemas whose tables and views become streams.
    #[serde(default = "default_schemas")]
    pub schemas: Vec<String>,
    #[serde(default)]
    pub replication_method: Option<Value>,
    /// About how much data (MB of records, or of a table's pages in a full
    /// refresh) goes between two STATEs.
    #[serde(default)]
    pub checkpoint_mb: Option<f64>,
    /// Airbyte's options that have no meaning here are accepted and ignored.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

fn default_schemas() -> Vec<String> {
    vec!["public".into()]
}

impl Config {
    pub fn load(path: &std::path::Path) -> Result<Config, Failure> {
        let value: Value = sluice_connector_kit::read_json("config", path)?;
        let config: Config = serde_json::from_value(value).map_err(|e| Failure::config(format!("the config is not source-postgres's: {e}")))?;
        if config.schemas.is_empty() {
            return Err(Failure::config("config: `schemas` names no schema; give at least one (Airbyte's default is [\"public\"])"));
        }
        if config.checkpoint_mb.is_some_and(|mb| mb.is_nan() || mb <= 0.0) {
            return Err(Failure::config("config: `checkpoint_mb` must be more than 0"));
        }
        match config.method() {
            "Standard" => Ok(config),
            "CDC" => Err(Failure::config(
                "replication_method CDC is not in this build of source-postgres yet: use Standard (full refresh, or incremental by a cursor column)",
            )),
            other => Err(Failure::config(format!("replication_method `{other}` is not one of Standard, CDC (Airbyte's Xmin is not offered: use a cursor column)"))),
        }
    }

    /// Airbyte's `replication_method.method`; Standard when absent.
    pub fn method(&self) -> &str {
        self.replication_method.as_ref().and_then(|m| m.get("method")).and_then(Value::as_str).unwrap_or("Standard")
    }

    pub fn checkpoint_bytes(&self) -> u64 {
        (self.checkpoint_mb.unwrap_or(64.0) * 1048576.0) as u64
    }

    pub fn connect(&self) -> Result<postgres::Client, Failure> {
        self.server.connect("sluice-source-postgres")
    }
}

/// `check`: the server answers, and every configured schema exists and may be read.
pub fn check(config: &Config) -> Result<(), Failure> {
    let mut client = config.connect()?;
    let rows = client
        .query(
            "select s, exists(select 1 from pg_namespace where nspname = s), \
                    coalesce((select has_schema_privilege(current_user, oid, 'USAGE') from pg_namespace where nspname = s), false) \
             from unnest($1::text[]) s",
            &[&config.schemas],
        )
        .map_err(|e| Failure::config(format!("PostgreSQL answered the schema check with an error: {e}")))?;
    let mut problems = Vec::new();
    for row in rows {
        let (schema, exists, usable): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
        if !exists {
            problems.push(format!("schema {schema} does not exist in database {}", config.server.database));
        } else if !usable {
            problems.push(format!(
                "user {} may not use schema {schema}: GRANT USAGE ON SCHEMA {} TO {}; GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}",
                config.server.username,
                sluice_postgres::quoted(&schema),
                sluice_postgres::quoted(&config.server.username),
                sluice_postgres::quoted(&schema),
                sluice_postgres::quoted(&config.server.username)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::config(problems.join("; ")))
    }
}

pub fn spec() -> ConnectorSpecification {
    serde_json::from_value(json!({
        "documentationUrl": "https://docs.airbyte.com/integrations/sources/postgres",
        "connectionSpecification": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "Postgres Source Spec",
            "type": "object",
            "required": ["host", "port", "database", "username"],
            "properties": {
                "host": {"title": "Host", "type": "string", "order": 0, "description": "Hostname of the database."},
                "port": {"title": "Port", "type": "integer", "minimum": 0, "maximum": 65536, "default": 5432, "order": 1},
                "database": {"title": "Database Name", "type": "string", "order": 2},
                "schemas": {"title": "Schemas", "type": "array", "items": {"type": "string"}, "minItems": 0, "uniqueItems": true,
                    "default": ["public"], "order": 3, "description": "The schemas whose tables and views are read."},
                "username": {"title": "Username", "type": "string", "order": 4},
                "password": {"title": "Password", "type": "string", "airbyte_secret": true, "order": 5},
                "jdbc_url_params": {"title": "JDBC URL Parameters (Advanced)", "type": "string", "order": 6,
                    "description": "Additional connection properties, key=value pairs joined by '&'."},
                "ssl_mode": sluice_postgres::ssl_mode_spec(8),
                "checkpoint_mb": {"title": "Checkpoint every (MB)", "type": "number", "exclusiveMinimum": 0, "default": 64, "order": 10, "airbyte_hidden": true,
                    "description": "About how much data goes between two checkpoints: a failed sync resumes from the last one."},
                "replication_method": {
                    "title": "Update Method", "type": "object", "order": 9,
                    "description": "Standard: each stream is read whole (full refresh) or by a cursor column (incremental).",
                    "default": {"method": "Standard"},
                    "oneOf": [
                        {"title": "Scan Changes with User Defined Cursor", "required": ["method"],
                         "properties": {"method": {"type": "string", "const": "Standard"}}}
                    ]
                }
            }
        },
        "supportsIncremental": true,
        "protocol_version": "0.5.2"
    }))
    .expect("static spec")
}
