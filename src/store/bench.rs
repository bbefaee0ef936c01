//! The load and the server settings `sms-relay bench` measures with.

use super::{Result, Store};

/// `$1` OTPs to fictional numbers (`+88017` and the row number in nine digits, one more than any
/// Bangladeshi number has), all through
/// `sms_enqueue()` in one statement: its guards and triggers run as for any message, without a
/// round trip each.
const ENQUEUE_NUMBERED: &str = r#"
SELECT sms_enqueue('+88017' || lpad(i::text, 9, '0'), 'otp', jsonb_build_object('code', lpad(i::text, 6, '0')))
  FROM generate_series(1, $1) AS i
"#;

/// Fresh statistics and a clean visibility map after a bulk enqueue, so the drain is timed with
/// the plans and index-only scans a settled table gets.
const VACUUM_ANALYZE_OUTBOX: &str = "VACUUM ANALYZE sms_outbox";

/// What makes a commit durable on this server, which bounds the drain rate.
const DURABILITY: &str = "SELECT current_setting('fsync'), current_setting('synchronous_commit')";

impl Store {
    /// Enqueues `n` OTPs in one statement, to `+88017000000001` onwards.
    pub async fn enqueue_numbered(&self, n: u32) -> Result<()> {
        sqlx::query(ENQUEUE_NUMBERED)
            .bind(i64::from(n))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Vacuums and analyzes the outbox (needs the table's owner).
    pub async fn vacuum_analyze_outbox(&self) -> Result<()> {
        sqlx::query(VACUUM_ANALYZE_OUTBOX)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The server's `fsync` and `synchronous_commit` settings.
    pub async fn durability(&self) -> Result<(String, String)> {
        let settings = sqlx::query_as(DURABILITY).fetch_one(&self.pool).await?;
        Ok(settings)
    }
}
