//! `sms-relay status`

use comfy_table::Table;

use super::{CommandError, connect_migrated};
use crate::store::Store;

/// Prints the queue's state.
pub(super) async fn status(url: &str) -> Result<(), CommandError> {
    let store = Store::new(connect_migrated(url, 1).await?);
    let status = store.status().await?;
    println!(
        "messages: every waiting one; of those that ended, the ones enqueued in the last 24 h"
    );
    let mut states = Table::new();
    states.set_header(["state", "messages"]);
    for s in &status.states {
        states.add_row([s.state.clone(), s.count.to_string()]);
    }
    println!("{states}");
    println!(
        "{} waiting message(s) being sent right now",
        status.in_flight
    );
    match status.oldest_due_age_s {
        Some(age) => println!("oldest due message has waited {age:.1} s"),
        None => println!("nothing is due"),
    }
    println!("provider calls of the last 24 h");
    let mut attempts = Table::new();
    attempts.set_header(["provider", "outcome", "attempts"]);
    for a in &status.attempts {
        attempts.add_row([a.provider.clone(), a.outcome.clone(), a.count.to_string()]);
    }
    println!("{attempts}");
    let circuits = store.circuits().await?;
    if circuits.is_empty() {
        println!("no running relay has reported its circuit breakers");
    } else {
        let mut table = Table::new();
        table.set_header([
            "relay",
            "provider",
            "circuit",
            "failures in a row",
            "recent failures",
            "probe at",
            "reported",
        ]);
        for c in &circuits {
            table.add_row([
                c.relay_id.clone(),
                c.provider.clone(),
                c.state.clone(),
                c.consecutive_failures.to_string(),
                format!("{}/{}", c.recent_failures, c.recent_calls),
                c.retry_at
                    .map_or("-".into(), |t| t.format("%H:%M:%S").to_string()),
                c.updated_at.format("%H:%M:%S").to_string(),
            ]);
        }
        println!("{table}");
    }
    Ok(())
}
