//! The demo's stand-in for an auth backend's own table, which each login writes in the same
//! transaction as its SMS.

use sqlx::PgExecutor;

use super::{Result, Store};

/// No part of the schema: the demo creates it when missing, so a rolled-back login visibly leaves
/// neither its code nor its SMS behind.
const CREATE_DEMO_LOGINS: &str = r#"
CREATE TABLE IF NOT EXISTS sms_demo_logins (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone text NOT NULL,
    code_hash text NOT NULL,
    expires_at timestamptz NOT NULL
)
"#;

/// The code is kept hashed, as an auth backend would.
const RECORD_DEMO_LOGIN: &str = "INSERT INTO sms_demo_logins (phone, code_hash, expires_at) \
     VALUES ($1, md5($2), now() + interval '5 minutes')";

impl Store {
    /// Creates `sms_demo_logins` if it is missing.
    pub async fn create_demo_logins(&self) -> Result<()> {
        sqlx::query(CREATE_DEMO_LOGINS).execute(&self.pool).await?;
        Ok(())
    }
}

/// Records a demo login's code on `executor` (the login's transaction).
pub async fn record_demo_login<'e, E: PgExecutor<'e>>(
    executor: E,
    phone: &str,
    code: &str,
) -> Result<()> {
    sqlx::query(RECORD_DEMO_LOGIN)
        .bind(phone)
        .bind(code)
        .execute(executor)
        .await?;
    Ok(())
}
