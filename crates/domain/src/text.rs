//! The rules every stored string obeys.
//!
//! PostgreSQL cannot store U+0000 in `text`, so every adapter refuses it
//! alike, here, before any adapter sees the string. Lone surrogates cannot
//! exist in a Rust `String`; the JSON parser rejects them on input.

/// A stored string broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The string contains U+0000.
    #[error("{field} must not contain the NUL character (U+0000)")]
    Nul {
        /// Which field, for the error message.
        field: &'static str,
    },
    /// The string is shorter or longer than allowed, in Unicode scalar values.
    #[error("{field} must be {min} to {max} characters long, got {got}")]
    Length {
        /// Which field.
        field: &'static str,
        /// Fewest characters allowed.
        min: usize,
        /// Most characters allowed.
        max: usize,
        /// How many were given.
        got: usize,
    },
}

/// Checks that `s` holds no U+0000.
///
/// # Errors
/// [`TextError::Nul`] naming `field`.
pub fn check_no_nul(field: &'static str, s: &str) -> Result<(), TextError> {
    if s.contains('\0') {
        Err(TextError::Nul { field })
    } else {
        Ok(())
    }
}

/// Checks that `s` holds no U+0000 and is `min..=max` Unicode scalar values long.
///
/// # Errors
/// [`TextError::Nul`] or [`TextError::Length`] naming `field`.
pub fn check_text(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), TextError> {
    check_no_nul(field, s)?;
    let got = s.chars().count();
    if got < min || got > max {
        return Err(TextError::Length {
            field,
            min,
            max,
            got,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn length_counts_unicode_scalar_values_not_bytes() {
        assert!(check_text("t", "ééé", 1, 3).is_ok());
        assert!(check_text("t", "éééé", 1, 3).is_err());
    }

    #[test]
    fn nul_is_refused_anywhere() {
        assert_eq!(
            check_text("t", "a\0b", 0, 10),
            Err(TextError::Nul { field: "t" })
        );
    }

    proptest! {
        #[test]
        fn any_string_without_nul_within_bounds_is_accepted(s in "[^\u{0}]{1,50}") {
            prop_assert!(check_text("t", &s, 1, 50).is_ok());
        }

        #[test]
        fn any_string_with_nul_is_refused(a in ".{0,10}", b in ".{0,10}") {
            let s = format!("{a}\0{b}");
            prop_assert!(check_text("t", &s, 0, 100).is_err());
        }
    }
}
