//! How many SMS parts a text costs: GSM-7 (160/153 septets) or UCS-2 (70/67 UTF-16 units).

/// The character set a message is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// GSM 03.38 7-bit default alphabet (with the extension table).
    Gsm7,
    /// UCS-2 / UTF-16: any character outside GSM-7, e.g. Bengali, switches the whole message.
    Ucs2,
}

impl Encoding {
    /// The value stored in `sms_attempts.encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }
}

/// A message's encoding, size in encoding units and number of billed parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// GSM-7 or UCS-2.
    pub encoding: Encoding,
    /// Septets (GSM-7, extension characters count 2) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// Billed parts (at least 1).
    pub parts: u16,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// Septets each ASCII character costs in GSM-7 (0: not encodable), from the two tables above.
const GSM7_ASCII: [u8; 128] = {
    let mut septets = [0u8; 128];
    let (basic, extension) = (GSM7_BASIC.as_bytes(), GSM7_EXTENSION.as_bytes());
    let mut i = 0;
    while i < basic.len() {
        if basic[i] < 128 {
            septets[basic[i] as usize] = 1;
        }
        i += 1;
    }
    let mut i = 0;
    while i < extension.len() {
        if extension[i] < 128 {
            septets[extension[i] as usize] = 2;
        }
        i += 1;
    }
    septets
};

/// Septets a character costs in GSM-7, or `None` if GSM-7 cannot encode it.
fn gsm7_septets(c: char) -> Option<usize> {
    if c.is_ascii() {
        return match GSM7_ASCII[c as usize] {
            0 => None,
            n => Some(usize::from(n)),
        };
    }
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Counts the parts `text` is billed as.
pub fn count(text: &str) -> Segments {
    let septets: Option<usize> = text.chars().map(gsm7_septets).sum();
    let (encoding, units, single, multi) = match septets {
        Some(n) => (Encoding::Gsm7, n, 160, 153),
        None => (Encoding::Ucs2, text.encode_utf16().count(), 70, 67),
    };
    let parts = if units <= single {
        1
    } else {
        units.div_ceil(multi)
    };
    Segments {
        encoding,
        units,
        parts: u16::try_from(parts).unwrap_or(u16::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_ascii_table_agrees_with_the_character_tables() {
        for c in (0u8..128).map(char::from) {
            let expected = if GSM7_BASIC.contains(c) {
                1
            } else if GSM7_EXTENSION.contains(c) {
                2
            } else {
                0
            };
            assert_eq!(GSM7_ASCII[c as usize], expected, "{c:?}");
        }
    }

    #[test]
    fn seeded_templates_are_one_gsm7_part() {
        let s = count("Your verification code is 123456. Valid for 10 minutes.");
        assert_eq!((s.encoding, s.units, s.parts), (Encoding::Gsm7, 55, 1));
    }

    #[test]
    fn bengali_is_ucs2() {
        let s = count("আপনার যাচাইকরণ কোড 123456। ১০ মিনিটের জন্য বৈধ।");
        assert_eq!(s.encoding, Encoding::Ucs2);
        assert_eq!(s.parts, 1);
    }

    #[test]
    fn boundaries_of_single_and_concatenated_parts() {
        assert_eq!(count(&"a".repeat(160)).parts, 1);
        assert_eq!(count(&"a".repeat(161)).parts, 2);
        assert_eq!(count(&"a".repeat(306)).parts, 2);
        assert_eq!(count(&"a".repeat(307)).parts, 3);
        assert_eq!(count(&"ক".repeat(70)).parts, 1);
        assert_eq!(count(&"ক".repeat(71)).parts, 2);
        assert_eq!(count(&"ক".repeat(134)).parts, 2);
        assert_eq!(count(&"ক".repeat(135)).parts, 3);
    }

    #[test]
    fn extension_characters_count_double() {
        let s = count(&"€".repeat(80));
        assert_eq!((s.encoding, s.units, s.parts), (Encoding::Gsm7, 160, 1));
        assert_eq!(count(&"{".repeat(81)).parts, 2);
    }

    #[test]
    fn one_non_gsm_character_switches_the_whole_message() {
        let s = count(&format!("{}`", "a".repeat(100)));
        assert_eq!((s.encoding, s.units, s.parts), (Encoding::Ucs2, 101, 2));
    }

    #[test]
    fn astral_characters_take_two_utf16_units() {
        assert_eq!(count("🙂").units, 2);
    }

    proptest! {
        #[test]
        fn gsm7_parts_hold_the_septets(s in "[a-zA-Z0-9 {}€.,]{0,600}") {
            let seg = count(&s);
            prop_assert_eq!(seg.encoding, Encoding::Gsm7);
            let per_part = if seg.parts == 1 { 160 } else { 153 };
            prop_assert!(seg.units <= per_part * seg.parts as usize);
            prop_assert!(seg.parts == 1 || seg.units > per_part * (seg.parts as usize - 1));
        }

        #[test]
        fn any_bengali_character_means_ucs2(prefix in "[a-z ]{0,50}", suffix in "[a-z ]{0,50}") {
            let seg = count(&format!("{prefix}ক{suffix}"));
            prop_assert_eq!(seg.encoding, Encoding::Ucs2);
            prop_assert_eq!(seg.units, prefix.len() + 1 + suffix.len());
        }
    }
}
