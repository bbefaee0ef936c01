//! Whether the database has this binary's schema.

use super::{Result, Store};

/// The newest migration applied successfully. On a database never migrated the history table is
/// missing and the statement fails: the caller reads that error as "not migrated".
const APPLIED_MIGRATION: &str = "SELECT max(version) FROM _sqlx_migrations WHERE success";

impl Store {
    /// The version of the newest migration applied, `None` if none was; an error if the
    /// migration history is missing.
    pub async fn applied_migration(&self) -> Result<Option<i64>> {
        let version = sqlx::query_scalar(APPLIED_MIGRATION)
            .fetch_one(&self.pool)
            .await?;
        Ok(version)
    }
}
