//! [`TestApp`]: one test's own database, and the verbs that put messages into its outbox.

use serde_json::json;
use sms_relay::{
    db,
    store::{EnqueueRequest, Store, enqueue},
};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use super::db as server;

/// One database session, as a relay's claim connection is: never recycled, named after `relay_id`.
fn session(url: &str, relay_id: &str) -> Store {
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    Store::new(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(
                options.application_name(&sms_relay::store::presence_name(relay_id)),
            ),
    )
}

/// One test's relay world: a fresh, migrated database (its outbox, attempts and receipts) with
/// verbs to enqueue messages, run relays over it, and read what happened to each message.
///
/// The verbs live next to what they do: enqueueing here, relay runs in `relays`, rounds by hand in
/// `rounds`, reads in `history`.
pub struct TestApp {
    pub pool: PgPool,
    pub url: String,
    /// The session rounds by hand claim on (and so hold messages with), as a relay's claim
    /// connection does.
    pub(super) hands: Store,
    /// The seqs of the messages `hands` holds and has not recorded.
    pub(super) hands_sending: std::sync::Mutex<Vec<i64>>,
    /// The database this suite created on the shared server (dropped when the test passes);
    /// `None` for one [`TestApp::attach`]ed.
    name: Option<String>,
}

impl TestApp {
    /// A fresh, migrated database for one test.
    pub async fn new() -> Self {
        let (name, url) = server::create().await;
        let pool = db::connect(&url, 10).await.unwrap();
        Self {
            hands: session(&url, "hands"),
            hands_sending: Default::default(),
            pool,
            url,
            name: Some(name),
        }
    }

    /// A migrated database this suite did not create (e.g. on a server of the test's own), used
    /// as it is and never dropped.
    pub async fn attach(url: &str) -> Self {
        // Not a database this suite made, so its budgets are lifted here, for this pool.
        let pool = sms_relay::db::connect_lifting_budgets(url, 10)
            .await
            .unwrap();
        Self {
            hands: session(url, "hands"),
            hands_sending: Default::default(),
            pool,
            url: url.to_owned(),
            name: None,
        }
    }

    /// The relay's store over this database.
    pub fn store(&self) -> Store {
        Store::new(self.pool.clone())
    }

    /// A claim session of its own that stands for a live relay named `relay_id`: what it claims
    /// stays held until it is closed (`.pool().close()`), as when that relay dies.
    pub fn relay_session(&self, relay_id: &str) -> Store {
        session(&self.url, relay_id)
    }

    /// Enqueues `request` as the auth backend does (`sms_enqueue()`), returning the message id.
    pub async fn enqueue(&self, request: &EnqueueRequest) -> Uuid {
        enqueue(&self.pool, request).await.expect("enqueue")
    }

    /// Enqueues an English OTP for `recipient` with `code`.
    pub async fn otp(&self, recipient: &str, code: &str) -> Uuid {
        self.enqueue(&otp_request(recipient, code)).await
    }

    /// Enqueues an OTP for a fictional number, on a session that asks for them (as demo and bench
    /// do).
    pub async fn fictional_otp(&self, recipient: &str) -> Uuid {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query("SET sms.fictional = on")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT sms_enqueue($1, 'otp', '{\"code\": \"551234\"}')")
            .bind(recipient)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    /// Enqueues an English OTP for `recipient` that expires in `secs` seconds.
    pub async fn otp_expiring_in(&self, recipient: &str, secs: i64) -> Uuid {
        self.enqueue(&EnqueueRequest {
            expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::seconds(secs)),
            ..otp_request(recipient, "482913")
        })
        .await
    }

    /// Enqueues `n` OTPs to distinct numbers in one transaction each, returning their ids.
    pub async fn otps(&self, n: usize) -> Vec<Uuid> {
        self.otps_ending_in(n, "").await
    }

    /// Makes the next message enqueued the first of a new hold group, so that no message enqueued
    /// before shares its hold: two relay sessions in one test then hold them apart.
    pub async fn next_hold_group(&self) {
        sqlx::query(
            "SELECT setval('sms_outbox_seq', \
                    (coalesce(pg_sequence_last_value('sms_outbox_seq'), 0) / sms_hold_group_size() + 1) \
                    * sms_hold_group_size() - 1)",
        )
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Enqueues `n` OTPs to distinct Grameenphone numbers that end in `suffix` (e.g. the digits
    /// that pick a fake provider's scenario), one transaction each, returning their ids.
    pub async fn otps_ending_in(&self, n: usize, suffix: &str) -> Vec<Uuid> {
        sqlx::query_scalar(
            "SELECT sms_enqueue('+88017' || lpad(i::text, 8 - length($2), '0') || $2, 'otp', \
                    jsonb_build_object('code', lpad(i::text, 6, '0'))) \
               FROM generate_series(1, $1) AS i",
        )
        .bind(i32::try_from(n).unwrap())
        .bind(suffix)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Lets every template's placeholders take any value within the general limits (no shape
    /// such as "a code is 4 to 10 digits").
    pub async fn any_param_shape(&self) {
        sqlx::query("UPDATE sms_templates SET param_patterns = '{}'")
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// Runs `sql` with `$1` bound to `recipient`, for tests of the SQL interface itself.
    pub async fn exec_for(&self, sql: &'static str, recipient: &str) {
        sqlx::query(sql)
            .bind(recipient)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// The SQLSTATE with which the database refuses `sql` run for the message `id` (it must fail).
    pub async fn refusal(&self, sql: &'static str, id: Uuid) -> String {
        let error = sqlx::query(sql)
            .bind(id)
            .execute(&self.pool)
            .await
            .expect_err(sql);
        let code = error.as_database_error().and_then(|e| e.code());
        code.unwrap_or_else(|| panic!("{sql}: {error}"))
            .into_owned()
    }

    /// The single count `sql` selects, for what only SQL can say (server statistics, another
    /// table's rows).
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            server::drop_unless_failed(name);
        }
    }
}

/// An English OTP for `recipient` with `code`, to adjust before enqueueing.
pub fn otp_request(recipient: &str, code: &str) -> EnqueueRequest {
    EnqueueRequest {
        recipient: recipient.into(),
        template: "otp".into(),
        params: json!({ "code": code }),
        ..EnqueueRequest::default()
    }
}
