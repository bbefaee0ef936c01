//! `sms-relay messages …`: find messages, show one's whole history, retry or cancel one. Numbers
//! are masked and codes never read (the `sms_messages` view); retry and cancel are the
//! lifecycle's own events.

use serde_json::{Map, Value, json};

use super::{
    CommandError, connect_migrated,
    output::{print_rows, table},
};
use crate::{
    cli::{MessagesCommand, OutputFormat},
    store::{MessageFilter, Store},
};

/// What `messages list` shows, in order.
const LIST_COLUMNS: [&str; 11] = [
    "id",
    "state",
    "template",
    "purpose",
    "recipient",
    "operator",
    "created_utc",
    "rounds",
    "resends",
    "last_provider",
    "last_error",
];

/// The message's own fields `messages show` lists first, in order.
const MESSAGE_FIELDS: [&str; 18] = [
    "id",
    "state",
    "template",
    "locale",
    "purpose",
    "priority",
    "recipient",
    "operator",
    "created_at",
    "expires_at",
    "next_attempt_at",
    "rounds",
    "resends",
    "sent_at",
    "finished_at",
    "last_error",
    "resend_reason",
    "superseded_by",
];

/// The provider calls' columns in `messages show`.
const CALL_COLUMNS: [&str; 14] = [
    "round",
    "step",
    "provider",
    "cause",
    "outcome",
    "started_at",
    "latency_ms",
    "http_status",
    "error_code",
    "error_message",
    "cost",
    "currency",
    "delivery_status",
    "resend_reason",
];

/// The receipts' columns in `messages show`.
const RECEIPT_COLUMNS: [&str; 7] = [
    "received_at",
    "source",
    "via",
    "status_raw",
    "delivery_status",
    "error_code",
    "result",
];

/// Runs one `messages` subcommand.
pub(super) async fn messages(url: &str, command: MessagesCommand) -> Result<(), CommandError> {
    let store = Store::new(connect_migrated(url, 1).await?);
    match command {
        MessagesCommand::List(args) => {
            let filter = MessageFilter {
                state: args.state,
                since: args.since,
                template: args.template,
                provider: args.provider,
                limit: args.limit,
            };
            let rows = store.list_messages(&filter).await?;
            print_rows(&LIST_COLUMNS, &rows, args.format);
        }
        MessagesCommand::Show(args) => {
            let history = store
                .message_history(args.id)
                .await?
                .ok_or(CommandError::NoSuchMessage(args.id))?;
            match args.format {
                OutputFormat::Json => println!(
                    "{}",
                    json!({
                        "message": history.message,
                        "calls": history.calls,
                        "receipts": history.receipts,
                    })
                ),
                OutputFormat::Table => {
                    let fields: Vec<Map<String, Value>> = MESSAGE_FIELDS
                        .iter()
                        .map(|f| {
                            let value = history.message.get(*f).cloned().unwrap_or(Value::Null);
                            Map::from_iter([("field".into(), json!(f)), ("value".into(), value)])
                        })
                        .collect();
                    println!("{}", table(&["field", "value"], &fields));
                    println!("provider calls");
                    print_rows(&CALL_COLUMNS, &history.calls, OutputFormat::Table);
                    println!("receipts");
                    print_rows(&RECEIPT_COLUMNS, &history.receipts, OutputFormat::Table);
                }
            }
        }
        MessagesCommand::Retry(args) => {
            store.retry_message(args.id).await?;
            done(args.id, "retried: due now", args.format);
        }
        MessagesCommand::Cancel(args) => {
            store.cancel_message(args.id, &args.reason).await?;
            done(args.id, "cancelled", args.format);
        }
    }
    Ok(())
}

/// Says that the event on message `id` happened.
fn done(id: uuid::Uuid, what: &str, format: OutputFormat) {
    match format {
        OutputFormat::Table => println!("{id}: {what}"),
        OutputFormat::Json => println!("{}", json!({ "id": id, "result": what })),
    }
}
