//! The definitions every workspace has from the first start: Sluice's
//! reference connectors, and Airbyte's connectors that run from PyPI
//! without a network, under Airbyte's own names and type keys.

use sluice_domain::resources::{ActorKind, Definition};
use sluice_domain::Version;
use sluice_store::{DocKind, StoreError};

use super::doc;
use crate::App;

struct Builtin {
    id: &'static str,
    kind: ActorKind,
    name: &'static str,
    type_key: &'static str,
    runtime: &'static str,
    repository: &'static str,
    tag: &'static str,
    /// Speaks socket mode (our reference connectors): its definition says so in `connectorIPCOptions`.
    sockets: bool,
}

const BUILTINS: [Builtin; 10] = [
    // Airbyte's generic declarative runner, as Connector Builder publications
    // use it: the manifest comes in each config, `__injected_declarative_manifest`.
    Builtin {
        id: "64a2f99c-542f-4af8-9a6f-355f1217b436",
        kind: ActorKind::Source,
        name: "Declarative Manifest",
        type_key: "declarative-manifest",
        runtime: "manifest",
        repository: "airbyte/source-declarative-manifest",
        tag: sluice_domain::registry::RUNNER_VERSION,
        sockets: false,
    },
    // Airbyte's own definition id for source-faker, so scripts that name it work.
    Builtin {
        id: "dfd88b22-b603-4c3d-aad7-3701784586b1",
        kind: ActorKind::Source,
        name: "Faker",
        type_key: "faker",
        runtime: "pypi:airbyte-source-faker==7.2.1",
        repository: "airbyte/source-faker",
        tag: "7.2.1",
        sockets: false,
    },
    Builtin {
        id: "778daa7c-feaf-4db6-96f3-70fd645acc77",
        kind: ActorKind::Source,
        name: "File (CSV, JSON, Excel, Feather, Parquet)",
        type_key: "file",
        runtime: "pypi:airbyte-source-file==0.5.39",
        repository: "airbyte/source-file",
        tag: "0.5.39",
        sockets: false,
    },
    Builtin {
        id: "9d7a3c0e-5f44-4b63-9d0e-6a1c0b9c2f01",
        kind: ActorKind::Source,
        name: "Hardcoded Records",
        type_key: "hardcoded-records",
        runtime: "pypi:airbyte-source-hardcoded-records==0.0.48",
        repository: "airbyte/source-hardcoded-records",
        tag: "0.0.48",
        sockets: false,
    },
    Builtin {
        id: "5c1b0e7a-2d5e-4f0b-8a57-1f2f4b0c6e11",
        kind: ActorKind::Source,
        name: "Sluice Faker",
        type_key: "sluice-faker",
        runtime: "source-faker",
        repository: "sluice/source-faker",
        tag: "0.1.0",
        sockets: true,
    },
    Builtin {
        id: "0b6f3a9d-7c2e-4e8a-9f1d-3a5b7c9e1d22",
        kind: ActorKind::Destination,
        name: "Sluice JSON Lines",
        type_key: "sluice-jsonl",
        runtime: "destination-jsonl",
        repository: "sluice/destination-jsonl",
        tag: "0.1.0",
        sockets: true,
    },
    Builtin {
        id: "e2a4c6d8-1b3f-4a5c-8e7d-9f0a1b2c3d33",
        kind: ActorKind::Destination,
        name: "End-to-End Testing (/dev/null)",
        type_key: "dev-null",
        runtime: "destination-dev-null",
        repository: "sluice/destination-dev-null",
        tag: "0.1.0",
        sockets: true,
    },
    Builtin {
        // Airbyte's definition id for destination-postgres.
        id: "25c5221d-dce2-4163-ade9-739ef790f503",
        kind: ActorKind::Destination,
        name: "Postgres",
        type_key: "postgres",
        runtime: "destination-postgres",
        repository: "airbyte/destination-postgres",
        tag: "3.0.0",
        sockets: true,
    },
    Builtin {
        // Airbyte's definition id for source-postgres.
        id: "decd338e-5647-4c0b-adf4-da0e75f5a750",
        kind: ActorKind::Source,
        name: "Postgres",
        type_key: "postgres",
        runtime: "source-postgres",
        repository: "airbyte/source-postgres",
        tag: "3.7.0",
        sockets: true,
    },
    Builtin {
        // Airbyte's definition id for destination-s3.
        id: "4816b78f-1489-44c1-9060-4b19d5fa9362",
        kind: ActorKind::Destination,
        name: "S3",
        type_key: "s3",
        runtime: "destination-s3",
        repository: "airbyte/destination-s3",
        tag: "1.5.0",
        sockets: true,
    },
];

/// Airbyte's `connectorIPCOptions` for a connector that speaks socket mode.
pub fn reference_ipc_options() -> serde_json::Value {
    serde_json::json!({"dataChannel": {"version": "0.0.2", "supportedSerialization": ["JSONL", "PROTOBUF"], "supportedTransport": ["SOCKET", "STDIO"]}})
}

/// Stores the built-in definitions that are not there yet; returns how many.
pub async fn seed(app: &App) -> Result<usize, StoreError> {
    let mut added = 0;
    for b in &BUILTINS {
        let definition = Definition {
            id: b.id.to_owned(),
            kind: b.kind,
            name: b.name.to_owned(),
            type_key: b.type_key.to_owned(),
            runtime: b.runtime.to_owned(),
            docker_repository: b.repository.to_owned(),
            docker_image_tag: b.tag.to_owned(),
            protocol_version: "0.2.0".into(),
            // Our reference connectors speak socket mode (both framings) and stdio.
            connector_ipc_options: b.sockets.then(reference_ipc_options),
            connection_specification: None,
            workspace_id: None,
            declarative_manifest: None,
            manifest_version: 0,
            registry: None,
        };
        match app.config.insert_doc(DocKind::Definition, &doc(b.id, None, &definition, Version::INITIAL)).await {
            Ok(_) => added += 1,
            Err(StoreError::Duplicate { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(added)
}
