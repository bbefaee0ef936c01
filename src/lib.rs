//! sms-relay: a transactional-outbox relay for SMS one-time codes.
//!
//! # Layout
//! - [`domain`]: recipients (masked when printed), template rendering, SMS segment counting.
//! - [`providers`]: the [`providers::Provider`] trait, one module per provider (its settings,
//!   wire format, send, classification table, lookups, and its receipts' checks and parsing),
//!   and the [`providers::ProviderChain`] that walks them in order.
//! - [`store`]: every SQL statement the relay runs — the message lifecycle, enqueue, receipts,
//!   wake-up registration, status and reports.
//! - [`relay`]: the claim → send → record loop, the completer, the retry policy.
//! - [`receipts`]: the receipt services — webhook endpoints, report polling, the no-receipt and
//!   unknown windows.
//! - [`maintenance`]: scheduled jobs that prune, scrub codes, apply the retention and match
//!   early receipts again.
//! - [`admin`]: the operators' listener (`/metrics`); [`metrics`]: every metric's name, labels
//!   and unit, recorded through the `metrics` facade.
//! - [`config`]: composes each module's settings section, loads file + environment, checks the
//!   rules that span sections, and builds the services from their sections.
//! - [`cli`], [`commands`], [`telemetry`], [`shutdown`]: the operator's side.
//! - [`db`]: connecting and the embedded migrations; [`throwaway_pg`]: a private PostgreSQL for
//!   the demo, the benchmark and the tests.
//!
//! # Imports run one way
//! `domain` ← `providers` ← `store` ← `relay`, `receipts`, `maintenance`, `admin` ← `config` ←
//! `commands`: a module
//! imports only from modules to its left (and from `db`, `telemetry`, `metrics`, `shutdown`,
//! `throwaway_pg`, which import none of these). Inside `providers`, a provider's module imports
//! the shared parts (`http`, `fields`, `kind`, `receipt`, `webhook`, `pricing`); only
//! `providers::settings`, which lists the kinds, imports the providers' modules.

pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod maintenance;
pub mod metrics;
pub mod providers;
pub mod receipts;
pub mod relay;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod throwaway_pg;
