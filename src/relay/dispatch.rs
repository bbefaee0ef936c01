//! One claimed message, one round: render, walk the chain, decide what becomes of it.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::RetryPolicy;
use crate::{
    domain::{
        Recipient, RenderError,
        destination::{self, Countries},
        parse_params, reference, render, segments,
    },
    providers::{OutgoingSms, ProviderChain, RoundResult},
    store::{ClaimedMessage, Disposition, Finish, Holder},
};

/// What every dispatch shares.
pub(super) struct Context {
    pub chain: Arc<ProviderChain>,
    pub policy: RetryPolicy,
    pub expiry_margin: Duration,
    /// The lease: a round must end before a relay cut off from the database loses its holds.
    pub lease: Duration,
    /// Cancelled when the shutdown grace runs out: sends in progress are abandoned.
    pub hard_stop: CancellationToken,
    /// Countries by calling code, for the attempt rows.
    pub countries: Countries,
}

fn end(mut finish: Finish, disposition: Disposition, reason: impl Into<String>) -> Finish {
    finish.disposition = disposition;
    finish.reason = Some(reason.into());
    finish
}

/// Runs one round for `msg` and says how it ended. `claimed_at` is taken before the claim was
/// issued, so deadlines measured from it err on the early side.
pub(super) async fn dispatch(ctx: &Context, msg: ClaimedMessage, claimed_at: Instant) -> Finish {
    let finish = Finish {
        id: msg.id,
        round: msg.round,
        holder: msg.holder(),
        disposition: Disposition::Sent,
        delay_ms: 0,
        reason: None,
        template: msg.template.clone(),
        segments: None,
        attempts: Vec::new(),
        resend_reason: msg.resend_reason.clone(),
        country: ctx.countries.of(&msg.recipient).to_owned(),
        operator: destination::operator(&msg.recipient),
    };
    if msg.superseded {
        return end(
            finish,
            Disposition::Cancelled,
            "superseded by a newer message",
        );
    }
    let remaining = Duration::try_from_secs_f64((msg.remaining_ms / 1000.0).max(0.0))
        .unwrap_or(Duration::from_secs(86_400));
    if remaining <= ctx.expiry_margin {
        return end(
            finish,
            Disposition::Expired,
            "validity ended before the message could be sent",
        );
    }
    let valid_until = claimed_at + (remaining - ctx.expiry_margin);
    // End the round well inside the lease, after which a relay cut off from the database loses its
    // holds and another relay may send the message.
    let lease_until = claimed_at + ctx.lease - (ctx.lease / 10).min(Duration::from_secs(5));
    let deadline = valid_until.min(lease_until);

    let Some(body) = msg.body else {
        let error = RenderError::UnknownTemplate {
            name: msg.template,
            locale: msg.locale,
        };
        return end(
            finish,
            Disposition::Failed,
            format!("cannot render: {error}"),
        );
    };
    let text = match parse_params(&msg.params).and_then(|params| render(&body, &params)) {
        Ok(text) => text,
        Err(error) => {
            return end(
                finish,
                Disposition::Failed,
                format!("cannot render: {error}"),
            );
        }
    };
    let segments = segments::count(&text);
    if let Some(max) = msg.max_parts
        && u32::from(segments.parts) > u32::try_from(max).unwrap_or(0)
    {
        let reason = format!(
            "renders to {} parts; template {} allows {max}",
            segments.parts, msg.template
        );
        let finish = Finish {
            segments: Some(segments),
            ..finish
        };
        return end(finish, Disposition::Failed, reason);
    }
    let sms = OutgoingSms {
        message_id: msg.id,
        recipient: Recipient::new(msg.recipient),
        segments,
        body: text,
        valid_for: remaining - ctx.expiry_margin,
        reference_stem: reference::stem(msg.seq, msg.round),
    };
    let (result, attempts) = ctx
        .chain
        .send(
            &sms,
            msg.resend_skip.as_deref(),
            valid_until,
            deadline,
            &ctx.hard_stop,
        )
        .await;
    let finish = Finish {
        segments: Some(sms.segments),
        attempts,
        ..finish
    };
    tracing::debug!(message_id = %sms.message_id, recipient = %sms.recipient, round = msg.round,
        providers_tried = finish.attempts.len(), "round finished");
    match result {
        RoundResult::Sent => finish,
        RoundResult::BadRecipient(reason) => end(finish, Disposition::Failed, reason),
        RoundResult::OutOfTime if Instant::now() >= valid_until => end(
            finish,
            Disposition::Expired,
            "validity ended while trying providers",
        ),
        RoundResult::OutOfTime => retry(
            ctx,
            finish,
            msg.round,
            "the round outran its lease".into(),
            None,
            None,
        ),
        RoundResult::Interrupted => end(
            finish,
            Disposition::Release,
            "relay stopped during a provider call; outcome unknown",
        ),
        RoundResult::Exhausted {
            reason,
            retry_after,
            circuits_reopen,
        } => retry(ctx, finish, msg.round, reason, retry_after, circuits_reopen),
    }
}

/// The end of a round whose send panicked: retried like a round every provider failed, as
/// nothing says whether a provider took the message, so a message that always makes the relay
/// panic fails after its last round instead of staying held. The round's calls are not recorded.
pub(super) fn panicked(ctx: &Context, id: Uuid, round: i32, holder: Holder) -> Finish {
    tracing::error!(message_id = %id, round, "the relay panicked while sending this message");
    let finish = Finish {
        id,
        round,
        holder,
        disposition: Disposition::Retry,
        delay_ms: 0,
        reason: None,
        // Only attempt rows carry these, and there are none.
        template: String::new(),
        segments: None,
        attempts: Vec::new(),
        resend_reason: None,
        country: String::new(),
        operator: "unknown",
    };
    let reason = "the relay panicked while sending (its log has the details)".to_owned();
    retry(ctx, finish, round, reason, None, None)
}

/// Schedules the next round (not before `not_before`), or fails the message if it has used all
/// its rounds.
fn retry(
    ctx: &Context,
    finish: Finish,
    round: i32,
    reason: String,
    retry_after: Option<Duration>,
    not_before: Option<Duration>,
) -> Finish {
    let round = u32::try_from(round).unwrap_or(u32::MAX);
    if ctx.policy.exhausted(round) {
        return end(
            finish,
            Disposition::Failed,
            format!("gave up after {round} rounds; last error: {reason}"),
        );
    }
    // Waiting for a circuit to reopen is not capped: an earlier round could only skip again.
    let delay = ctx
        .policy
        .delay(round, retry_after, &mut rand::rng())
        .max(not_before.unwrap_or_default());
    Finish {
        delay_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
        ..end(finish, Disposition::Retry, reason)
    }
}
