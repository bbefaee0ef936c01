//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// sms-relay: sends the SMS intents your auth backend commits to the `sms_outbox` table.
#[derive(Debug, Parser)]
#[command(name = "sms-relay", version, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file (see config/sms-relay.example.toml). Values can be overridden by
    /// SMS_RELAY__<SECTION>__<KEY> environment variables.
    #[arg(long, global = true, env = "SMS_RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL (wins over [database] url in the file).
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Log line format (logs go to stderr; RUST_LOG filters them).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "pretty",
        env = "SMS_RELAY_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the schema: tables, sms_enqueue(), the seeded templates. Safe to repeat.
    Migrate,
    /// Serve: claim due messages, send them through the provider chain, record every attempt,
    /// schedule retries. Runs until SIGTERM/SIGINT (graceful: in-flight sends finish first).
    Run(RunArgs),
    /// Enqueue one message through sms_enqueue(), exactly as the auth backend would.
    Enqueue(EnqueueArgs),
    /// Show the queue: messages per state, age of the oldest due message, attempts per provider
    /// and outcome, and each running relay's circuit breakers.
    Status,
    /// Print the analysts' reports (sql/reports/*.sql: cost, delivery rate, time to deliver,
    /// failure reasons, attempts per delivered message, fallback and resend rates, expired and
    /// superseded codes) for the UTC days that overlap a window. No phone numbers.
    Report(ReportArgs),
    /// Inspect the configured provider chain.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Send one real message through one provider, outside the queue, and print the classified
    /// outcome (HTTP status, provider code, message id, cost). For testing credentials and
    /// routes with a real phone.
    SendTest(SendTestArgs),
    /// Show the whole pipeline on this machine: starts a throwaway PostgreSQL (unless
    /// DATABASE_URL is set), enqueues a burst of OTPs in auth-style transactions (some rolled back,
    /// some refused), runs the relay with simulated providers until every message is settled, and
    /// prints what happened.
    Demo(DemoArgs),
    /// Measure: (a) drain of pre-enqueued messages in messages/s, (b) commit-to-provider-call
    /// latency at a steady enqueue rate, and the process's peak RSS. Uses the simulator at zero
    /// latency on a throwaway PostgreSQL with default durability unless DATABASE_URL is set.
    Bench(BenchArgs),
    /// Run the maintenance jobs once, now, as `run` does on their schedules (prune ended
    /// counters and dead relays' rows, scrub the codes of messages that can no longer be sent,
    /// delete what is past its retention), and record each run. Exits non-zero if one fails.
    Maintain(MaintainArgs),
    /// Find, inspect and act on single messages (numbers masked, codes never shown): list them,
    /// show one's whole history, retry or cancel one through the message lifecycle.
    #[command(subcommand)]
    Messages(MessagesCommand),
    /// Show how a text is encoded and how many parts it is billed as, and what it costs through
    /// each configured provider with a price table.
    Segments(SegmentsArgs),
    /// Inspect the message templates.
    #[command(subcommand)]
    Templates(TemplatesCommand),
}

/// How the operator commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Tables for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// `messages` subcommands.
#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// The newest messages matching the filters.
    List(ListArgs),
    /// One message's whole history: its rounds, provider calls with outcome and cost, receipts,
    /// resends, and why it ended.
    Show(MessageArgs),
    /// Send a message again: a failed one gets one more round, a waiting retry goes now. Refused
    /// (with the reason) unless its code is still valid and no relay is sending it.
    Retry(MessageArgs),
    /// Cancel a waiting message (a waiting resend is withdrawn; the message stays sent). Refused
    /// (with the reason) when it has ended or a relay is sending it right now.
    Cancel(CancelArgs),
}

/// `messages list` options.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only messages in this state (pending, sent, failed, expired, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// Only messages enqueued within this window (30m, 24h, 7d).
    #[arg(long, default_value = "1d", value_parser = parse_since)]
    pub since: String,
    /// Only messages of this template.
    #[arg(long)]
    pub template: Option<String>,
    /// Only messages this provider was called for.
    #[arg(long)]
    pub provider: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub limit: i64,
    /// Output.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// Options naming one message.
#[derive(Debug, Args)]
pub struct MessageArgs {
    /// The message id (`sms_outbox.id`).
    pub id: uuid::Uuid,
    /// Output.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// `messages cancel` options.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The message id (`sms_outbox.id`).
    pub id: uuid::Uuid,
    /// Why (kept as the message's last error).
    #[arg(long)]
    pub reason: String,
    /// Output.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// `segments` options.
#[derive(Debug, Args)]
pub struct SegmentsArgs {
    /// The text as it would be sent.
    pub text: String,
    /// The destination the costs are for.
    #[arg(long, default_value = "+8801700000000")]
    pub to: String,
    /// Output.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// `templates` subcommands.
#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Render a template with sample params and show its text, encoding, parts and cost per
    /// provider before anyone sends it.
    Preview(PreviewArgs),
}

/// `templates preview` options.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The template's name.
    pub name: String,
    /// Its locale.
    #[arg(long, default_value = "en")]
    pub locale: String,
    /// A placeholder's value, `name=value` (repeat for each; a missing `code` is 123456).
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// The destination the costs are for.
    #[arg(long, default_value = "+8801700000000")]
    pub to: String,
    /// Output.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// `maintain` options.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Run now (the only mode; the schedules are `run`'s).
    #[arg(long, required = true)]
    pub now: bool,
    /// The job to run (prune, scrub, retention, rematch); all of them if omitted.
    pub job: Option<String>,
}

