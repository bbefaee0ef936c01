//! Webhook signatures: Twilio's `X-Twilio-Signature` and Vonage's signed `sig` parameter,
//! computed and verified as the providers' SDKs do.

use std::collections::{BTreeMap, BTreeSet};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Twilio's X-Twilio-Signature over a URL and form params (providers.md §1.4 steps 1–3): sort
/// by key (bytes), for a key with several values sort + dedupe values, append key+value,
/// HMAC-SHA1 with the auth token, standard base64.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(hmac_bytes::<Hmac<Sha1>>(
        auth_token.as_bytes(),
        twilio_string(url, params).as_bytes(),
    ))
}

/// Verifies the header in constant time, trying the URL as given and with the port quirk
/// (§1.4 step 5: add :443/:80 when absent for https/http, remove it when present). false for
/// any malformed input.
pub fn twilio_valid(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    let Ok(given) = STANDARD.decode(header.trim()) else {
        return false;
    };
    let mut candidates = vec![url.to_owned()];
    candidates.extend(toggle_port(url));
    candidates
        .iter()
        .map(|candidate| {
            let expected = hmac_bytes::<Hmac<Sha1>>(
                auth_token.as_bytes(),
                twilio_string(candidate, params).as_bytes(),
            );
            bool::from(expected.ct_eq(&given))
        })
        .fold(false, |any, ok| any | ok)
}

/// The string Twilio signs: the URL, then `key+value` for each key in byte order, a key's
/// values sorted and de-duplicated.
fn twilio_string(url: &str, params: &[(String, String)]) -> String {
    let mut grouped: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, value) in params {
        grouped.entry(key).or_default().insert(value);
    }
    let mut data = url.to_owned();
    for (key, values) in grouped {
        for value in values {
            data.push_str(key);
            data.push_str(value);
        }
    }
    data
}

/// The URL with its port removed when it has one, or with the scheme's default port added
/// when it has none (as Twilio's SDKs do). `None` when it is not an http(s) URL.
fn toggle_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_and_port = &authority[host_start..];
    let authority = match port_colon(host_and_port) {
        Some(colon) => authority[..host_start + colon].to_owned(),
        None => format!("{authority}:{default_port}"),
    };
    Some(format!("{scheme}://{authority}{tail}"))
}

/// Where the `:port` starts in `host[:port]` (the host may be a bracketed IPv6 literal).
fn port_colon(host_and_port: &str) -> Option<usize> {
    let after_host = host_and_port.rfind(']').map_or(0, |bracket| bracket + 1);
    host_and_port[after_host..]
        .find(':')
        .map(|colon| after_host + colon)
}

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

/// Vonage signature (§2.4): all params except `sig`, sorted by key, `&key=value` with `&` and
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

/// `HMAC(key, data)` as bytes.
fn hmac_bytes<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipts::examples::{pairs, twilio_status_callback, vonage_dlr};

    const OFFICIAL_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const OFFICIAL_SIG: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    fn official_params() -> Vec<(String, String)> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn twilio_official_vector() {
        let params = official_params();
        assert_eq!(
            twilio_signature("12345", OFFICIAL_URL, &params),
            OFFICIAL_SIG
        );
        assert!(twilio_valid("12345", OFFICIAL_URL, &params, OFFICIAL_SIG));
    }

    #[test]
    fn twilio_status_callback_vector() {
        let url = "https://relay.example.com/dlr/twilio?attempt=at_01";
        let params = twilio_status_callback();
        let expected = "9vy1WBLPyjOnlbTyiJZho7O4Dbs=";
        assert_eq!(
            twilio_signature("test_auth_token_123", url, &params),
            expected
        );
        assert!(twilio_valid("test_auth_token_123", url, &params, expected));
    }

    #[test]
    fn twilio_port_quirk_works_both_ways() {
        let params = official_params();
        let cases = [
            ("https://h:443/p", "https://h/p"),
            ("https://h/p", "https://h:443/p"),
            ("http://h/p?q=1", "http://h:80/p?q=1"),
            ("http://h:80", "http://h"),
            ("https://u:pw@h/p", "https://u:pw@h:443/p"),
            ("https://[::1]:443/p", "https://[::1]/p"),
        ];
        for (signed, called) in cases {
            let header = twilio_signature("tok", signed, &params);
            assert!(
                twilio_valid("tok", called, &params, &header),
                "{signed} vs {called}"
            );
        }
        let header = twilio_signature("tok", "https://h:8443/p", &params);
        assert!(!twilio_valid("tok", "https://h:9443/p", &params, &header));
    }

    #[test]
    fn twilio_rejects_any_change() {
        let params = official_params();
        let mut tampered = params.clone();
        tampered[2].1 = "1235".into();
        let mut extra = params.clone();
        extra.push(("Extra".into(), "x".into()));
        assert!(!twilio_valid(
            "12345",
            OFFICIAL_URL,
            &tampered,
            OFFICIAL_SIG
        ));
        assert!(!twilio_valid("12345", OFFICIAL_URL, &extra, OFFICIAL_SIG));
        let other_url = "https://mycompany.com/myapp.php?foo=1&bar=3";
        assert!(!twilio_valid("12345", other_url, &params, OFFICIAL_SIG));
        assert!(!twilio_valid("12346", OFFICIAL_URL, &params, OFFICIAL_SIG));
        for header in [
            "RSOYDt4T1cUTdK1PDd93/VVr8B8A",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8",
            "",
            "!!",
        ] {
            assert!(
                !twilio_valid("12345", OFFICIAL_URL, &params, header),
                "{header}"
            );
        }
    }

    #[test]
    fn twilio_sorts_and_dedupes_repeated_values() {
        let url = "https://h/p";
        let shuffled = pairs(&[("B", "2"), ("A", "z"), ("A", "a"), ("A", "z")]);
        let data = "https://h/pAaAzB2";
        assert_eq!(twilio_string(url, &shuffled), data);
        let by_hand = STANDARD.encode(hmac_bytes::<Hmac<Sha1>>(b"tok", data.as_bytes()));
        assert_eq!(twilio_signature("tok", url, &shuffled), by_hand);
    }

    #[test]
    fn toggling_ports_ignores_other_schemes() {
        assert_eq!(toggle_port("ftp://h/p"), None);
        assert_eq!(toggle_port("not a url"), None);
        assert_eq!(
            toggle_port("https://h#f").as_deref(),
            Some("https://h:443#f")
        );
    }

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
