//! The one module that talks to PostgreSQL: the catalog's tables, their
//! size, and rows streamed out by `COPY (SELECT ...) TO STDOUT`.

use std::io::BufRead;

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
}
