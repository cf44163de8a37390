//! Keeping personal data out of logs.

/// Masks a phone number or business-scoped user id for logs: every character but the last four
/// becomes `*`, so that a log line can be matched to a user without revealing who they are.
/// Values of four characters or fewer are masked completely.
pub fn mask(identifier: &str) -> String {
    let count = identifier.chars().count();
    if count <= 4 {
        return "*".repeat(count);
    }
    identifier
        .chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < count { '*' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn keeps_only_the_last_four_digits() {
        assert_eq!(mask("15551234567"), "*******4567");
    }

    #[test]
    fn masks_short_values_entirely() {
        assert_eq!(mask("1234"), "****");
        assert_eq!(mask(""), "");
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert_eq!(mask("ü12345"), "**2345");
    }
}
