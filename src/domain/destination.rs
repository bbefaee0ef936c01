//! Where a number goes, without the number: its country and (in Bangladesh) its operator. Stored
//! on each attempt so that reports never need the phone number. The same rules exist in SQL
//! (`sms_country()`, `sms_operator()`) for rows written before and for analysts; a test keeps
//! the two in step.

/// Country codes by calling-code prefix, from `sms_country_prefixes`; the longest prefix wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Countries(Vec<(String, String)>);

impl Countries {
    /// A table from `(prefix, country)` rows such as `("+880", "BD")`.
    pub fn new(mut rows: Vec<(String, String)>) -> Self {
        rows.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self(rows)
    }

    /// The country of an E.164 number, `ZZ` when no prefix matches.
    pub fn of(&self, e164: &str) -> &str {
        self.0
            .iter()
            .find(|(prefix, _)| e164.starts_with(prefix.as_str()))
            .map_or("ZZ", |(_, country)| country)
    }
}

/// The Bangladeshi operator that issued an E.164 number, by prefix (013/017 Grameenphone, 014/019
/// Banglalink, 016/018 Robi, 015 Teletalk); `other BD` for other +880 numbers and `international`
/// elsewhere. Numbers port between operators, so this is the issuing operator.
pub fn operator(e164: &str) -> &'static str {
    let Some(national) = e164.strip_prefix("+880") else {
        return "international";
    };
    let digits = national.as_bytes();
    let mobile =
        digits.len() == 10 && digits[0] == b'1' && national.bytes().all(|b| b.is_ascii_digit());
    match digits.get(1) {
        Some(b'3' | b'7') if mobile => "Grameenphone",
        Some(b'4' | b'9') if mobile => "Banglalink",
        Some(b'6' | b'8') if mobile => "Robi",
        Some(b'5') if mobile => "Teletalk",
        _ => "other BD",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_by_prefix() {
        for (number, expected) in [
            ("+8801312345678", "Grameenphone"),
            ("+8801712345678", "Grameenphone"),
            ("+8801412345678", "Banglalink"),
            ("+8801912345678", "Banglalink"),
            ("+8801612345678", "Robi"),
            ("+8801812345678", "Robi"),
            ("+8801512345678", "Teletalk"),
            ("+8801112345678", "other BD"),
            ("+880171234567", "other BD"),
            ("+88021234567", "other BD"),
            ("+447412345678", "international"),
        ] {
            assert_eq!(operator(number), expected, "{number}");
        }
    }

    #[test]
    fn the_longest_prefix_wins() {
        let countries = Countries::new(vec![
            ("+1".into(), "US".into()),
            ("+880".into(), "BD".into()),
            ("+88".into(), "XX".into()),
        ]);
        assert_eq!(countries.of("+8801712345678"), "BD");
        assert_eq!(countries.of("+8861234567"), "XX");
        assert_eq!(countries.of("+12025550123"), "US");
        assert_eq!(countries.of("+4412345678"), "ZZ");
    }
}
