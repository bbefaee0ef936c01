//! Vonage's signed `sig` webhook parameter, computed and verified as Vonage's SDKs do.

use hmac::Hmac;
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::providers::webhook::hmac_bytes;

/// Vonage signing method (config values md5hash, md5, sha1, sha256, sha512).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VonageMethod {
    /// Legacy default: `md5(string + secret)`.
    #[default]
    Md5Hash,
    /// HMAC-MD5 keyed with the secret.
    Md5,
    /// HMAC-SHA1 keyed with the secret.
    Sha1,
    /// HMAC-SHA256 keyed with the secret.
    Sha256,
    /// HMAC-SHA512 keyed with the secret.
    Sha512,
}

/// Vonage signature: all params except `sig`, sorted by key, `&key=value` with `&` and
/// `=` in values replaced by `_`; md5hash = hex(md5(string + secret)); HMAC modes =
/// hex(HMAC(secret, string)). Lowercase hex.
pub fn vonage_signature(method: VonageMethod, secret: &str, params: &[(String, String)]) -> String {
    hex::encode(vonage_digest(method, secret, params))
}

/// Verifies the `sig` param among `params` (case-insensitive hex, constant time). false if
/// `sig` is absent.
pub fn vonage_valid(method: VonageMethod, secret: &str, params: &[(String, String)]) -> bool {
    let mut sigs = params.iter().filter(|(key, _)| key == "sig");
    let (Some((_, sig)), None) = (sigs.next(), sigs.next()) else {
        return false;
    };
    let Ok(given) = hex::decode(sig.trim()) else {
        return false;
    };
    vonage_digest(method, secret, params).ct_eq(&given).into()
}

/// The raw digest of the Vonage string under `method`.
fn vonage_digest(method: VonageMethod, secret: &str, params: &[(String, String)]) -> Vec<u8> {
    let data = vonage_string(params);
    let (key, data) = (secret.as_bytes(), data.as_bytes());
    match method {
        VonageMethod::Md5Hash => Md5::digest([data, key].concat()).to_vec(),
        VonageMethod::Md5 => hmac_bytes::<Hmac<Md5>>(key, data),
        VonageMethod::Sha1 => hmac_bytes::<Hmac<Sha1>>(key, data),
        VonageMethod::Sha256 => hmac_bytes::<Hmac<Sha256>>(key, data),
        VonageMethod::Sha512 => hmac_bytes::<Hmac<Sha512>>(key, data),
    }
}

/// The string Vonage signs: `&key=value` for every param but `sig`, sorted by key.
fn vonage_string(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "sig").collect();
    sorted.sort();
    sorted
        .into_iter()
        .map(|(key, value)| format!("&{key}={}", value.replace(['&', '='], "_")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::examples::{pairs, vonage_dlr};

    fn vonage_params() -> Vec<(String, String)> {
        let mut params = vonage_dlr();
        params.extend(pairs(&[
            ("timestamp", "1735740005"),
            ("nonce", "ec11dd3e-1e7f-4db5-9467-82b02cd223b9"),
        ]));
        params
    }

    const SECRET: &str = "s3cr3tSignature";
    const MD5HASH: &str = "2aa1c23626c6ed5b7ac75cff481870c6";
    const SHA256: &str = "AC24D57FF5EA49F63E5CC6008493D3E05A443CC70F4421140D4151969863DAF6";

    fn with_sig(mut params: Vec<(String, String)>, sig: &str) -> Vec<(String, String)> {
        params.push(("sig".into(), sig.into()));
        params
    }

    #[test]
    fn vonage_vector() {
        let params = vonage_params();
        assert_eq!(
            vonage_signature(VonageMethod::Md5Hash, SECRET, &params),
            MD5HASH
        );
        assert_eq!(
            vonage_signature(VonageMethod::Sha256, SECRET, &params),
            SHA256.to_ascii_lowercase()
        );
        let md5 = with_sig(params.clone(), MD5HASH);
        assert!(vonage_valid(VonageMethod::Md5Hash, SECRET, &md5));
        for sig in [SHA256.to_owned(), SHA256.to_ascii_lowercase()] {
            let signed = with_sig(params.clone(), &sig);
            assert!(vonage_valid(VonageMethod::Sha256, SECRET, &signed));
            assert!(!vonage_valid(VonageMethod::Sha512, SECRET, &signed));
        }
    }

    #[test]
    fn vonage_every_method_round_trips() {
        let params = vonage_params();
        let methods = [
            (VonageMethod::Md5Hash, 32),
            (VonageMethod::Md5, 32),
            (VonageMethod::Sha1, 40),
            (VonageMethod::Sha256, 64),
            (VonageMethod::Sha512, 128),
        ];
        for (method, len) in methods {
            let sig = vonage_signature(method, SECRET, &params);
            assert_eq!(sig.len(), len, "{method:?}");
            assert!(vonage_valid(
                method,
                SECRET,
                &with_sig(params.clone(), &sig)
            ));
        }
    }

    #[test]
    fn vonage_replaces_separators_in_values_and_skips_sig() {
        let params = pairs(&[("b", "x=1&y"), ("sig", "ignored"), ("a", "1")]);
        assert_eq!(vonage_string(&params), "&a=1&b=x_1_y");
        let without_sig = pairs(&[("b", "x=1&y"), ("a", "1")]);
        assert_eq!(
            vonage_signature(VonageMethod::Sha1, SECRET, &params),
            vonage_signature(VonageMethod::Sha1, SECRET, &without_sig)
        );
    }

    #[test]
    fn vonage_rejects_tampering_and_missing_sig() {
        let mut tampered = with_sig(vonage_params(), MD5HASH);
        tampered[5].1 = "failed".into();
        assert!(!vonage_valid(VonageMethod::Md5Hash, SECRET, &tampered));
        assert!(!vonage_valid(
            VonageMethod::Md5Hash,
            SECRET,
            &vonage_params()
        ));
        let signed = with_sig(vonage_params(), MD5HASH);
        assert!(!vonage_valid(VonageMethod::Md5Hash, "other", &signed));
        for bad in ["", "zz", &MD5HASH[..30]] {
            let signed = with_sig(vonage_params(), bad);
            assert!(
                !vonage_valid(VonageMethod::Md5Hash, SECRET, &signed),
                "{bad}"
            );
        }
        let twice = with_sig(with_sig(vonage_params(), MD5HASH), MD5HASH);
        assert!(!vonage_valid(VonageMethod::Md5Hash, SECRET, &twice));
    }

    #[test]
    fn vonage_method_config_names() {
        let names = [
            ("md5hash", VonageMethod::Md5Hash),
            ("md5", VonageMethod::Md5),
            ("sha1", VonageMethod::Sha1),
            ("sha256", VonageMethod::Sha256),
            ("sha512", VonageMethod::Sha512),
        ];
        for (name, method) in names {
            let parsed: VonageMethod = serde_json::from_value(name.into()).unwrap();
            assert_eq!(parsed, method);
        }
        assert_eq!(VonageMethod::default(), VonageMethod::Md5Hash);
    }
}
