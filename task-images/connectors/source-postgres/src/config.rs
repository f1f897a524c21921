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

/// CDC's settings, as Airbyte's `replication_method` names them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cdc {
    pub slot: String,
    pub publication: String,
    /// `invalid_cdc_cursor_position_behavior`: when the saved position is no
    /// longer in the slot, read every stream again ("Re-sync data") rather
    /// than fail ("Fail sync").
    pub resync_when_behind: bool,
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
            "CDC" => {
                config.cdc()?;
                Ok(config)
            }
            other => Err(Failure::config(format!("replication_method `{other}` is not one of Standard, CDC (Airbyte's Xmin is not offered: use a cursor column)"))),
        }
    }

    /// The CDC settings, when `replication_method` is CDC.
    pub fn cdc(&self) -> Result<Option<Cdc>, Failure> {
        if self.method() != "CDC" {
            return Ok(None);
        }
        let m = self.replication_method.as_ref().expect("CDC has a replication_method");
        let text = |key: &str| m.get(key).and_then(Value::as_str).map(str::to_owned).filter(|v| !v.is_empty());
        let slot = text("replication_slot").ok_or_else(|| Failure::config("replication_method CDC needs `replication_slot`: the logical replication slot to read (pgoutput)"))?;
        let publication = text("publication").ok_or_else(|| Failure::config("replication_method CDC needs `publication`: the publication naming the tables to read"))?;
        if let Some(plugin) = text("plugin").filter(|p| p != "pgoutput") {
            return Err(Failure::config(format!("replication_method CDC: plugin {plugin} is not offered; pgoutput is")));
        }
        let resync = match text("invalid_cdc_cursor_position_behavior").as_deref() {
            None | Some("Fail sync") => false,
            Some("Re-sync data") => true,
            Some(other) => return Err(Failure::config(format!("invalid_cdc_cursor_position_behavior `{other}` is not one of \"Fail sync\", \"Re-sync data\""))),
        };
        Ok(Some(Cdc { slot, publication, resync_when_behind: resync }))
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
                "replication_method": replication_method_spec()
            }
        },
        "supportsIncremental": true,
        "protocol_version": "0.5.2"
    }))
    .expect("static spec")
}

/// `replication_method`: CDC or Standard, as Airbyte's source-postgres offers them.
fn replication_method_spec() -> Value {
    json!({
        "title": "Update Method", "type": "object", "order": 9,
        "description": "CDC: changes read from a logical replication slot after a first snapshot. Standard: each stream is read whole (full refresh) or by a cursor column (incremental).",
        "default": {"method": "Standard"},
        "oneOf": [
            {"title": "Read Changes using Write-Ahead Log (CDC)", "required": ["method", "replication_slot", "publication"],
             "properties": {
                "method": {"type": "string", "const": "CDC", "order": 1},
                "plugin": {"type": "string", "enum": ["pgoutput"], "default": "pgoutput", "order": 2},
                "replication_slot": {"type": "string", "order": 3, "title": "Replication Slot",
                    "description": "A logical replication slot with the pgoutput plugin: SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput'). Created on the first sync if it does not exist."},
                "publication": {"type": "string", "order": 4, "title": "Publication",
                    "description": "The publication of the tables to read: CREATE PUBLICATION airbyte_publication FOR TABLE ..."},
                "initial_waiting_seconds": {"type": "integer", "default": 1200, "minimum": 120, "maximum": 2400, "order": 5, "airbyte_hidden": true},
                "invalid_cdc_cursor_position_behavior": {"type": "string", "enum": ["Fail sync", "Re-sync data"], "default": "Fail sync", "order": 6,
                    "title": "Invalid CDC position behavior",
                    "description": "When the position saved by the last sync is no longer in the slot: fail, or read every table again."},
                "lsn_commit_behaviour": {"type": "string", "enum": ["After loading Data in the destination"], "default": "After loading Data in the destination", "order": 7,
                    "description": "The slot moves forward only to a position the destination has committed, at the start of the next sync."}
             }},
            {"title": "Scan Changes with User Defined Cursor", "required": ["method"],
             "properties": {"method": {"type": "string", "const": "Standard"}}}
        ]
    })
}
