//! Setting fields and checks every provider kind shares: credentials, sender ids, currencies.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// Whether `code` looks like an ISO 4217 currency code.
pub fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// A credential: the value itself, or `env:NAME` to read it from the environment variable `NAME`
/// when the configuration is loaded. Prints as `[REDACTED]` in `Debug`.
#[derive(Debug, Clone)]
pub struct Credential(SecretString);

impl Credential {
    /// The secret value, for building a request.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Credential {
    fn from(value: &str) -> Self {
        Credential(SecretString::from(value.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let value = match raw.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| {
                serde::de::Error::custom(format!(
                    "credential environment variable {var} is not set"
                ))
            })?,
            None => raw,
        };
        if value.is_empty() {
            return Err(serde::de::Error::custom("a credential must not be empty"));
        }
        Ok(Credential(SecretString::from(value)))
    }
}

/// `sender` checks shared by the adapters: an alphanumeric sender id is at most 11 characters, a
/// numeric one at most 15 digits.
pub fn validate_sender(sender: &str) -> Result<(), String> {
    let numeric = sender
        .trim_start_matches('+')
        .bytes()
        .all(|b| b.is_ascii_digit());
    let ok = if numeric {
        (3..=15).contains(&sender.trim_start_matches('+').len())
    } else {
        (1..=11).contains(&sender.chars().count())
    };
    if ok {
        Ok(())
    } else {
        Err("sender must be 1-11 characters (alphanumeric) or 3-15 digits (numeric)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_and_can_come_from_the_environment() {
        let c: Credential = serde_json::from_str("\"hunter2-secret\"").unwrap();
        assert_eq!(c.expose(), "hunter2-secret");
        assert!(!format!("{c:?}").contains("hunter2"));
        let missing: Result<Credential, _> =
            serde_json::from_str("\"env:SMS_RELAY_TEST_SURELY_UNSET_VARIABLE\"");
        let err = missing.unwrap_err().to_string();
        assert!(
            err.contains("SMS_RELAY_TEST_SURELY_UNSET_VARIABLE"),
            "{err}"
        );
        let path: Credential = serde_json::from_str("\"env:PATH\"").unwrap();
        assert_eq!(path.expose(), std::env::var("PATH").unwrap());
    }

    #[test]
    fn senders_are_checked_by_kind() {
        assert!(validate_sender("Glamora").is_ok());
        assert!(validate_sender("8809612345678").is_ok());
        assert!(validate_sender("GlamoraSalons").is_err());
        assert!(validate_sender("").is_err());
    }
}
