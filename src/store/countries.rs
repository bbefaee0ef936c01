//! The destination country table, read once when a relay starts.

use super::{Result, Store};
use crate::domain::destination::Countries;

impl Store {
    /// The country table (`sms_country_prefixes`).
    pub async fn countries(&self) -> Result<Countries> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT prefix, country::text FROM sms_country_prefixes")
                .fetch_all(&self.pool)
                .await?;
        Ok(Countries::new(rows))
    }
}
