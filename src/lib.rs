//! sms-relay: a transactional-outbox relay for SMS one-time codes.
//!
//! # Layout
//! - [`domain`]: recipients (masked when printed), template rendering, SMS segment counting.
//! - [`store`]: every SQL statement — claim, complete, wake-up registration, enqueue, status.
//! - [`providers`]: the [`providers::Provider`] trait, the [`providers::ProviderChain`] that
//!   walks providers in order, and the built-in simulator.
//! - [`receipts`]: delivery receipts — webhook endpoints, signatures, report polling, the
//!   no-receipt window and receipt-driven resends.
//! - [`relay`]: the claim → send → record loop, the completer and the retry policy.
//! - [`config`], [`cli`], [`commands`], [`telemetry`], [`shutdown`]: the operator's side.
//! - [`db`]: connecting and the embedded migrations; [`throwaway_pg`]: a private PostgreSQL for
//!   the demo, the benchmark and the tests.

pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod providers;
pub mod receipts;
pub mod relay;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod throwaway_pg;