/// `providers` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Validate every [[providers]] entry and show each provider's balance where it has a
    /// balance endpoint (this calls the providers). Exits non-zero if a check fails.
    Check,
}

/// `send-test` options.
#[derive(Debug, Args)]
pub struct SendTestArgs {
    /// The `name` of a [[providers]] entry.
    #[arg(long)]
    pub provider: String,
    /// Destination in E.164 form, e.g. +8801712345678.
    #[arg(long)]
    pub to: String,
    /// Message text.
    #[arg(long, default_value = "sms-relay test message: no action needed.")]
    pub text: String,
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Exit 0 once nothing is owed: no message is pending (due now, or a retry or resend due
    /// later) and none is claimed by any relay, this one, another live one, or one that died
    /// (its claims come back within a second, or when its lease runs out if its machine is gone).
    /// Messages whose validity ends first are closed as expired, so the wait is bounded by the
    /// longest validity; --max-wait bounds it too.
    #[arg(long)]
    pub until_idle: bool,
    /// With --until-idle: after this many seconds, stop anyway and exit 1, naming how many
    /// messages are still owed.
    #[arg(long, default_value_t = 900, requires = "until_idle")]
    pub max_wait: u64,
}

/// `enqueue` options.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Recipient in E.164 form, e.g. +8801712345678.
    #[arg(long)]
    pub to: String,
    /// Template name (otp, admin_2fa, …).
    #[arg(long, default_value = "otp")]
    pub template: String,
    /// Template parameter as KEY=VALUE; repeat for several (e.g. --param code=482913).
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Template locale (en, bn).
    #[arg(long)]
    pub locale: Option<String>,
    /// Seconds until the code expires (default: the template's validity).
    #[arg(long)]
    pub expires_in: Option<u32>,
    /// A second enqueue with the same key returns the first message's id.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// 0 (most urgent) to 9.
    #[arg(long)]
    pub priority: Option<i32>,
    /// Supersede and budget group (default: the template name).
    #[arg(long)]
    pub purpose: Option<String>,
    /// Who asked (client IP, account, device), counted against the caller budget.
    #[arg(long)]
    pub caller: Option<String>,
}

/// `report` options.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Window: a whole number and a unit, m (minutes), h (hours) or d (days), e.g. 30m, 24h, 7d.
    /// Reports cover every UTC day that overlaps it. Parsed into interval text (7d → `7 days`).
    #[arg(long, default_value = "7d", value_parser = parse_since)]
    pub since: String,
    /// Output: titled tables; CSV, one section per report, each with its own header whose first
    /// column is `report` and a blank line after it; or one JSON object `{report: [rows]}`.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
}

/// How `report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A titled table per report.
    Table,
    /// CSV sections, one per report.
    Csv,
    /// One JSON object keyed by report name.
    Json,
}

/// `demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Login attempts to simulate.
    #[arg(long, default_value_t = 2_000)]
    pub logins: u32,
    /// Run even though the database already holds messages (a relay with real providers on it
    /// would send the demo's codes to the made-up numbers).
    #[arg(long)]
    pub force: bool,
}

/// `bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages for the drain measurement.
    #[arg(long, default_value_t = 100_000)]
    pub drain: u32,
    /// Relays draining side by side (as separate sidecars would, sharing one pool here).
    #[arg(long, default_value_t = 1)]
    pub relays: u32,
    /// Enqueue rate (messages/s) for the latency measurement.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Seconds of steady enqueueing for the latency measurement.
    #[arg(long, default_value_t = 20)]
    pub seconds: u32,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// `30m`, `24h`, `7d` → the PostgreSQL interval `30 minutes`, `24 hours`, `7 days`.
fn parse_since(s: &str) -> Result<String, String> {
    [("m", "minutes"), ("h", "hours"), ("d", "days")]
        .iter()
        .find_map(|(suffix, unit)| {
            let n: u16 = s.strip_suffix(suffix)?.parse().ok()?;
            (n > 0).then(|| format!("{n} {unit}"))
        })
        .ok_or_else(|| {
            "expected a whole number from 1 to 65535 and a unit, m (minutes), h (hours) or d \
             (days), e.g. 30m, 24h, 7d"
                .to_owned()
        })
}
