//! Configuration documents: one table, keyed by (kind, id), listed in
//! insertion order, every update and delete conditional on the version.

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, ErrorCode, OptionalExtension};
use sluice_domain::Version;
use sluice_store::{ConfigStore, Doc, DocKind, StoreError};

use crate::{unavailable, SqliteStore};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS docs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    workspace_id TEXT,
    body TEXT NOT NULL,
    version INTEGER NOT NULL,
    UNIQUE (kind, id)
);
CREATE INDEX IF NOT EXISTS docs_by_workspace ON docs (kind, workspace_id, seq);
";

fn doc_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Doc> {
    let body: String = row.get(2)?;
    let body = serde_json::from_str(&body)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(Doc { id: row.get(0)?, workspace_id: row.get(1)?, body, version: Version::new(row.get::<_, i64>(3)? as u64) })
}

fn entity(kind: DocKind) -> &'static str {
    kind.as_str()
}

impl SqliteStore {
    /// Why a conditional write changed no row: a newer version, or no document.
    fn refusal(conn: &rusqlite::Connection, kind: DocKind, id: &str) -> StoreError {
        let current: rusqlite::Result<Option<i64>> = conn
            .query_row("SELECT version FROM docs WHERE kind = ?1 AND id = ?2", params![kind.as_str(), id], |r| r.get(0))
            .optional();
        match current {
            Ok(Some(v)) => StoreError::Conflict { entity: entity(kind), id: id.to_owned(), current: Version::new(v as u64) },
            Ok(None) => StoreError::NotFound { entity: entity(kind), id: id.to_owned() },
            Err(e) => unavailable(e),
        }
    }
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn insert_doc(&self, kind: DocKind, doc: &Doc) -> Result<Doc, StoreError> {
        let stored = Doc { version: Version::INITIAL.next(), ..doc.clone() };
        self.with(|conn| {
            let inserted = conn.execute(
                "INSERT INTO docs (kind, id, workspace_id, body, version) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![kind.as_str(), stored.id, stored.workspace_id, stored.body.to_string(), stored.version.get() as i64],
            );
            match inserted {
                Ok(_) => Ok(stored.clone()),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                    Err(StoreError::Duplicate { entity: entity(kind), id: stored.id.clone() })
                }
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    async fn get_doc(&self, kind: DocKind, id: &str) -> Result<Doc, StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT id, workspace_id, body, version FROM docs WHERE kind = ?1 AND id = ?2", params![kind.as_str(), id], doc_from_row)
                .optional()
                .map_err(unavailable)?
                .ok_or_else(|| StoreError::NotFound { entity: entity(kind), id: id.to_owned() })
        })
    }

    async fn update_doc(&self, kind: DocKind, doc: &Doc) -> Result<Doc, StoreError> {
        let written = Doc { version: doc.version.next(), ..doc.clone() };
        self.with(|conn| {
            let changed = conn
                .execute(
                    "UPDATE docs SET workspace_id = ?1, body = ?2, version = ?3 WHERE kind = ?4 AND id = ?5 AND version = ?6",
                    params![written.workspace_id, written.body.to_string(), written.version.get() as i64, kind.as_str(), doc.id, doc.version.get() as i64],
                )
                .map_err(unavailable)?;
            if changed == 1 {
                Ok(written.clone())
            } else {
                Err(Self::refusal(conn, kind, &doc.id))
            }
        })
    }

    async fn delete_doc(&self, kind: DocKind, id: &str, version: Version) -> Result<(), StoreError> {
        self.with(|conn| {
            let changed = conn
                .execute("DELETE FROM docs WHERE kind = ?1 AND id = ?2 AND version = ?3", params![kind.as_str(), id, version.get() as i64])
                .map_err(unavailable)?;
            if changed == 1 {
                Ok(())
            } else {
                Err(Self::refusal(conn, kind, id))
            }
        })
    }

    async fn list_docs(&self, kind: DocKind, workspaces: &[String], limit: usize, offset: usize) -> Result<Vec<Doc>, StoreError> {
        self.read(|conn| {
            use rusqlite::types::Value as Sql;
            let mut values: Vec<Sql> = vec![Sql::Text(kind.as_str().to_owned())];
            let mut sql = String::from("SELECT id, workspace_id, body, version FROM docs WHERE kind = ?1");
            if !workspaces.is_empty() {
                let marks: Vec<String> = (0..workspaces.len()).map(|i| format!("?{}", i + 2)).collect();
                sql.push_str(&format!(" AND workspace_id IN ({})", marks.join(", ")));
                values.extend(workspaces.iter().map(|w| Sql::Text(w.clone())));
            }
            // Bound, not written in: one statement text per kind of query, so the cache holds it.
            sql.push_str(&format!(" ORDER BY seq LIMIT ?{} OFFSET ?{}", values.len() + 1, values.len() + 2));
            values.extend([Sql::Integer(limit.min(i64::MAX as usize) as i64), Sql::Integer(offset.min(i64::MAX as usize) as i64)]);
            let mut statement = conn.prepare_cached(&sql).map_err(unavailable)?;
            let rows = statement.query_map(params_from_iter(values.iter()), doc_from_row).map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }
}
