//! `[admin]`: where the operators' listener serves `/metrics`, and the token it asks for.

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Address `sms-relay run` serves `/metrics` on (apart from the public webhook listener);
    /// an empty string turns it off.
    pub listen: String,
    /// Bearer token every request must carry (`Authorization: Bearer …`); required when `listen`
    /// is not a loopback address.
    pub token: Option<SecretString>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            token: None,
        }
    }
}

impl AdminSettings {
    /// Checks the address, and that a listener other machines can reach asks for a token.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.is_empty() {
            return Ok(());
        }
        let address: SocketAddr = self
            .listen
            .parse()
            .map_err(|_| "admin.listen must be host:port (e.g. 127.0.0.1:9464) or empty")?;
        if !address.ip().is_loopback() && self.token.is_none() {
            return Err(
                "admin.token must be set when admin.listen is not a loopback address".into(),
            );
        }
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().len() < 16)
        {
            return Err("admin.token must be at least 16 characters".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_beyond_this_machine_needs_a_token() {
        let with = |listen: &str, token: Option<&str>| AdminSettings {
            listen: listen.into(),
            token: token.map(|t| SecretString::from(t.to_owned())),
        };
        assert!(with("127.0.0.1:9464", None).validate().is_ok());
        assert!(with("[::1]:9464", None).validate().is_ok());
        assert!(with("", None).validate().is_ok());
        assert!(with("0.0.0.0:9464", None).validate().is_err());
        assert!(with("0.0.0.0:9464", Some("")).validate().is_err());
        assert!(
            with("0.0.0.0:9464", Some("                "))
                .validate()
                .is_err()
        );
        assert!(with("0.0.0.0:9464", Some("short")).validate().is_err());
        assert!(
            with("0.0.0.0:9464", Some("a-long-enough-secret"))
                .validate()
                .is_ok()
        );
        assert!(with("localhost:9464", None).validate().is_err());
    }
}
