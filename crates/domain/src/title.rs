//! Thread titles and the deterministic title derivation behind the default
//! title generator.

use std::fmt;

use serde::Serialize;

use crate::text::{check_text, TextError};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 256;
/// Longest derived title, in characters, ellipsis included.
pub const DERIVED_TITLE_CHARS: usize = 60;
/// The title derived from text that holds nothing but white space.
pub const FALLBACK_TITLE: &str = "New conversation";

/// A title broke its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct TitleError(#[from] TextError);

/// A thread title: at most 256 characters, no U+0000.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Title(String);

impl Title {
    /// Validates a title.
    ///
    /// # Errors
    /// [`TitleError`] when longer than 256 characters or holding U+0000.
    pub fn parse(s: &str) -> Result<Self, TitleError> {
        check_text("title", s, 0, MAX_TITLE_CHARS)?;
        Ok(Self(s.to_owned()))
    }

    /// The title text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Title {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Derives a title from a message's text: white space collapsed to single
/// spaces, trimmed, and cut at a word boundary to at most 60 characters
/// with a trailing `…` when cut. Text that is only white space gives
/// [`FALLBACK_TITLE`]. Pure and deterministic: the same text always gives
/// the same title.
pub fn derive_title(text: &str) -> Title {
    let collapsed = text
        .split(|c: char| c.is_whitespace() || c == '\0')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if collapsed.is_empty() {
        return Title(FALLBACK_TITLE.to_owned());
    }
    if collapsed.chars().count() <= DERIVED_TITLE_CHARS {
        return Title(collapsed);
    }
    // Room for the ellipsis.
    let budget = DERIVED_TITLE_CHARS - 1;
    let cut: String = collapsed.chars().take(budget).collect();
    let next_is_space = collapsed.chars().nth(budget) == Some(' ');
    let head = if next_is_space {
        cut.as_str()
    } else {
        match cut.rfind(' ') {
            // Keep a word boundary unless it would leave a tiny title.
            Some(i) if i >= budget / 2 => &cut[..i],
            _ => cut.as_str(),
        }
    };
    Title(format!("{}…", head.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_kept_with_white_space_collapsed() {
        assert_eq!(
            derive_title("  Quarterly   GPU\ncost review ").as_str(),
            "Quarterly GPU cost review"
        );
    }

    #[test]
    fn long_text_is_cut_at_a_word_boundary_with_an_ellipsis() {
        let t = derive_title("Please help me understand why our quarterly GPU cost went up so much compared to last year");
        assert!(t.as_str().ends_with('…'));
        assert!(t.as_str().chars().count() <= DERIVED_TITLE_CHARS);
        assert_eq!(
            t.as_str(),
            "Please help me understand why our quarterly GPU cost went…"
        );
    }

    #[test]
    fn blank_text_gets_the_fallback() {
        assert_eq!(derive_title(" \n\t ").as_str(), FALLBACK_TITLE);
    }

    #[test]
    fn titles_over_256_characters_are_refused() {
        assert!(Title::parse(&"t".repeat(256)).is_ok());
        assert!(Title::parse(&"t".repeat(257)).is_err());
        assert!(Title::parse("a\0").is_err());
    }

    proptest! {
        #[test]
        fn derived_titles_are_always_valid_and_short(s in "\\PC{0,300}") {
            let t = derive_title(&s);
            prop_assert!(t.as_str().chars().count() <= DERIVED_TITLE_CHARS);
            prop_assert!(!t.as_str().is_empty());
            prop_assert!(Title::parse(t.as_str()).is_ok());
            prop_assert_eq!(derive_title(&s), t);
        }
    }
}
