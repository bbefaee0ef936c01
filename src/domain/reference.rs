//! Client references: the short id each provider call carries, so a status lookup or a receipt
//! can be tied back to the call.

/// The reference stem of one round of one message: `<base-36 outbox seq>r<round>`. The chain
/// appends `s<step>`. A 63-bit sequence is at most 13 characters, so a whole reference stays
/// within SSL Wireless's 20-alphanumeric `csms_id` for any realistic round and chain length.
/// The database reads the seq back (`sms_reference_seq()`) to tie a receipt to its message.
pub fn stem(seq: i64, round: i32) -> String {
    format!("{}r{round}", base36(seq.unsigned_abs()))
}

/// `n` in lowercase base 36.
pub fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_short_and_exact() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(stem(i64::MAX, 8), "1y2p0ij32e8e7r8");
        assert!(format!("{}s2", stem(i64::MAX, 20)).len() <= 20);
    }
}
