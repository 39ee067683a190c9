//! Turning a model's free-form answer into a valid [`Title`], or refusing it.
//!
//! The model is not trusted: whatever a user's message made it say, the
//! result is one line of at most [`MAX_TITLE_CHARS`] characters with no
//! control characters, or no title at all (the caller falls back to the
//! derived title).

use weft_domain::title::MAX_TITLE_CHARS;
use weft_domain::Title;

/// Why an answer is not a usable title.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// Nothing but white space, quotes or punctuation.
    #[error("the answer holds no title")]
    Empty,
    /// Longer than a title may be, even after cleaning.
    #[error("the answer is {0} characters long, more than a title may be ({MAX_TITLE_CHARS})")]
    TooLong(usize),
    /// A reasoning block that never ended (the answer was cut off).
    #[error("the answer is an unfinished reasoning block")]
    Unfinished,
}

/// Labels some models put before the title despite being told not to.
const LABELS: [&str; 2] = ["title:", "title -"];

/// Wrapping that is not part of a title: white space, quotes, Markdown emphasis.
fn is_wrapping(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\''
                | '`'
                | '*'
                | '_'
                | '#'
                | '“'
                | '”'
                | '‘'
                | '’'
                | '«'
                | '»'
                | '„'
                | '「'
                | '」'
                | '『'
                | '』'
        )
}

/// Unicode bidirectional controls (category Cf): they can make a title
/// display as something else, so they go with the C0/C1 controls.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Removes ANSI escape sequences (`ESC [ … final`) whole, so no `[31m`
/// residue is left once the escape character itself is gone; then every
/// other control character. Tabs become spaces.
fn strip_controls(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1B}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, up to and including the final byte.
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7E}').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\t' {
            out.push(' ');
        } else if !c.is_control() && !is_bidi_control(c) {
            out.push(c);
        }
    }
    out
}

/// Drops a leading `<think>…</think>` block (reasoning models served by
/// Ollama or vLLM may put their reasoning in the answer).
fn strip_reasoning(answer: &str) -> Result<&str, Unusable> {
    let trimmed = answer.trim_start();
    match trimmed.strip_prefix("<think>") {
        Some(rest) => rest
            .split_once("</think>")
            .map(|(_, after)| after)
            .ok_or(Unusable::Unfinished),
        None => Ok(answer),
    }
}

fn strip_label(s: &str) -> &str {
    for label in LABELS {
        if s.len() >= label.len()
            && s.is_char_boundary(label.len())
            && s[..label.len()].eq_ignore_ascii_case(label)
        {
            return &s[label.len()..];
        }
    }
    s
}

