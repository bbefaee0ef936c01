//! The PostgreSQL server for the run and the throwaway databases the tests get from it.
//!
//! Without `DATABASE_URL` the first test starts a throwaway server (see `sms_relay::throwaway_pg`)
//! that goes away with the test process. With `DATABASE_URL` (a superuser URL) the tests create
//! their databases there and drop them when they pass.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    process::Command,
    sync::OnceLock,
};

use sms_relay::{
    db,
    throwaway_pg::{Durability, ThrowawayPg},
};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::OnceCell;
use uuid::Uuid;

struct Server {
    admin_url: String,
    _throwaway: Option<ThrowawayPg>,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) => Server {
            admin_url: url,
            _throwaway: None,
        },
        Err(_) => {
            let pg = ThrowawayPg::start(Durability::Fast).expect("start a throwaway PostgreSQL");
            Server {
                admin_url: pg.url("postgres"),
                _throwaway: Some(pg),
            }
        }
    })
}

/// A superuser URL for the server's maintenance database, for what a test cannot do from its own
/// database (such as altering it).
pub fn admin_url() -> &'static str {
    &server().admin_url
}

fn url_for(admin_url: &str, db: &str) -> String {
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("DATABASE_URL has a database path");
    format!("{base}/{db}")
}

/// A migrated database to clone tests from, named after the migrations' checksums.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let mut hasher = DefaultHasher::new();
            for m in db::MIGRATOR.iter() {
                m.checksum.hash(&mut hasher);
            }
            let name = format!("sms_relay_tpl_{:016x}", hasher.finish());
            let admin_url = admin_url();
            let mut admin = PgConnection::connect(admin_url)
                .await
                .expect("connect as admin");
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            if !exists {
                let scratch = format!("sms_relay_tmp_{}", Uuid::new_v4().simple());
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {scratch}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let pool = db::connect(&url_for(admin_url, &scratch), 1).await.unwrap();
                db::migrate(&pool)
                    .await
                    .expect("migrations apply to an empty database");
                pool.close().await;
                // Another test process may have won the race; then ours is dropped.
                if sqlx::query(AssertSqlSafe(format!(
                    "ALTER DATABASE {scratch} RENAME TO {name}"
                )))
                .execute(&mut admin)
                .await
                .is_err()
                {
                    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {scratch}")))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                }
            }
            admin.close().await.unwrap();
            name
        })
        .await
}

/// Creates a fresh, migrated database on the server; returns its name and URL.
pub async fn create() -> (String, String) {
    let template = template().await;
    let name = format!("sms_relay_test_{}", Uuid::new_v4().simple());
    let admin_url = admin_url();
    let mut admin = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {template}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    // The enqueue budgets stop floods; most tests enqueue floods on purpose, as the superuser who
    // may lift them. The budget tests put them back for their session.
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE {name} SET sms.lift_budgets = on"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    let url = url_for(admin_url, &name);
    (name, url)
}

/// Drops the database `name` made by [`create`], unless the test is failing: then it is kept,
/// and named, for inspection.
pub fn drop_unless_failed(name: &str) {
    if std::thread::panicking() {
        eprintln!("kept database {name} for inspection");
        return;
    }
    let _ = Command::new("psql")
        .arg(admin_url())
        .args(["-q", "-c"])
        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .status();
}
