//! Username normalisation: one account, one counter, however the name is typed.
//!
//! `Admin`, ` admin ` and the full-width `Ａｄｍｉｎ` are the same username: input is trimmed,
//! normalised to Unicode NFKC and case-folded (then normalised again, since folding can undo
//! NFKC). Counting uses the normalised form.
//!
//! Invisible characters are refused outright: format characters (Unicode category Cf, which
//! holds the zero-width and bidi controls) and line and paragraph separators (Zl, Zp), so
//! `admin` + U+200B is not a second `admin`. Look-alikes from other scripts (`аdmin` with a
//! Cyrillic а) are valid names, but share a UTS #39 confusable [`Username::skeleton`], which
//! account uniqueness uses.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// The longest normalised username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// The longest raw input considered at all, in bytes: it bounds the work normalisation does.
pub const MAX_USERNAME_INPUT_BYTES: usize = 256;

/// Why a username was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Nothing left after trimming.
    #[error("username is empty")]
    Empty,
    /// Longer than the limits above.
    #[error("username is longer than {MAX_USERNAME_CHARS} characters")]
    TooLong,
    /// Contains a control character (including NUL).
    #[error("username contains a control character")]
    ControlCharacter,
    /// Contains an invisible format or separator character (zero-width, bidi control).
    #[error(
        "username contains an invisible character (Unicode format characters such as \
         zero-width spaces and bidi controls, and line or paragraph separators, are not allowed)"
    )]
    InvisibleCharacter,
}

/// Whether a character is invisible formatting: category Cf (zero-width and bidi controls
/// among them), Zl or Zp.
fn is_invisible(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Trim, NFKC, case fold, NFKC (folding can undo NFKC).
fn unicode_normalised(raw: &str) -> String {
    let composed: String = raw.trim().nfkc().collect();
    let folded = caseless::default_case_fold_str(&composed);
    folded.nfkc().collect()
}

/// [`unicode_normalised`] for ASCII input: NFKC leaves ASCII alone and case folding maps only
/// `A`..=`Z`. (No ASCII character is invisible.)
fn ascii_normalised(raw: &str) -> String {
    raw.trim().to_ascii_lowercase()
}

/// A normalised username.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Normalises raw input: trim, NFKC, case fold, NFKC; refuses empty, overlong or
    /// control-character input.
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        if raw.len() > MAX_USERNAME_INPUT_BYTES {
            return Err(UsernameError::TooLong);
        }
        // Most names are ASCII, for which the full normalisation reduces to lower-casing (a
        // property test holds the two paths equal), at a fraction of the cost.
        let ascii = raw.is_ascii();
        let normalised = if ascii {
            ascii_normalised(raw)
        } else {
            unicode_normalised(raw)
        };
        let normalised = normalised.trim();
        if normalised.is_empty() {
            return Err(UsernameError::Empty);
        }
        if normalised.chars().any(char::is_control) {
            return Err(UsernameError::ControlCharacter);
        }
        if !ascii && raw.chars().any(is_invisible) {
            return Err(UsernameError::InvisibleCharacter);
        }
        if normalised.chars().count() > MAX_USERNAME_CHARS {
            return Err(UsernameError::TooLong);
        }
        Ok(Self(normalised.to_owned()))
    }

    /// The normalised form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UTS #39 confusable skeleton: two names that look alike share it.
    pub fn skeleton(&self) -> String {
        unicode_security::confusable_detection::skeleton(&self.0).collect()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(raw: &str) -> String {
        Username::parse(raw).unwrap().as_str().to_owned()
    }

    #[test]
    fn invisible_characters_are_refused() {
        for raw in [
            "admin\u{200b}",
            "\u{202e}nimda",
            "ad\u{2060}min",
            "admin\u{2028}",
            "\u{feff}admin",
        ] {
            assert_eq!(
                Username::parse(raw),
                Err(UsernameError::InvisibleCharacter),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn look_alikes_from_other_scripts_share_a_skeleton() {
        let latin = Username::parse("admin").unwrap();
        let cyrillic = Username::parse("\u{430}dmin").unwrap();
        assert_ne!(latin, cyrillic);
        assert_eq!(latin.skeleton(), cyrillic.skeleton());
        assert_ne!(
            latin.skeleton(),
            Username::parse("admln").unwrap().skeleton()
        );
    }

    #[test]
    fn case_width_and_surrounding_space_do_not_make_a_new_username() {
        assert_eq!(norm("Admin"), "admin");
        assert_eq!(norm("  admin "), "admin");
        assert_eq!(norm("ＡＤＭＩＮ"), "admin");
        assert_eq!(norm("Straße"), norm("STRASSE"));
        assert_eq!(norm("ﬁle"), "file");
    }

    #[test]
    fn empty_overlong_and_control_input_is_refused() {
        assert_eq!(Username::parse("   "), Err(UsernameError::Empty));
        assert_eq!(Username::parse(""), Err(UsernameError::Empty));
        assert_eq!(
            Username::parse("a\0b"),
            Err(UsernameError::ControlCharacter)
        );
        assert_eq!(
            Username::parse(&"a".repeat(MAX_USERNAME_CHARS + 1)),
            Err(UsernameError::TooLong)
        );
        assert!(Username::parse(&"a".repeat(MAX_USERNAME_CHARS)).is_ok());
        assert_eq!(
            Username::parse(&" ".repeat(MAX_USERNAME_INPUT_BYTES + 1)),
            Err(UsernameError::TooLong)
        );
    }

    proptest! {
        /// Normalising a normalised username changes nothing.
        #[test]
        fn normalisation_is_idempotent(raw in "\\PC{0,40}") {
            if let Ok(once) = Username::parse(&raw) {
                let twice = Username::parse(once.as_str()).unwrap();
                prop_assert_eq!(once, twice);
            }
        }

        /// Any input, however hostile, gets an answer without panicking.
        #[test]
        fn any_input_is_accepted_or_refused_without_panic(raw in any::<String>()) {
            let _ = Username::parse(&raw);
        }

        /// The ASCII shortcut normalises exactly as the full Unicode path does.
        #[test]
        fn ascii_shortcut_matches_the_unicode_path(raw in "[\\x00-\\x7f]{0,40}") {
            prop_assert_eq!(ascii_normalised(&raw), unicode_normalised(&raw));
        }
    }
}