/// Cleans a model's answer into a title: a leading reasoning block is
/// dropped; the first line with any text is kept; control characters (and
/// ANSI escape sequences, and bidirectional controls) are removed; white
/// space is collapsed; a `Title:` label, wrapping quotes, backticks and
/// Markdown emphasis, and one trailing period are trimmed.
///
/// The result is never empty, holds at least one letter or digit, is one
/// line of at most [`MAX_TITLE_CHARS`] characters and passes
/// [`Title::parse`] (API.md: "`title` is a string of at most 256 chars").
///
/// # Errors
/// [`Unusable`] when nothing of a title is left, the answer is longer than
/// a title may be (an over-long answer is not cut into a title: it is not
/// one), or a reasoning block never ended.
pub fn clean_title(answer: &str) -> Result<Title, Unusable> {
    let answer = strip_reasoning(answer)?;
    let line = answer
        .split(is_line_break)
        .map(strip_controls)
        .find(|l| !l.trim().is_empty())
        .ok_or(Unusable::Empty)?;
    let collapsed = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let unwrapped = strip_label(collapsed.trim_matches(is_wrapping)).trim_matches(is_wrapping);
    let text = match unwrapped.strip_suffix('.') {
        Some(head) if !head.ends_with('.') => head.trim_end_matches(is_wrapping),
        _ => unwrapped,
    };
    if !text.chars().any(char::is_alphanumeric) {
        return Err(Unusable::Empty);
    }
    let chars = text.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(Unusable::TooLong(chars));
    }
    // Cannot fail after the checks above (no U+0000 is left, the length is
    // within bounds); mapped rather than unwrapped so a future rule in
    // `Title::parse` turns into a fallback, not a panic.
    Title::parse(text).map_err(|_| Unusable::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[track_caller]
    fn cleaned(answer: &str) -> String {
        clean_title(answer)
            .unwrap_or_else(|e| panic!("{answer:?} refused: {e}"))
            .as_str()
            .to_owned()
    }

    #[test]
    fn quotes_labels_white_space_and_a_trailing_period_are_trimmed() {
        for (answer, want) in [
            ("GPU cost review", "GPU cost review"),
            ("  \"GPU cost review\"  \n", "GPU cost review"),
            ("Title: GPU cost review", "GPU cost review"),
            ("TITLE - 'GPU cost review'", "GPU cost review"),
            ("**GPU   cost\treview.**", "GPU cost review"),
            ("“Revue des coûts GPU”", "Revue des coûts GPU"),
            ("`GPU costs`", "GPU costs"),
            ("Wait for it...", "Wait for it..."),
            ("GPU costs, Q3", "GPU costs, Q3"),
        ] {
            assert_eq!(cleaned(answer), want, "answer {answer:?}");
        }
    }

    #[test]
    fn only_the_first_line_with_text_is_kept() {
        assert_eq!(
            cleaned("\n\n  GPU costs  \nHere is why I chose it: …"),
            "GPU costs"
        );
        assert_eq!(cleaned("GPU costs\r\nsecond"), "GPU costs");
        assert_eq!(cleaned("GPU costs\u{2028}second"), "GPU costs");
    }

    #[test]
    fn control_characters_and_escape_sequences_are_removed() {
        assert_eq!(
            cleaned("GPU\u{7} costs\u{1b}[31m red\u{1b}[0m"),
            "GPU costs red"
        );
        assert_eq!(cleaned("GPU\u{0} costs\u{9b}"), "GPU costs");
        assert_eq!(cleaned("\u{202E}GPU costs\u{202C}"), "GPU costs");
    }

    #[test]
    fn a_leading_reasoning_block_is_dropped_and_an_unfinished_one_refused() {
        assert_eq!(
            cleaned("<think>\nThe user asks about GPUs.\n</think>\n\nGPU costs"),
            "GPU costs"
        );
        assert_eq!(
            clean_title("<think>The user asks about"),
            Err(Unusable::Unfinished)
        );
    }

    #[test]
    fn empty_and_punctuation_only_answers_are_refused() {
        for answer in [
            "",
            "   ",
            "\n\n",
            "\"\"",
            "...",
            "***",
            "\u{7}\u{1b}[0m",
            "?!",
        ] {
            assert_eq!(
                clean_title(answer),
                Err(Unusable::Empty),
                "answer {answer:?}"
            );
        }
    }

    #[test]
    fn an_answer_longer_than_a_title_is_refused_not_cut() {
        assert_eq!(
            clean_title(&"word ".repeat(2_000)),
            Err(Unusable::TooLong(9_999))
        );
        assert!(clean_title(&"t".repeat(MAX_TITLE_CHARS)).is_ok());
        assert_eq!(
            clean_title(&"t".repeat(MAX_TITLE_CHARS + 1)),
            Err(Unusable::TooLong(MAX_TITLE_CHARS + 1))
        );
    }

    proptest! {
        /// Whatever the model says, the result is a valid one-line title or
        /// a refusal.
        #[test]
        fn every_accepted_answer_is_a_valid_one_line_title(answer in "\\PC{0,300}|[\\x00-\\x1f\\x7f-\\x9f\"' a-z\n\r]{0,300}") {
            if let Ok(t) = clean_title(&answer) {
                let s = t.as_str();
                prop_assert!(!s.is_empty());
                prop_assert!(s.chars().count() <= MAX_TITLE_CHARS);
                prop_assert!(!s.chars().any(|c| c.is_control() || is_line_break(c) || is_bidi_control(c)));
                prop_assert!(s.chars().any(char::is_alphanumeric));
                prop_assert_eq!(s.trim(), s);
                prop_assert!(Title::parse(s).is_ok());
            }
        }
    }
}
