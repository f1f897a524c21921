//! The one module that talks to PostgreSQL: the catalog's tables, their
//! size, and rows streamed out by `COPY (SELECT ...) TO STDOUT`.

use std::io::Read;

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

    /// Streams `select` out by a binary COPY; `each` gets every row's
    /// fields in their types' binary form (None for null). Only one row is
    /// held at a time.
    pub fn each_row(&mut self, what: &str, select: &str, mut each: impl FnMut(&[Option<&[u8]>]) -> Result<(), Failure>) -> Result<u64, Failure> {
        let reader = self.client.copy_out(&format!("copy ({select}) to stdout (format binary)")).map_err(|e| failed(what, e))?;
        let mut tuples = Tuples::new(reader, what)?;
        let mut rows = 0;
        while tuples.next()? {
            let fields: Vec<Option<&[u8]>> = (0..tuples.fields.len()).map(|i| tuples.field(i)).collect();
            each(&fields)?;
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
        let mut tuples = Tuples::new(reader, &what)?;
        let mut n = 0;
        while tuples.next()? {
            let (Some(lsn), Some(data)) = (tuples.field(0), tuples.field(1)) else {
                return Err(Failure::system(format!("PostgreSQL: {what}: a change without its LSN or data")));
            };
            let lsn = u64::from_be_bytes(lsn.try_into().map_err(|_| Failure::system(format!("PostgreSQL: {what}: an LSN of {} bytes", lsn.len())))?);
            each(lsn, data)?;
            n += 1;
        }
        Ok(n)
    }
}

/// The rows of a binary COPY, one at a time in one buffer: a signature,
/// flags and an extension area, then per row a field count and each
/// field's length (-1 for null) and bytes.
struct Tuples<R> {
    reader: std::io::BufReader<R>,
    buf: Vec<u8>,
    /// Each field's bytes in `buf`, None for null.
    fields: Vec<Option<(usize, usize)>>,
    what: String,
}

impl<R: Read> Tuples<R> {
    fn new(reader: R, what: &str) -> Result<Self, Failure> {
        let mut tuples = Tuples { reader: std::io::BufReader::with_capacity(256 << 10, reader), buf: Vec::with_capacity(64 << 10), fields: Vec::new(), what: what.to_owned() };
        let mut header = [0u8; 19];
        tuples.read(&mut header)?;
        if &header[..11] != b"PGCOPY\n\xff\r\n\0" {
            return Err(Failure::system(format!("PostgreSQL: {what}: not a binary COPY")));
        }
        let extension = u32::from_be_bytes(header[15..19].try_into().expect("4 bytes")) as u64;
        std::io::copy(&mut (&mut tuples.reader).take(extension), &mut std::io::sink()).map_err(|e| tuples.broken(e))?;
        Ok(tuples)
    }

    fn broken(&self, e: std::io::Error) -> Failure {
        Failure::system(format!("PostgreSQL: {}: {e}", self.what))
    }

    fn read(&mut self, into: &mut [u8]) -> Result<(), Failure> {
        self.reader.read_exact(into).map_err(|e| self.broken(e))
    }

    /// Reads the next row; false at the end.
    fn next(&mut self) -> Result<bool, Failure> {
        let mut word = [0u8; 2];
        self.read(&mut word)?;
        let count = i16::from_be_bytes(word);
        if count == -1 {
            return Ok(false);
        }
        self.buf.clear();
        self.fields.clear();
        for _ in 0..count {
            let mut len = [0u8; 4];
            self.read(&mut len)?;
            let len = i32::from_be_bytes(len);
            if len < 0 {
                self.fields.push(None);
                continue;
            }
            let from = self.buf.len();
            self.buf.resize(from + len as usize, 0);
            if let Err(e) = self.reader.read_exact(&mut self.buf[from..]) {
                return Err(self.broken(e));
            }
            self.fields.push(Some((from, self.buf.len())));
        }
        Ok(true)
    }

