//! `sms-relay providers check` and `sms-relay send-test`: an operator's tools for the chain.

use std::time::Duration;

use comfy_table::Table;
use tokio::time::Instant;

use super::CommandError;
use crate::{
    cli::SendTestArgs,
    config::Config,
    domain::{Recipient, reference::base36, segments},
    providers::{self, OutgoingSms, ProviderConfig},
};

/// Longest wait for a balance answer.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an operator tool failed (beyond the usual command errors).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// `--provider` names no `[[providers]]` entry.
    #[error("no provider named {0:?} in the configuration")]
    UnknownProvider(String),
    /// `--to` is not an E.164 number.
    #[error("--to must be an E.164 number such as +8801712345678")]
    BadNumber,
    /// A balance check failed (credentials, network); the table says which.
    #[error("{0} provider check(s) failed")]
    ChecksFailed(usize),
    /// The test message was not accepted.
    #[error("the provider did not accept the test message")]
    NotAccepted,
}

fn describe(config: &ProviderConfig) -> String {
    let limit = config.rate_limit.as_ref().map_or("none".to_owned(), |r| {
        format!(
            "{}/s burst {}",
            r.per_second,
            r.burst.unwrap_or(r.per_second)
        )
    });
    let prices = if config.prices.is_empty() {
        "none".to_owned()
    } else {
        config
            .prices
            .iter()
            .map(|p| {
                format!(
                    "+{}… {} {}",
                    p.prefix.trim_start_matches('+'),
                    p.per_part,
                    p.currency
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("rate limit {limit}; prices {prices}")
}

/// Builds every adapter (which validates it) and asks each provider that has a balance endpoint
/// for its balance. Fails if any check failed.
pub(super) async fn check(config: &Config) -> Result<(), CommandError> {
    let mut table = Table::new();
    table.set_header(["#", "provider", "kind", "endpoint", "settings", "balance"]);
    let mut failed = 0;
    for (i, entry) in config.providers.iter().enumerate() {
        let provider = providers::build(entry, config.webhooks.public_base_url.as_deref())?;
        let balance = match provider.balance() {
            None => "(no balance endpoint)".to_owned(),
            Some(call) => match tokio::time::timeout(BALANCE_TIMEOUT, call).await {
                Ok(Ok(balance)) => balance,
                Ok(Err(error)) => {
                    failed += 1;
                    format!("FAILED: {error}")
                }
                Err(_) => {
                    failed += 1;
                    "FAILED: no answer within 10 s".to_owned()
                }
            },
        };
        table.add_row([
            (i + 1).to_string(),
            entry.name.clone(),
            entry.kind.label().to_owned(),
            entry.base_url().unwrap_or_else(|| "(built in)".into()),
            describe(entry),
            balance,
        ]);
    }
    println!("{table}");
    match &config.webhooks.public_base_url {
        Some(base) => println!("delivery receipts are requested at {base}/webhooks/<kind>"),
        None => println!(
            "[webhooks] public_base_url is not set: providers use their dashboard receipt URL"
        ),
    }
    if failed > 0 {
        return Err(ToolError::ChecksFailed(failed).into());
    }
    Ok(())
}

/// Sends one message through one provider, outside the queue, and prints the classified outcome.
pub(super) async fn send_test(config: &Config, args: SendTestArgs) -> Result<(), CommandError> {
    let entry = config
        .providers
        .iter()
        .find(|p| p.name == args.provider)
        .ok_or_else(|| ToolError::UnknownProvider(args.provider.clone()))?;
    let digits = args.to.strip_prefix('+').unwrap_or("");
    if !(7..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(ToolError::BadNumber.into());
    }
    let provider = providers::build(entry, config.webhooks.public_base_url.as_deref())?;
    let now_ms = chrono::Utc::now().timestamp_millis().unsigned_abs();
    let reference = format!("t{}", base36(now_ms));
    let sms = OutgoingSms {
        message_id: uuid::Uuid::new_v4(),
        recipient: Recipient::new(args.to.clone()),
        segments: segments::count(&args.text),
        body: args.text.clone(),
        valid_for: Duration::from_secs(300),
        reference_stem: reference.clone(),
    };
    println!(
        "sending {} part(s) ({}) to {} through {:?} with reference {reference}",
        sms.segments.parts,
        sms.segments.encoding.as_str(),
        sms.recipient,
        entry.name
    );
    let started = Instant::now();
    let answer = provider.send(&sms, &reference).await;
    let took = started.elapsed();
    let price = providers::PriceTable::new(&entry.prices);
    match answer {
        Ok(accepted) => {
            let cost = accepted
                .cost
                .or_else(|| price.cost(sms.recipient.e164(), sms.segments.parts))
                .map_or("unknown".to_owned(), |c| {
                    format!("{:.6} {}", c.micros as f64 / 1e6, c.currency)
                });
            println!(
                "accepted in {} ms: HTTP {}, provider message id {}, cost {cost}",
                took.as_millis(),
                accepted.http_status.map_or("-".into(), |s| s.to_string()),
                accepted.provider_message_id
            );
            Ok(())
        }
        Err(error) => {
            let (status, code, _) = error.parts();
            println!(
                "{} in {} ms: HTTP {}, code {}: {}",
                error.outcome().as_str(),
                took.as_millis(),
                status.map_or("-".into(), |s| s.to_string()),
                code.unwrap_or("-"),
                providers::chain::scrub(&error.to_string(), &sms.body)
            );
            Err(ToolError::NotAccepted.into())
        }
    }
}
