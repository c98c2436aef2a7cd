//! Throwaway schemas for tests that need PostgreSQL: each test gets its
//! own, so tests run in parallel and leave nothing behind.
//!
//! The server's URL is `PASSERELLE_TEST_POSTGRES` (default
//! [`DEFAULT_URL`]). When it cannot be reached, [`fresh_schema`] prints a
//! line saying so and gives `None` (the test is skipped), unless `CI` is
//! set: then it panics, so that a CI run without PostgreSQL fails rather
//! than passes on nothing.
//!
//! A schema is named `passerelle_test_<unix seconds>_<random>`, and its
//! connections carry the same `application_name`. Dropping the
//! [`TestSchema`] ends those connections and drops the schema. A run that
//! crashed leaves its schemas behind; [`fresh_schema`] drops those older
//! than [`LEFTOVER_AGE`].

// Test support: failures panic, as assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx_core::connection::Connection as _;
use sqlx_core::executor::Executor as _;
use sqlx_core::query::query;
use sqlx_core::query_scalar::query_scalar;
use sqlx_postgres::PgConnection;

use super::PostgresStore;

/// The variable that names the test server.
pub const ENV: &str = "PASSERELLE_TEST_POSTGRES";
/// The test server when [`ENV`] is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The prefix of every test schema's name.
pub const PREFIX: &str = "passerelle_test_";
/// Test schemas older than this are a crashed run's, and are dropped.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(3600);
/// How long to wait for the server to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The test server's URL.
pub fn server_url() -> String {
    std::env::var(ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A fresh, empty schema on the test server, dropped with this value.
#[derive(Debug)]
pub struct TestSchema {
    server: String,
    name: String,
}

/// Connects to the test server; `None` (with a line saying why) when it
/// cannot be reached and `CI` is not set.
pub async fn connect() -> Option<PgConnection> {
    let url = server_url();
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&url)).await;
    let error = match connected {
        Ok(Ok(conn)) => return Some(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer".to_owned(),
    };
    if std::env::var_os("CI").is_some() {
        panic!("PostgreSQL ({ENV}) is unreachable and CI is set: {error}");
    }
    println!("PostgreSQL ({ENV}) is unreachable, skipping this test: {error}");
    None
}

/// A new schema on the test server, or `None` when the server cannot be
/// reached and `CI` is not set.
pub async fn fresh_schema() -> Option<TestSchema> {
    let mut conn = connect().await?;
    drop_leftovers(&mut conn).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let random = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{PREFIX}{now}_{}", &random[..12]);
    conn.execute(format!("CREATE SCHEMA {name}").as_str())
        .await
        .expect("create a test schema");
    Some(TestSchema {
        server: server_url(),
        name,
    })
}

/// Drops the schemas of runs that started more than [`LEFTOVER_AGE`] ago.
async fn drop_leftovers(conn: &mut PgConnection) {
    let names: Vec<String> =
        query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(PREFIX)
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for name in names {
        let started = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        let Some(started) = started else { continue };
        if now.saturating_sub(started) > LEFTOVER_AGE.as_secs() && is_plain(&name) {
            // Another run may be dropping it too: its error is no concern.
            let _ = conn
                .execute(format!("DROP SCHEMA IF EXISTS {name} CASCADE").as_str())
                .await;
        }
    }
}

/// Whether a name needs no quoting (and so can be spliced into SQL).
fn is_plain(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl TestSchema {
    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL whose connections work in this schema (and carry its name as
    /// `application_name`).
    pub fn url(&self) -> String {
        let separator = if self.server.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options[search_path]={name}&application_name={name}",
            self.server,
            name = self.name
        )
    }

    /// A store in this schema, with a pool of `pool_size` connections: one
    /// node of a hub. Call it again for another node.
    pub async fn store(&self, pool_size: u32) -> PostgresStore {
        PostgresStore::connect(&self.url(), pool_size)
            .await
            .expect("connect to the test schema")
    }

    /// Ends every server connection of this schema's stores (as a crashed
    /// server process or a failover would); returns how many.
    pub async fn terminate_connections(&self) -> u64 {
        let mut conn = PgConnection::connect(&self.server)
            .await
            .expect("connect to the test server");
        terminate(&mut conn, &self.name).await
    }
}

async fn terminate(conn: &mut PgConnection, name: &str) -> u64 {
    let ended: Vec<bool> = query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await
    .expect("terminate connections");
    ended.into_iter().filter(|ended| *ended).count() as u64
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop may run inside an async runtime, which cannot be blocked
        // on: the cleanup gets a thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&server).await?;
                terminate(&mut conn, &name).await;
                query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test schema {}", self.name),
        }
    }
}
