//! Every statement the relay runs that moves a message from one state to another.
//!
//! | event | from → to | where |
//! |---|---|---|
//! | enqueue | → `pending` | `sms_enqueue()` or a plain INSERT (guard triggers) |
//! | superseded by a newer message | `pending` → `cancelled`, or a waiting resend → `sent`; one being sent is only marked | `sms_outbox_supersede` trigger |
//! | claim | `pending`, now held by the claiming relay (no write) | [`claim`] |
//! | a round's outcome | `pending` (held) → `sent` / `pending` (retry) / `failed` / `expired` / `cancelled` | [`complete`] |
//! | resend (no or undelivered receipt) | `sent` → `pending` | `sms_resend()` |
//! | a waiting resend withdrawn (delivered after all) | `pending` → `sent` | `sms_apply_receipt()` |
//! | an operator's retry | `failed` / `pending` → `pending` (due now) | `sms_retry()` |
//! | an operator's cancel | `pending` → `cancelled`, or a waiting resend → `sent` | `sms_cancel()` |
//!
//! Whoever runs it, every change is held to one table, `sms_transition_allowed()`, by the
//! `sms_outbox_transition` trigger: a change it does not allow fails with SQLSTATE SR013. A message
//! a relay holds ([`holds`]) changes only through that relay's [`complete`]: everything else acts
//! only where `sms_free()` says no relay is sending it.

mod claim;
mod complete;
mod holds;

pub use claim::{Ahead, Claim, ClaimedMessage, Holder};
pub use complete::{Disposition, Finish, RoundEnd};
pub use holds::{MAX_RELAY_ID_LEN, presence_name};
