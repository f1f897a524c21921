//! The one module that talks to PostgreSQL: the table operations of
//! Airbyte's direct load (create, evolve, copy in, upsert, swap), as SQL on
//! one connection.

use std::io::Write;
use std::sync::mpsc;

use sluice_connector_kit::Failure;

use crate::layout::{quoted, Column, ColumnType, META, META_COLUMNS};

/// A table, by its schema and name (both already identifiers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: String,
    pub name: String,
}

impl Table {
    pub fn sql(&self) -> String {
        format!("{}.{}", quoted(&self.schema), quoted(&self.name))
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

fn failed(what: &str, e: postgres::Error) -> Failure {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    Failure::system(format!("PostgreSQL: {what}: {detail}"))
}

/// A table's columns as the catalog has them: name, and type when it is one of ours.
pub type CatalogColumns = Vec<(String, Option<ColumnType>)>;

pub struct Db {
    pub client: postgres::Client,
    /// Whether rows were copied since the last commit.
    open: bool,
}

/// `PGCOPY\n\377\r\n\0`, no flags, no header extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// How much of a batch is handed to the client at once.
const COPY_PIECE: usize = 256 << 10;

impl Db {
    pub fn new(client: postgres::Client) -> Db {
        Db { client, open: false }
    }

    /// Commits every row copied since the last commit: what a STATE covers
    /// is durable once this returns, and a crash before it loses only rows
    /// no STATE covers, which the retry reads again.
    pub fn commit(&mut self) -> Result<(), Failure> {
        if std::mem::take(&mut self.open) {
            self.execute("committing the copied rows", "commit")?;
        }
        Ok(())
    }

    /// Drops every row copied since the last commit.
    pub fn rollback(&mut self) -> Result<(), Failure> {
        if std::mem::take(&mut self.open) {
            self.execute("rolling back the rows no STATE covers", "rollback")?;
        }
        Ok(())
    }

    pub fn execute(&mut self, what: &str, sql: &str) -> Result<(), Failure> {
        self.client.batch_execute(sql).map_err(|e| failed(what, e))
    }

    /// The table's data columns and their types, or None if it does not exist.
    pub fn columns(&mut self, table: &Table) -> Result<Option<CatalogColumns>, Failure> {
        let rows = self
            .client
            .query(
                "select column_name::text, data_type::text from information_schema.columns where table_schema = $1 and table_name = $2 order by ordinal_position",
                &[&table.schema, &table.name],
            )
            .map_err(|e| failed(&format!("reading the columns of {table}"), e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.iter().map(|r| (r.get::<_, String>(0), ColumnType::from_catalog(&r.get::<_, String>(1)))).collect()))
    }

    /// Makes the table, or evolves it to hold `columns`: new columns added,
    /// types changed as [`ColumnType::evolved`] says (never losing a value
    /// already stored). Returns the columns as the table has them. A column
    /// the stream no longer declares stays, and fills with nulls.
    pub fn ensure_table(&mut self, table: &Table, columns: &[Column]) -> Result<Vec<Column>, Failure> {
        self.execute(&format!("creating schema {}", table.schema), &format!("create schema if not exists {}", quoted(&table.schema)))?;
        let Some(existing) = self.columns(table)? else {
            let defs: Vec<String> = META_COLUMNS
                .iter()
                .map(|(name, sql)| format!("{} {sql}", quoted(name)))
                .chain(columns.iter().map(|c| format!("{} {}", quoted(&c.name), c.kind.sql())))
                .collect();
            self.execute(&format!("creating {table}"), &format!("create table if not exists {} ({})", table.sql(), defs.join(", ")))?;
            return Ok(columns.to_vec());
        };
        let mut now = Vec::new();
        for c in columns {
            match existing.iter().find(|(name, _)| *name == c.name) {
                None => {
                    let sql = format!("alter table {} add column {} {}", table.sql(), quoted(&c.name), c.kind.sql());
                    self.execute(&format!("adding column {} to {table}", c.name), &sql)?;
                    now.push(c.clone());
                }
                Some((_, Some(had))) => {
                    let kind = had.evolved(c.kind);
                    if kind != *had {
                        let using = match kind {
                            ColumnType::Jsonb => format!("to_jsonb({})", quoted(&c.name)),
                            _ => format!("{}::{}", quoted(&c.name), kind.sql()),
                        };
                        let sql = format!("alter table {} alter column {} type {} using {using}", table.sql(), quoted(&c.name), kind.sql());
                        self.execute(&format!("changing column {} of {table} to {}", c.name, kind.sql()), &sql)?;
                    }
                    now.push(Column { kind, ..c.clone() });
                }
                Some((_, None)) => {
                    return Err(Failure::config(format!(
                        "column {} of {table} has a type destination-postgres cannot load by binary COPY; alter it to {} (what the stream declares), or drop it and the next sync adds it",
                        c.name,
                        c.kind.sql()
                    )))
                }
            }
        }
        Ok(now)
    }

    /// One binary `COPY` of encoded rows (each already a field count, its
    /// data fields, then Airbyte's four, or three without `_airbyte_meta`
    /// when `with_meta` is false and the table's default fills it) into
    /// the table, in the transaction [`Db::commit`] ends.
    pub fn copy_in(&mut self, table: &Table, columns: &[Column], rows: &[u8], with_meta: bool) -> Result<u64, Failure> {
        if !self.open {
            self.execute("starting a transaction", "begin")?;
            self.open = true;
        }
        // The data first: a row's `_airbyte_meta`, after it, names what did not fit.
        let ours = META_COLUMNS.iter().map(|(n, _)| *n).filter(|n| with_meta || *n != META);
        let names: Vec<String> = columns.iter().map(|c| quoted(&c.name)).chain(ours.map(quoted)).collect();
        let sql = format!("copy {} ({}) from stdin (format binary)", table.sql(), names.join(", "));
        let what = format!("copying into {table}");
        let mut writer = self.client.copy_in(&sql).map_err(|e| failed(&what, e))?;
        // In pieces: the client copies what one write gives it twice (its
        // buffer, then the connection's), and keeps those buffers' size; a
        // whole batch at once held three batches per connection.
        let written = writer
            .write_all(COPY_HEADER)
            .and_then(|_| rows.chunks(COPY_PIECE).try_for_each(|piece| writer.write_all(piece)))
            .and_then(|_| writer.write_all(&(-1i16).to_be_bytes()));
        if let Err(e) = written {
            // Dropping the writer unfinished aborts the COPY.
            drop(writer);
            return Err(Failure::system(format!("PostgreSQL: {what}: {e}")));
        }
        writer.finish().map_err(|e| failed(&what, e))
    }

    pub fn table_exists(&mut self, table: &Table) -> Result<bool, Failure> {
        Ok(self.columns(table)?.is_some())
    }

    /// The generations a table holds rows of.
    pub fn generations(&mut self, table: &Table) -> Result<Vec<i64>, Failure> {
        let sql = format!("select distinct coalesce(_airbyte_generation_id, 0) from {}", table.sql());
        let rows = self.client.query(&sql, &[]).map_err(|e| failed(&format!("reading the generations of {table}"), e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// What a staged table's rows whose values all fit hold in
    /// `_airbyte_meta`, as its default: such rows leave the column out of
    /// their `COPY`, and the server parses that JSON once instead of once a
    /// row (about 1.2 s of server CPU fewer per 4M rows of 1 KB). Set again by every
    /// sync, since it names the sync; gone when the table is swapped in.
    pub fn set_clean_meta(&mut self, staged: &Table, meta: &str) -> Result<(), Failure> {
        let sql = format!("alter table {} alter column {} set default '{}'::jsonb", staged.sql(), quoted(META), meta.replace('\'', "''"));
        self.execute(&format!("setting the default {META} of {staged}"), &sql)
    }

    /// The staged table replaces the final one, in one transaction: a
    /// reader sees the old table whole until the commit, then the new.
    pub fn swap(&mut self, staged: &Table, table: &Table) -> Result<(), Failure> {
        let sql = format!(
            "begin; alter table {staged} alter column {} drop default; drop table if exists {}; alter table {staged} rename to {}; commit;",
            quoted(META),
            table.sql(),
            quoted(&table.name),
            staged = staged.sql(),
        );
        self.execute(&format!("replacing {table} with {staged}"), &sql)
    }

    /// Merges the staged rows into the table, one row per primary key:
    /// the latest by cursor, then by `_airbyte_extracted_at`; a row whose
    /// `_ab_cdc_deleted_at` is set deletes its key. The staged table is
    /// emptied in the same transaction.
    pub fn upsert(&mut self, staged: &Table, table: &Table, columns: &[Column], key: &[String], cursor: Option<&str>, cdc_deletes: bool) -> Result<(), Failure> {
        let all: Vec<String> = META_COLUMNS.iter().map(|(n, _)| quoted(n)).chain(columns.iter().map(|c| quoted(&c.name))).collect();
        let list = all.join(", ");
        let keys: Vec<String> = key.iter().map(|k| quoted(k)).collect();
        let order = match cursor {
            Some(c) => format!("{} desc nulls last, \"_airbyte_extracted_at\" desc", quoted(c)),
            None => "\"_airbyte_extracted_at\" desc".into(),
        };
        let same_key = |a: &str, b: &str| keys.iter().map(|k| format!("{a}.{k} is not distinct from {b}.{k}")).collect::<Vec<_>>().join(" and ");
        // The table's row stays only when it is newer by cursor.
        let newer_kept = match cursor {
            Some(c) => format!(" and not (t.{c} is not null and (n.{c} is null or t.{c} > n.{c}))", c = quoted(c)),
            None => String::new(),
        };
        let not_deleted = if cdc_deletes { " and n.\"_ab_cdc_deleted_at\" is null" } else { "" };
        let sql = format!(
            "begin; \
             create temp table sluice_latest on commit drop as \
               select {list} from (select *, row_number() over (partition by {partition} order by {order}) as sluice_rank from {staged}) s where sluice_rank = 1; \
             delete from {table} t using sluice_latest n where {same}{newer_kept}; \
             insert into {table} ({list}) select {list} from sluice_latest n where not exists (select 1 from {table} t where {same}){not_deleted}; \
             truncate {staged}; \
             commit;",
            partition = keys.join(", "),
            staged = staged.sql(),
            table = table.sql(),
            same = same_key("t", "n"),
        );
        self.execute(&format!("merging {staged} into {table}"), &sql)
    }

    /// Keeps one row per primary key within the table itself (an
    /// overwrite_dedup's staged table, before it is swapped in).
    pub fn dedup_in_place(&mut self, table: &Table, key: &[String], cursor: Option<&str>, cdc_deletes: bool) -> Result<(), Failure> {
        let keys: Vec<String> = key.iter().map(|k| quoted(k)).collect();
        let order = match cursor {
            Some(c) => format!("{} desc nulls last, \"_airbyte_extracted_at\" desc", quoted(c)),
            None => "\"_airbyte_extracted_at\" desc".into(),
        };
        let deleted = if cdc_deletes { format!(" or (ctid in (select ctid from {} where \"_ab_cdc_deleted_at\" is not null))", table.sql()) } else { String::new() };
        let sql = format!(
            "delete from {t} where ctid in (select ctid from (select ctid, row_number() over (partition by {p} order by {order}) as r from {t}) s where r > 1){deleted}",
            t = table.sql(),
            p = keys.join(", ")
        );
        self.execute(&format!("keeping one row per key in {table}"), &sql)
    }
}

/// A connection on a thread of its own, so that a reader encodes its next
/// batch while the server takes the last one: without it the two took
/// turns, and each connection sat idle in its transaction half the time.
/// A hand-over waits for the copy before it, so one batch is copying and
/// one filling; a copy's error comes back with the next call.
pub struct Copier {
    jobs: Option<mpsc::SyncSender<Job>>,
    replies: mpsc::Receiver<Result<Vec<u8>, Failure>>,
    pending: usize,
    /// The last copied batch's buffer, emptied, to be filled next.
    spare: Option<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<Db>>,
}

enum Job {
    Copy { into: Table, columns: Vec<Column>, rows: Vec<u8>, count: usize, with_meta: bool },
    Commit,
    Rollback,
}

impl Copier {
    pub fn spawn(mut db: Db) -> Copier {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(0);
        let (outbox, replies) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for job in inbox {
                let reply = match job {
                    Job::Copy { into, columns, mut rows, count, with_meta } => db.copy_in(&into, &columns, &rows, with_meta).and_then(|copied| {
                        if copied != count as u64 {
                            return Err(Failure::system(format!("PostgreSQL took {copied} of {count} rows into {into}")));
                        }
                        rows.clear();
                        Ok(rows)
                    }),
                    Job::Commit => db.commit().map(|_| Vec::new()),
                    Job::Rollback => db.rollback().map(|_| Vec::new()),
                };
                if outbox.send(reply).is_err() {
                    break;
                }
            }
            db
        });
        Copier { jobs: Some(jobs), replies, pending: 0, spare: None, thread: Some(thread) }
    }

    /// Hands `rows` (`count` of them) over to be copied into `into`, and
    /// leaves an empty buffer in their place.
    pub fn copy(&mut self, into: &Table, columns: &[Column], rows: &mut Vec<u8>, count: usize, with_meta: bool) -> Result<(), Failure> {
        // The copier takes one batch at a time: wait for the last one, whose
        // buffer is then filled next (a new one each time held three a stream).
        if self.pending > 0 {
            self.next_reply()?;
        }
        let rows = std::mem::replace(rows, self.spare.take().unwrap_or_default());
        self.send(Job::Copy { into: into.clone(), columns: columns.to_vec(), rows, count, with_meta })
    }

    /// Waits for every copy handed over: their rows are in the transaction.
    pub fn wait(&mut self) -> Result<(), Failure> {
        while self.pending > 0 {
            self.next_reply()?;
        }
        Ok(())
    }

    /// [`Db::commit`], after every copy handed over.
    pub fn commit(&mut self) -> Result<(), Failure> {
        self.send(Job::Commit)?;
        self.wait()
    }

    pub fn rollback(&mut self) -> Result<(), Failure> {
        self.send(Job::Rollback)?;
        self.wait()
    }

    /// The connection back, once every job is done.
    pub fn finish(mut self) -> Result<Db, Failure> {
        self.wait()?;
        self.jobs = None;
        self.thread.take().expect("joined once").join().map_err(|_| Failure::system("the copying thread of destination-postgres panicked"))
    }

    fn send(&mut self, job: Job) -> Result<(), Failure> {
        let jobs = self.jobs.as_ref().expect("not finished");
        if jobs.send(job).is_err() {
            // The thread is gone: its last reply says why.
            self.wait()?;
            return Err(thread_ended());
        }
        self.pending += 1;
        Ok(())
    }

    fn next_reply(&mut self) -> Result<(), Failure> {
        let spent = self.replies.recv().map_err(|_| thread_ended())?;
        self.pending -= 1;
        let spent = spent?;
        if spent.capacity() > 0 {
            self.spare = Some(spent);
        }
        Ok(())
    }
}

fn thread_ended() -> Failure {
    Failure::system("the copying thread of destination-postgres ended")
}

impl Drop for Copier {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
