//! A phone number that never prints in full.

use std::fmt;

/// An E.164 recipient (`+8801712345678`). `Display` and `Debug` mask the subscriber digits, so a
/// recipient can go into a log line or an error message without leaking the number.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient(String);

impl Recipient {
    /// Wraps a number the database has already validated as E.164.
    pub fn new(e164: impl Into<String>) -> Self {
        Self(e164.into())
    }

    /// The full number, for the provider request only.
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// The number without its `+` (`8801712345678`), as most providers want it.
    pub fn digits(&self) -> &str {
        self.0.trim_start_matches('+')
    }

    /// The number as `+880••••••••78`: the first four characters and the last two digits kept.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }

    /// Whether this is one of the fictional numbers demo and bench use: a Bangladeshi mobile
    /// prefix (`+8801` and 3 to 9) followed by nine digits, one more than any number there has,
    /// so no subscriber can ever receive it. The database's `sms_fictional()` says the same.
    pub fn is_fictional(&self) -> bool {
        let digits = self.0.strip_prefix("+8801").map(str::as_bytes);
        matches!(digits, Some([b'3'..=b'9', rest @ ..])
            if rest.len() == 9 && rest.iter().all(u8::is_ascii_digit))
    }
}

/// A phone number as it may be kept or printed: its first four characters and last two kept,
/// every other one replaced by `•` (`+8801712345678` → `+880••••••••78`, `8801712345678` →
/// `8801•••••••78`).
pub fn mask(number: &str) -> String {
    let digits: Vec<char> = number.chars().collect();
    let keep_head = 4.min(digits.len());
    let keep_tail = 2.min(digits.len().saturating_sub(keep_head));
    let hidden = digits.len() - keep_head - keep_tail;
    let mut out: String = digits[..keep_head].iter().collect();
    out.extend(std::iter::repeat_n('•', hidden));
    out.extend(&digits[digits.len() - keep_tail..]);
    out
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fictional_numbers_are_one_digit_too_long_for_a_bangladeshi_mobile_prefix() {
        for (number, fictional) in [
            ("+88017123456789", true),
            ("+88013000000001", true),
            ("+88019999999999", true),
            ("+8801712345678", false),   // a real-looking number
            ("+880171234567890", false), // two digits too long: not E.164 anyway
            ("+88012123456789", false),  // no operator has 012
            ("+88017123456a89", false),
            ("+44171234567890", false),
        ] {
            assert_eq!(Recipient::new(number).is_fictional(), fictional, "{number}");
        }
    }

    #[test]
    fn display_and_debug_hide_the_subscriber_digits() {
        let r = Recipient::new("+8801712345678");
        assert_eq!(r.to_string(), "+880••••••••78");
        assert!(!format!("{r:?}").contains("12345"));
        assert_eq!(r.e164(), "+8801712345678");
    }

    #[test]
    fn short_input_does_not_panic() {
        assert_eq!(Recipient::new("+1").masked(), "+1");
        assert_eq!(Recipient::new("").masked(), "");
    }
}
