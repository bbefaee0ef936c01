//! What happened to messages: a message's state, its provider calls, and counts over the outbox.

use std::collections::HashMap;

use uuid::Uuid;

use super::TestApp;

impl TestApp {
    /// (state, last_error) of message `id`.
    pub async fn state_of(&self, id: Uuid) -> (String, Option<String>) {
        sqlx::query_as("SELECT state::text, last_error FROM sms_outbox WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// (provider, round, chain step, outcome) of every provider call of message `id`, in order.
    pub async fn attempts_of(&self, id: Uuid) -> Vec<(String, i32, i32, String)> {
        sqlx::query_as(
            "SELECT provider, attempt_number, chain_step, outcome::text FROM sms_attempts \
              WHERE message_id = $1 ORDER BY attempt_number, chain_step",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Messages per state.
    pub async fn states(&self) -> HashMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT state::text, count(*) FROM sms_outbox GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }
}
