//! `sms-relay enqueue`

use chrono::{TimeDelta, Utc};
use serde_json::{Map, Value};

use super::{CommandError, connect_migrated};
use crate::{
    cli::EnqueueArgs,
    store::{EnqueueRequest, enqueue as enqueue_message},
};

/// Enqueues one message and prints its id.
pub(super) async fn enqueue(url: &str, args: EnqueueArgs) -> Result<(), CommandError> {
    let pool = connect_migrated(url, 1).await?;
    let params: Map<String, Value> = args
        .params
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let request = EnqueueRequest {
        recipient: args.to,
        template: args.template,
        params: Value::Object(params),
        locale: args.locale,
        expires_at: args
            .expires_in
            .map(|s| Utc::now() + TimeDelta::seconds(i64::from(s))),
        idempotency_key: args.idempotency_key,
        priority: args.priority,
        purpose: args.purpose,
        caller: args.caller,
    };
    let id = enqueue_message(&pool, &request).await?;
    println!("{id}");
    Ok(())
}