    fn field(&self, i: usize) -> Option<&[u8]> {
        self.fields.get(i).copied().flatten().map(|(from, to)| &self.buf[from..to])
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

/// A replication connection (`replication=database`), for the one command
/// only it can run: `CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT`, which
/// makes a slot and names a snapshot of the moment the slot starts at. The
/// snapshot can be imported only while this connection is open and idle.
pub struct Replication {
    stream: Stream,
    buf: bytes::BytesMut,
    what: String,
}

enum Stream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Replication {
    pub fn connect(server: &sluice_postgres::Server) -> Result<Replication, Failure> {
        use postgres_protocol::message::frontend;
        let what = format!("the replication connection to {}:{}", server.host, server.port);
        let io = |e: std::io::Error| Failure::config(format!("{what}: {e}"));
        let address = std::net::ToSocketAddrs::to_socket_addrs(&(server.host.as_str(), server.port)).map_err(io)?.next().ok_or_else(|| Failure::config(format!("{what}: no address")))?;
        let mut tcp = std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(30)).map_err(io)?;
        let (_, tls) = server.connection("sluice-source-postgres")?;
        let mode = server.ssl_mode.as_ref().map_or("disable", |m| m.mode.as_str()).to_owned();
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let mut request = bytes::BytesMut::new();
                frontend::ssl_request(&mut request);
                std::io::Write::write_all(&mut tcp, &request).map_err(io)?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).map_err(io)?;
                match answer[0] {
                    b'S' => {
                        let name = rustls::pki_types::ServerName::try_from(server.host.clone()).map_err(|e| Failure::config(format!("{what}: {e}")))?;
                        let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).map_err(|e| Failure::config(format!("{what}: TLS: {e}")))?;
                        Stream::Tls(Box::new(rustls::StreamOwned::new(connection, tcp)))
                    }
                    _ if matches!(mode.as_str(), "allow" | "prefer") => Stream::Plain(tcp),
                    _ => return Err(Failure::config(format!("{what}: the server does not take TLS, and ssl_mode is {mode}"))),
                }
            }
        };
        let mut r = Replication { stream, buf: bytes::BytesMut::with_capacity(8192), what };
        let database = server.database.as_str();
        let params = [("user", server.username.as_str()), ("database", database), ("replication", "database"), ("application_name", "sluice-source-postgres")];
        r.send(|buf| frontend::startup_message(params.iter().copied(), buf))?;
        r.authenticate(server)?;
        Ok(r)
    }

    fn send(&mut self, write: impl FnOnce(&mut bytes::BytesMut) -> std::io::Result<()>) -> Result<(), Failure> {
        let mut buf = bytes::BytesMut::new();
        let sent = write(&mut buf).and_then(|_| std::io::Write::write_all(&mut self.stream, &buf)).and_then(|_| std::io::Write::flush(&mut self.stream));
        sent.map_err(|e| Failure::system(format!("{}: {e}", self.what)))
    }

    fn receive(&mut self) -> Result<postgres_protocol::message::backend::Message, Failure> {
        use postgres_protocol::message::backend::Message;
        loop {
            match Message::parse(&mut self.buf).map_err(|e| Failure::system(format!("{}: {e}", self.what)))? {
                Some(Message::ErrorResponse(body)) => {
                    let (mut message, mut code) = (String::new(), String::new());
                    let mut fields = body.fields();
                    while let Ok(Some(field)) = fallible_iterator::FallibleIterator::next(&mut fields) {
                        match field.type_() {
                            b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                            b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
                            _ => {}
                        }
                    }
                    let hint = match code.as_str() {
                        "28P01" => " (check the username and password)",
                        "28000" | "42501" => " (CDC needs a user with the REPLICATION attribute, and pg_hba.conf must let it make replication connections)",
                        _ => "",
                    };
                    return Err(Failure::config(format!("PostgreSQL, {}: {message} ({code}){hint}", self.what)));
                }
                Some(message) => return Ok(message),
                None => {
                    let mut chunk = [0u8; 8192];
                    let n = self.stream.read(&mut chunk).map_err(|e| Failure::system(format!("{}: {e}", self.what)))?;
                    if n == 0 {
                        return Err(Failure::system(format!("{}: the server closed the connection", self.what)));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    fn authenticate(&mut self, server: &sluice_postgres::Server) -> Result<(), Failure> {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
        use postgres_protocol::message::{backend::Message, frontend};
        let password = server.password.clone().unwrap_or_default();
        let mut scram = None;
        loop {
            match self.receive()? {
                Message::AuthenticationOk | Message::ParameterStatus(_) | Message::BackendKeyData(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::AuthenticationCleartextPassword => self.send(|buf| frontend::password_message(password.as_bytes(), buf))?,
                Message::AuthenticationMd5Password(body) => {
                    let hashed = postgres_protocol::authentication::md5_hash(server.username.as_bytes(), password.as_bytes(), body.salt());
                    self.send(|buf| frontend::password_message(hashed.as_bytes(), buf))?;
                }
                Message::AuthenticationSasl(_) => {
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    self.send(|buf| frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), buf))?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| Failure::system(format!("{}: SASL out of turn", self.what)))?;
                    s.update(body.data()).map_err(|e| Failure::config(format!("{}: {e}", self.what)))?;
                    let message = s.message().to_vec();
                    self.send(|buf| frontend::sasl_response(&message, buf))?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| Failure::system(format!("{}: SASL out of turn", self.what)))?;
                    s.finish(body.data()).map_err(|e| Failure::config(format!("{}: the server's proof is wrong: {e}", self.what)))?;
                }
                _ => return Err(Failure::system(format!("{}: an authentication method sluice does not speak", self.what))),
            }
        }
    }

    /// Makes the slot; its consistent point, and the snapshot of that moment.
    pub fn create_slot_with_snapshot(&mut self, slot: &str) -> Result<(u64, String), Failure> {
        use postgres_protocol::message::{backend::Message, frontend};
        let command = format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT", quoted(slot));
        self.send(|buf| frontend::query(&command, buf))?;
        let mut row: Vec<Option<String>> = Vec::new();
        loop {
            match self.receive()? {
                Message::DataRow(body) => {
                    let mut ranges = body.ranges();
                    while let Ok(Some(range)) = fallible_iterator::FallibleIterator::next(&mut ranges) {
                        row.push(range.map(|r| String::from_utf8_lossy(&body.buffer()[r]).into_owned()));
                    }
                }
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        // slot_name, consistent_point, snapshot_name, output_plugin
        let lsn = row.get(1).cloned().flatten().as_deref().and_then(crate::pgoutput::parse_lsn);
        match (lsn, row.get(2).cloned().flatten()) {
            (Some(lsn), Some(snapshot)) => Ok((lsn, snapshot)),
            _ => Err(Failure::system(format!("{}: CREATE_REPLICATION_SLOT answered {row:?}", self.what))),
        }
    }
}
