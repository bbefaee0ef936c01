//! Integration tests: real PostgreSQL (a fresh database per test), real relay, real binary.

mod support;

mod binary;
mod enqueue;
mod outcomes;
mod relay;
