//! Reading one template, for `templates preview`.

use super::{Result, Store};

/// One template as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TemplateRow {
    /// Text with `{placeholders}`.
    pub body: String,
    /// Its placeholders.
    pub placeholders: Vec<String>,
    /// Most parts a message of it may be billed for.
    pub max_parts: i16,
    /// How long its codes stay valid, in seconds.
    pub validity_s: i64,
}

/// Template `$1` in locale `$2`.
const TEMPLATE: &str = "SELECT body, placeholders, max_parts, extract(epoch FROM validity)::int8 AS validity_s \
       FROM sms_templates WHERE name = $1 AND locale = $2";

impl Store {
    /// Template `name` in `locale`, if it exists.
    pub async fn template(&self, name: &str, locale: &str) -> Result<Option<TemplateRow>> {
        Ok(sqlx::query_as(TEMPLATE)
            .bind(name)
            .bind(locale)
            .fetch_optional(&self.pool)
            .await?)
    }
}
