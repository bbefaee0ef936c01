//! The providers' documented receipt examples, shared by the unit tests of the parsers and signatures.

/// Owned key/value pairs from string literals.
pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The message id of [`twilio_status_callback`].
pub const TWILIO_SID: &str = "SM00000000000000000000000000000001";

/// Twilio's documented status callback example, with the ids of its signature test vector.
pub fn twilio_status_callback() -> Vec<(String, String)> {
    pairs(&[
        ("MessageSid", TWILIO_SID),
        ("SmsSid", TWILIO_SID),
        ("MessageStatus", "undelivered"),
        ("SmsStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("To", "+8801712345678"),
        ("From", "Glamora"),
        ("AccountSid", "AC00000000000000000000000000000001"),
        ("ApiVersion", "2010-04-01"),
        ("RawDlrDoneDate", "2501011400"),
    ])
}

/// Vonage's documented delivery receipt (the GET example, query decoded, unsigned).
pub fn vonage_dlr() -> Vec<(String, String)> {
    pairs(&[
        ("msisdn", "8801712345678"),
        ("to", "Glamora"),
        ("network-code", "47001"),
        ("messageId", "0A0000001234567B"),
        ("price", "0.03330000"),
        ("status", "delivered"),
        ("scts", "2501011400"),
        ("err-code", "0"),
        ("api-key", "abcd1234"),
        ("message-timestamp", "2025-01-01 14:00:05"),
    ])
}
