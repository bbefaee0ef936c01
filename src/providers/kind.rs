//! What differs between provider kinds, answered by each kind's settings, and why an entry may
//! fail to become an adapter.

use std::{any::Any, sync::Arc};

use super::{Provider, http::Connection};

/// What each provider kind's settings (`[[providers]]` fields beyond the common ones) answer; every
/// provider module implements it for its settings. As `dyn Any`, code for one kind picks its own
/// entries out of a list of every kind's.
pub trait KindSettings: Any {
    /// The `kind` label, also the provider's webhook path segment.
    fn label(&self) -> &'static str;

    /// The real API root, used when `base_url` is not set; `None` where there is no useful one.
    fn default_base_url(&self) -> Option<&'static str> {
        None
    }

    /// Checks the kind's own fields.
    fn validate(&self) -> Result<(), String>;

    /// Whether receipts are expected for this kind's messages unless `expect_receipts` says
    /// otherwise. `webhooks_reachable`: the relay serves webhooks and has a public URL.
    fn expects_receipts(&self, webhooks_reachable: bool) -> bool {
        let _ = webhooks_reachable;
        false
    }

    /// The adapter for an entry of this kind reached through `connection`; `callback` is the
    /// per-message receipt URL, where the relay has a public one.
    fn build(
        &self,
        connection: &Connection,
        callback: Option<String>,
    ) -> Result<Arc<dyn Provider>, BuildError>;
}

/// `built`, an adapter for the entry reached through `connection`, or why the entry is invalid.
pub fn adapter<P: Provider + 'static>(
    connection: &Connection,
    built: Result<P, String>,
) -> Result<Arc<dyn Provider>, BuildError> {
    match built {
        Ok(provider) => Ok(Arc::new(provider)),
        Err(reason) => Err(BuildError::invalid(connection, reason)),
    }
}

/// Why a provider entry could not be turned into an adapter.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The entry is invalid (never worth retrying: fix the configuration).
    #[error("provider {name:?}: {reason}")]
    Invalid {
        /// The provider's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The simulator's journal file could not be opened.
    #[error("provider {name:?}: cannot open the journal: {source}")]
    Journal {
        /// The provider's name.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl BuildError {
    /// `reason` why the entry reached through `connection` is invalid.
    pub fn invalid(connection: &Connection, reason: String) -> Self {
        BuildError::Invalid {
            name: connection.name.clone(),
            reason,
        }
    }
}
