//! Twilio's `X-Twilio-Signature` webhook signature, computed and verified as Twilio's SDKs do.

use std::collections::{BTreeMap, BTreeSet};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::Hmac;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::providers::webhook::hmac_bytes;

/// Twilio's X-Twilio-Signature over a URL and form params: sort by key (bytes), for a key with
/// several values sort + dedupe values, append key+value, HMAC-SHA1 with the auth token, standard
/// base64.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(hmac_bytes::<Hmac<Sha1>>(
        auth_token.as_bytes(),
        twilio_string(url, params).as_bytes(),
    ))
}

/// Verifies the header in constant time, trying the URL as given and with the port quirk (add
/// :443/:80 when absent for https/http, remove it when present). false for any malformed input.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::examples::{pairs, twilio_status_callback};

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
}
