//! `sms-relay status`

use comfy_table::Table;

use super::{CommandError, connect_migrated};
use crate::store::Store;

/// Prints the queue's state.
pub(super) async fn status(url: &str) -> Result<(), CommandError> {
    let store = Store::new(connect_migrated(url, 1).await?);
    let status = store.status().await?;
    let mut states = Table::new();
    states.set_header(["state", "messages"]);
    for s in &status.states {
        states.add_row([s.state.clone(), s.count.to_string()]);
    }
    println!("{states}");
    match status.oldest_due_age_s {
        Some(age) => println!("oldest due message has waited {age:.1} s"),
        None => println!("nothing is due"),
    }
    let mut attempts = Table::new();
    attempts.set_header(["provider", "outcome", "attempts"]);
    for a in &status.attempts {
        attempts.add_row([a.provider.clone(), a.outcome.clone(), a.count.to_string()]);
    }
    println!("{attempts}");
    Ok(())
}
