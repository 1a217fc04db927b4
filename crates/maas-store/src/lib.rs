//! # maas-store
//!
//! The `maas-core` repository traits implemented with sea-orm on SQLite (the
//! embedded default: one file in WAL mode, or in memory for tests) and
//! PostgreSQL (for several regions sharing one database).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use maas_core::repo::OrgRepository;
//! use maas_store::SqlStore;
//!
//! let store = SqlStore::open_sqlite_memory().await?;
//! store.migrate().await?;
//! store.zone_create("rack-a", "first row").await?;
//! let zones: Vec<String> = store.zone_list().await?.into_iter().map(|z| z.name).collect();
//! assert_eq!(zones, ["default", "rack-a"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! Architecture Invariant: this is the only crate that names sea-orm.
//! Status changes and allocations are single conditional `UPDATE`s on
//! `(id, version)`, so they are atomic on both backends without table locks
//! and a stale writer gets a conflict instead of overwriting.

mod account;
mod convert;
pub mod entity;
mod event;
mod machine;
mod migration;
mod network;
mod org;
mod script;

use std::path::Path;
use std::time::Duration;

use maas_core::lifecycle::DeadlinePolicy;
use maas_core::repo::RepositoryError;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr, SqlErr};
use sea_orm_migration::MigratorTrait;

pub use machine::DEADLINE_LOCK;
pub use migration::Migrator;

/// Why the store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Connecting failed. The URL is shown without its password.
    #[error("cannot open database {url}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// The driver's error.
        #[source]
        source: DbErr,
    },
    /// A migration failed.
    #[error("database migration failed")]
    Migrate {
        /// The driver's error.
        #[source]
        source: DbErr,
    },
    /// The URL names no supported database.
    #[error("unsupported database URL {url}: expected sqlite:... or postgres://...")]
    UnsupportedUrl {
        /// The URL, password removed.
        url: String,
    },
}

/// Removes the password from `scheme://user:password@host/...`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A repository backed by a SQL database through sea-orm.
#[derive(Debug, Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    policy: DeadlinePolicy,
}

impl SqlStore {
    /// A transaction that writes. On SQLite it is `BEGIN IMMEDIATE`: it
    /// takes the write lock up front, waiting up to the busy timeout, where
    /// a deferred transaction that read first would fail at once with
    /// "database is locked" when another writer committed in between (WAL
    /// cannot upgrade a stale read snapshot).
    pub(crate) async fn begin_write(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
        let sqlite = self.db.get_database_backend() == DbBackend::Sqlite;
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: sqlite.then_some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
    }

    /// Opens `sqlite:PATH`, `sqlite::memory:` or `postgres://...`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url == "sqlite::memory:" {
            Self::open_sqlite_memory().await
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Self::open_sqlite_file(Path::new(path.split('?').next().unwrap_or(path))).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url, None).await
        } else {
            Err(StoreError::UnsupportedUrl {
                url: redact_url(url),
            })
        }
    }

    /// Opens (creating it if needed) a SQLite database file in WAL mode, with
    /// foreign keys on and a pool of several connections.
    pub async fn open_sqlite_file(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut opts = ConnectOptions::new(url.clone());
        opts.max_connections(8)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(30))
                    .create_if_missing(true)
            });
        Self::connect(opts, &url).await
    }

    /// A private in-memory SQLite database (one connection; gone when dropped).
    pub async fn open_sqlite_memory() -> Result<Self, StoreError> {
        let url = "sqlite::memory:";
        let mut opts = ConnectOptions::new(url);
        opts.max_connections(1)
            .min_connections(1)
            .idle_timeout(None::<Duration>)
            .max_lifetime(None::<Duration>)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| o.foreign_keys(true));
        Self::connect(opts, url).await
    }

    /// Opens PostgreSQL; with `schema`, every connection uses it as its
    /// search path (tests isolate themselves this way).
    pub async fn open_postgres(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(16).sqlx_logging(false);
        if let Some(s) = schema {
            opts.set_schema_search_path(s.to_owned());
        }
        Self::connect(opts, url).await
    }

    async fn connect(opts: ConnectOptions, url: &str) -> Result<Self, StoreError> {
        let db = Database::connect(opts)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact_url(url),
                source,
            })?;
        Ok(SqlStore {
            db,
            policy: DeadlinePolicy::default(),
        })
    }

    /// Applies pending migrations (a no-op on a current database).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None)
            .await
            .map_err(|source| StoreError::Migrate { source })
    }

    /// Uses `policy` for the deadlines of in-progress statuses.
    pub fn with_deadline_policy(mut self, policy: DeadlinePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The deadline policy in use.
    pub fn deadline_policy(&self) -> &DeadlinePolicy {
        &self.policy
    }

    /// Calls `observer` after every statement with its duration and SQL text
    /// (placeholders only: bound values, which may be secrets, are not
    /// passed). For metrics, and for tests that count queries.
    pub fn set_statement_observer<F>(&mut self, observer: F)
    where
        F: Fn(Duration, &str) + Send + Sync + 'static,
    {
        self.db
            .set_metric_callback(move |info| observer(info.elapsed, &info.statement.sql));
    }

    /// The underlying connection (for health checks and tests).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Which database this is.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }
}

/// Maps a database error; unique and foreign-key violations become the
/// repository's own variants so callers can tell "exists" from "broken".
pub(crate) fn db_err(e: DbErr) -> RepositoryError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(detail)) => RepositoryError::AlreadyExists {
            kind: "record",
            key: detail,
        },
        Some(SqlErr::ForeignKeyConstraintViolation(detail)) => RepositoryError::Conflict {
            kind: "record",
            key: String::new(),
            reason: format!("a referenced record is missing or still in use ({detail})"),
        },
        _ => {
            let message = describe_db_err(&e);
            // SQLite reports a foreign key failing at statement end with
            // extended code 1811, which sea-orm does not classify.
            if message.contains("FOREIGN KEY constraint failed") {
                RepositoryError::Conflict {
                    kind: "record",
                    key: String::new(),
                    reason: "a referenced record is missing or still in use".into(),
                }
            } else {
                RepositoryError::Backend { message }
            }
        }
    }
}

fn describe_db_err(e: &DbErr) -> String {
    match e {
        DbErr::Conn(RuntimeErr::SqlxError(s))
        | DbErr::Exec(RuntimeErr::SqlxError(s))
        | DbErr::Query(RuntimeErr::SqlxError(s)) => s.to_string(),
        other => other.to_string(),
    }
}

/// Whether an error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Rewrites a unique violation as `AlreadyExists { kind, key }`.
pub(crate) fn unique_as(
    kind: &'static str,
    key: impl std::fmt::Display,
) -> impl FnOnce(DbErr) -> RepositoryError {
    let key = key.to_string();
    move |e| {
        if is_unique_violation(&e) {
            RepositoryError::AlreadyExists { kind, key }
        } else {
            db_err(e)
        }
    }
}

/// How many rows fit in one multi-row statement with `cols` columns, keeping
/// well under SQLite's and PostgreSQL's bind-parameter limits.
pub(crate) const fn batch_rows(cols: usize) -> usize {
    let n = 20_000 / cols;
    if n == 0 { 1 } else { n }
}
