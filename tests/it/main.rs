//! Integration tests: real PostgreSQL (a fresh database per test), real relay, real binary.

mod fakes;
mod support;

mod binary;
mod budgets;
mod chain;
mod chaos;
mod conformance;
mod enqueue;
mod lifecycle;
mod maintenance;
mod metrics;
mod operator;
mod operator_page;
mod outbound;
mod outcomes;
mod receipts;
mod relay;
mod reports;
mod resend;
mod roles;
mod webhook_edge;
