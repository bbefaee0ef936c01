//! The receipt services a running relay keeps: the webhook endpoints ([`server`]), and the
//! no-receipt resends, the unknown window and report polling ([`watch`]). What a receipt says and
//! how each provider's receipts are checked and parsed lives with the provider, in
//! [`crate::providers`].

pub mod server;
pub mod settings;
pub mod watch;
