//! Every statement the relay runs that moves a message from one state to another.
//!
//! | event | from → to | where |
//! |---|---|---|
//! | enqueue | → `pending` | `sms_enqueue()` or a plain INSERT (guard triggers) |
//! | superseded by a newer message | `pending` → `cancelled`, or a waiting resend → `sent` | `sms_outbox_supersede` trigger |
//! | claim | `pending` → `sending` | [`claim`] |
//! | a round's outcome | `sending` → `sent` / `pending` / `failed` / `expired` / `cancelled` | [`complete`] |
//! | put back: a relay gone, or a claim that never reached its relay | `sending` → `pending` | [`leases`] |
//! | resend (no or undelivered receipt) | `sent` → `pending` | `sms_resend()` |
//! | a waiting resend withdrawn (delivered after all) | `pending` → `sent` | `sms_apply_receipt()` |
//! | an operator's retry | `failed` / `pending` → `pending` (due now) | `sms_retry()` |
//! | an operator's cancel | `pending` → `cancelled`, or a waiting resend → `sent` | `sms_cancel()` |
//!
//! Whoever runs it, every change is held to one table, `sms_transition_allowed()`, by the
//! `sms_outbox_transition` trigger: a change it does not allow fails with SQLSTATE SR013.

mod claim;
mod complete;
mod leases;

pub use claim::ClaimedMessage;
pub use complete::{Disposition, Finish};
pub use leases::{MAX_RELAY_ID_LEN, presence_name};
