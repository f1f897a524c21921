//! The connector's config, in the shape of Airbyte's destination-postgres,
//! its spec, and `check`.

use serde::Deserialize;
use serde_json::{json, Value};
use sluice_connector_kit::Failure;
use sluice_postgres::{quoted, Server};
use sluice_protocol::ConnectorSpecification;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub server: Server,
    /// Where streams without a namespace go.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Airbyte's options that have no meaning here are accepted and ignored.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

fn default_schema() -> String {
    "public".into()
}

impl Config {
    /// The parsed config from a file, with every problem said by name.
    pub fn load(path: &std::path::Path) -> Result<Config, Failure> {
        let value: Value = sluice_connector_kit::read_json("config", path)?;
        serde_json::from_value(value).map_err(|e| Failure::config(format!("the config is not destination-postgres's: {e}")))
    }

    pub fn connect(&self) -> Result<postgres::Client, Failure> {
        self.server.connect("sluice-destination-postgres")
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
            config.server.username, config.schema, quoted(&config.schema), quoted(&config.server.username)
        ))),
        (false, false) => Err(Failure::config(format!(
            "schema {} does not exist and user {} may not create it: create it, or GRANT CREATE ON DATABASE {} TO {}",
            config.schema, config.server.username, quoted(&config.server.database), quoted(&config.server.username)
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
                "ssl_mode": sluice_postgres::ssl_mode_spec(7),
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
