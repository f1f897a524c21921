//! The tests' PostgreSQL: `tests/postgres.sh` starts a throwaway cluster
//! and exports `SLUICE_POSTGRES_URL`, a superuser's URL.

use serde_json::{json, Value};

/// The server `tests/run` started: a superuser's URL.
pub fn server() -> String {
    std::env::var("SLUICE_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("no SLUICE_POSTGRES_URL: these tests need PostgreSQL; ./tests/run starts one (tests/postgres.sh: `. tests/postgres.sh; postgres_start`)")
    })
}

/// The same server's URL for another database.
pub fn server_of(database: &str) -> String {
    let url = server();
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    format!("{base}/{database}")
}

pub fn client() -> postgres::Client {
    postgres::Client::connect(&server(), postgres::NoTls).expect("the tests' PostgreSQL answers")
}

pub fn client_of(database: &str) -> postgres::Client {
    postgres::Client::connect(&server_of(database), postgres::NoTls).expect("the tests' PostgreSQL answers")
}

/// Makes `database` unless it is there (tests running at once may race to it).
pub fn ensure_database(database: &str) {
    let mut c = client();
    let exists = c.query_one("select exists(select 1 from pg_database where datname = $1)", &[&database]).unwrap().get::<_, bool>(0);
    if !exists {
        if let Err(e) = c.batch_execute(&format!("create database \"{database}\"")) {
            let duplicate = e.as_db_error().is_some_and(|d| matches!(d.code().code(), "42P04" | "23505"));
            assert!(duplicate, "create database {database}: {e}");
        }
    }
}

/// A connector's server settings in Airbyte's shape (host, port, database,
/// username, password, ssl_mode) for `database` on the tests' server.
pub fn connection(database: &str) -> Value {
    let url = server();
    let rest = url.strip_prefix("postgres://").unwrap();
    let (credentials, place) = rest.split_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    let (address, _) = place.split_once('/').unwrap();
    let (host, port) = address.split_once(':').unwrap();
    json!({"host": host, "port": port.parse::<u16>().unwrap(), "database": database, "username": user, "password": password, "ssl_mode": {"mode": "disable"}})
}

pub fn rows(sql: &str) -> Vec<postgres::Row> {
    client().query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn count(sql: &str) -> i64 {
    rows(sql)[0].get(0)
}
