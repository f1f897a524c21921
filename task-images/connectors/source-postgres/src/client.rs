//! The one module that talks to PostgreSQL: the catalog's tables, their
//! size, and rows streamed out by `COPY (SELECT ...) TO STDOUT`.

use std::io::{BufRead, Read};

use sluice_connector_kit::Failure;
use sluice_postgres::quoted;

use crate::layout::Column;

/// A table or view of the chosen schemas.
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`: `r` table, `p` partitioned, `v` view, `m` materialized view, `f` foreign.
    pub relkind: String,
    pub columns: Vec<Column>,
    /// Each column's type as SQL (`format_type`), for literals of it.
    pub types: Vec<String>,
    pub primary_key: Vec<String>,
    /// The planner's estimates: pages and rows.
    pub pages: i64,
    pub rows: f64,
}

impl Table {
    pub fn sql(&self) -> String {
        format!("{}.{}", quoted(&self.schema), quoted(&self.name))
    }

    /// Whether rows can be read by ranges of pages (`ctid`), and so resumed mid-table.
    pub fn has_pages(&self) -> bool {
        matches!(self.relkind.as_str(), "r" | "m")
    }

    pub fn type_of(&self, column: &str) -> Option<&str> {
        self.columns.iter().position(|c| c.name == column).map(|i| self.types[i].as_str())
    }
}

fn failed(what: &str, e: postgres::Error) -> Failure {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    Failure::system(format!("PostgreSQL: {what}: {detail}"))
}

pub struct Db {
    client: postgres::Client,
}

/// `COPY ... TO STDOUT` as lines whose fields are split by \x02 and never
/// quoted: the JSON the server builds has no raw control characters.
const COPY_OPTIONS: &str = "(format csv, delimiter e'\\x02', quote e'\\x01')";

impl Db {
    pub fn new(mut client: postgres::Client) -> Result<Db, Failure> {
        // Timestamps with time zone in UTC; text forms that do not depend on the server's settings.
        client
            .batch_execute("set timezone = 'UTC'; set datestyle = 'ISO'; set intervalstyle = 'iso_8601'; set extra_float_digits = 3")
            .map_err(|e| failed("setting the session up", e))?;
        Ok(Db { client })
    }

    /// The tables and views of `schemas` the user may select from, with
    /// their columns and primary keys.
    pub fn tables(&mut self, schemas: &[String]) -> Result<Vec<Table>, Failure> {
        let rows = self
            .client
            .query(
                "select n.nspname::text, c.relname::text, c.relkind::text, a.attname::text, t.typname::text, t.typtype::text, \
                        et.typname::text, format_type(a.atttypid, a.atttypmod), \
                        coalesce((select array_agg(ka.attname::text order by k.i) from pg_constraint p \
                                    cross join lateral unnest(p.conkey) with ordinality k(attnum, i) \
                                    join pg_attribute ka on ka.attrelid = p.conrelid and ka.attnum = k.attnum \
                                  where p.conrelid = c.oid and p.contype = 'p'), '{}'), \
                        c.relpages::bigint, c.reltuples::float8 \
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                 join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
                 join pg_type t on t.oid = a.atttypid \
                 left join pg_type et on et.oid = t.typelem and t.typcategory = 'A' \
                 where n.nspname = any($1) and c.relkind in ('r', 'p', 'v', 'm', 'f') and not c.relispartition \
                   and has_table_privilege(c.oid, 'SELECT') \
                 order by n.nspname, c.relname, a.attnum",
                &[&schemas],
            )
            .map_err(|e| failed("reading the catalog", e))?;
        let mut tables: Vec<Table> = Vec::new();
        for row in rows {
            let (schema, name): (String, String) = (row.get(0), row.get(1));
            if tables.last().is_none_or(|t| t.schema != schema || t.name != name) {
                tables.push(Table {
                    schema,
                    name,
                    relkind: row.get(2),
                    columns: Vec::new(),
                    types: Vec::new(),
                    primary_key: row.get(8),
                    pages: row.get(9),
                    rows: row.get(10),
                });
            }
            let table = tables.last_mut().expect("pushed");
            table.columns.push(Column { name: row.get(3), type_name: row.get(4), kind: row.get(5), element: row.get(6) });
            table.types.push(row.get(7));
        }
        Ok(tables)
    }

    /// The table's size in pages now (not the planner's estimate), and
    /// its file: a rewrite (VACUUM FULL, CLUSTER, TRUNCATE) gives a new one
    /// and moves every row to another page.
    pub fn pages_and_filenode(&mut self, table: &Table) -> Result<(i64, i64), Failure> {
        let row = self
            .client
            .query_one(
                "select pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint, pg_relation_filenode($1::text::regclass)::bigint",
                &[&table.sql()],
            )
            .map_err(|e| failed(&format!("reading the size of {}.{}", table.schema, table.name), e))?;
        Ok((row.get(0), row.get(1)))
    }

    /// One snapshot for every query until `end_snapshot`: the ranges of a
    /// table read in one attempt see the table as of one moment.
    pub fn begin_snapshot(&mut self, what: &str) -> Result<(), Failure> {
        self.client.batch_execute("begin isolation level repeatable read read only").map_err(|e| failed(what, e))
    }

    /// Begins a snapshot that other connections can read under too, and names it.
    pub fn export_snapshot(&mut self) -> Result<String, Failure> {
        self.begin_snapshot("beginning a snapshot to share")?;
        Ok(self.text("exporting the snapshot", "select pg_export_snapshot()", &[])?.unwrap_or_default())
    }

    /// Reads under the snapshot another connection exported, until `end_snapshot`.
    pub fn import_snapshot(&mut self, name: &str) -> Result<(), Failure> {
        self.begin_snapshot("beginning a shared snapshot")?;
        let literal = name.replace('\'', "''");
        self.client.batch_execute(&format!("set transaction snapshot '{literal}'")).map_err(|e| failed("reading under the shared snapshot", e))
    }

    pub fn end_snapshot(&mut self, what: &str) -> Result<(), Failure> {
        self.client.batch_execute("commit").map_err(|e| failed(what, e))
    }

    /// The single number a `select count(*) ...` answers.
    pub fn count(&mut self, what: &str, select: &str) -> Result<u64, Failure> {
        let row = self.client.query_one(select, &[]).map_err(|e| failed(what, e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Streams `select` out by COPY; `each` gets every line's fields (the
    /// first the record's JSON, the others `to_json` of a value or empty
    /// for null). Only one line is held at a time.
    pub fn each_row(&mut self, what: &str, select: &str, mut each: impl FnMut(&[&[u8]]) -> Result<(), Failure>) -> Result<u64, Failure> {
        let sql = format!("copy ({select}) to stdout {COPY_OPTIONS}");
        let mut reader = self.client.copy_out(&sql).map_err(|e| failed(what, e))?;
        let mut line = Vec::with_capacity(64 << 10);
        let mut rows = 0;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(|e| Failure::system(format!("PostgreSQL: {what}: {e}")))?;
            if n == 0 {
                break;
            }
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            // The record, the cursor and at most 32 key columns (PostgreSQL's limit for a key).
            let mut fields: [&[u8]; 34] = [&[]; 34];
            let mut used = 0;
            for (slot, field) in fields.iter_mut().zip(body.split(|&b| b == 0x02)) {
                *slot = field;
                used += 1;
            }
            each(&fields[..used])?;
            rows += 1;
        }
        Ok(rows)
    }

    /// The one value a query of one row and column answers, as text.
    fn text(&mut self, what: &str, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Option<String>, Failure> {
        let rows = self.client.query(sql, params).map_err(|e| failed(what, e))?;
        Ok(rows.first().and_then(|r| r.get::<_, Option<String>>(0)))
    }

    pub fn setting(&mut self, name: &str) -> Result<String, Failure> {
        Ok(self.text(&format!("reading the setting {name}"), "select current_setting($1)", &[&name])?.unwrap_or_default())
    }

    pub fn publication_exists(&mut self, publication: &str) -> Result<bool, Failure> {
        let row = self.client.query_one("select exists(select 1 from pg_publication where pubname = $1)", &[&publication]).map_err(|e| failed("reading the publications", e))?;
        Ok(row.get(0))
    }

    /// The tables of the publication, as (schema, name).
    pub fn published(&mut self, publication: &str) -> Result<Vec<(String, String)>, Failure> {
        let rows = self
            .client
            .query("select schemaname::text, tablename::text from pg_publication_tables where pubname = $1", &[&publication])
            .map_err(|e| failed(&format!("reading the tables of publication {publication}"), e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// `pg_class.relreplident`: d (the key), n (nothing), f (full), i (an index).
    pub fn replica_identity(&mut self, table: &Table) -> Result<String, Failure> {
        Ok(self.text("reading a replica identity", "select relreplident::text from pg_class where oid = $1::text::regclass", &[&table.sql()])?.unwrap_or_default())
    }

    /// The slot as the server has it, or None when there is no such slot.
    pub fn slot(&mut self, slot: &str) -> Result<Option<Slot>, Failure> {
        let rows = self
            .client
            .query(
                "select coalesce(plugin, '')::text, slot_type::text, coalesce(database, '')::text, confirmed_flush_lsn::text, \
                        pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
                 from pg_replication_slots where slot_name = $1",
                &[&slot],
            )
            .map_err(|e| failed(&format!("reading replication slot {slot}"), e))?;
        Ok(rows.first().map(|r| Slot {
            plugin: r.get(0),
            kind: r.get(1),
            database: r.get(2),
            confirmed: r.get::<_, Option<String>>(3).as_deref().and_then(crate::pgoutput::parse_lsn).unwrap_or(0),
            held_bytes: r.get::<_, Option<i64>>(4).unwrap_or(0),
        }))
    }

    /// Makes the slot; its position is where its changes start.
    pub fn create_slot(&mut self, slot: &str) -> Result<u64, Failure> {
        let lsn = self.text(&format!("creating replication slot {slot}"), "select lsn::text from pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])?;
        Ok(lsn.as_deref().and_then(crate::pgoutput::parse_lsn).unwrap_or(0))
    }

    /// Moves the slot's confirmed position to `lsn`: the server may then
    /// drop the WAL before it.
    pub fn advance_slot(&mut self, slot: &str, lsn: u64) -> Result<(), Failure> {
        let text = crate::pgoutput::lsn_text(lsn);
        self.text(&format!("moving replication slot {slot} to {text}"), "select pg_replication_slot_advance($1, $2::text::pg_lsn)::text", &[&slot, &text])?;
        Ok(())
    }

    /// The WAL flushed to disk: logical decoding reads no further.
    pub fn flushed_lsn(&mut self) -> Result<u64, Failure> {
        let text = self.text("reading the WAL position", "select pg_current_wal_flush_lsn()::text", &[])?;
        Ok(text.as_deref().and_then(crate::pgoutput::parse_lsn).unwrap_or(0))
    }

    /// Streams the slot's changes of transactions that committed before
    /// `upto`, without consuming them (the slot moves only by
    /// `advance_slot`): `each` gets each pgoutput message and its LSN.
    pub fn each_change(&mut self, slot: &str, publication: &str, upto: u64, mut each: impl FnMut(u64, &[u8]) -> Result<(), Failure>) -> Result<u64, Failure> {
        let what = format!("reading the changes of replication slot {slot}");
        let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
        let sql = format!(
            "copy (select lsn, data from pg_logical_slot_peek_binary_changes({}, {}::pg_lsn, null, 'proto_version', '1', 'publication_names', {})) to stdout (format binary)",
            literal(slot),
            literal(&crate::pgoutput::lsn_text(upto)),
            literal(publication)
        );
        let reader = self.client.copy_out(&sql).map_err(|e| failed(&what, e))?;
        let mut reader = std::io::BufReader::with_capacity(256 << 10, reader);
        let io = |e: std::io::Error| Failure::system(format!("PostgreSQL: {what}: {e}"));
        // Binary COPY: a signature, flags and an extension area, then tuples.
        let mut header = [0u8; 19];
        reader.read_exact(&mut header).map_err(io)?;
        if &header[..11] != b"PGCOPY\n\xff\r\n\0" {
            return Err(Failure::system(format!("PostgreSQL: {what}: not a binary COPY")));
        }
        let extension = u32::from_be_bytes(header[15..19].try_into().expect("4 bytes")) as usize;
        std::io::copy(&mut (&mut reader).take(extension as u64), &mut std::io::sink()).map_err(io)?;
        let mut data = Vec::with_capacity(64 << 10);
        let mut n = 0;
        loop {
            let mut count = [0u8; 2];
            reader.read_exact(&mut count).map_err(io)?;
            if i16::from_be_bytes(count) == -1 {
                break;
            }
            let mut field = |out: &mut Vec<u8>| -> Result<(), Failure> {
                let mut len = [0u8; 4];
                reader.read_exact(&mut len).map_err(io)?;
                let len = i32::from_be_bytes(len).max(0) as usize;
                out.resize(len, 0);
                reader.read_exact(out).map_err(io)
            };
            let mut lsn = Vec::with_capacity(8);
            field(&mut lsn)?;
            field(&mut data)?;
            let lsn = u64::from_be_bytes(lsn.as_slice().try_into().map_err(|_| Failure::system(format!("PostgreSQL: {what}: an LSN of {} bytes", lsn.len())))?);
            each(lsn, &data)?;
            n += 1;
        }
        Ok(n)
    }
}

/// A replication slot as `pg_replication_slots` has it.
#[derive(Debug, Clone)]
pub struct Slot {
    pub plugin: String,
    pub kind: String,
    pub database: String,
    pub confirmed: u64,
    /// WAL the slot keeps from being removed, in bytes.
    pub held_bytes: i64,
}
