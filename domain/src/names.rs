//! Names and time zones as administrators type them: trimmed, bounded, printable; time zones from the IANA
//! database. Every aggregate validates its names here so the rules are the same everywhere.

use serde::{Deserialize, Serialize};

pub const MAX_NAME_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NameError {
    #[error("a name must not be empty")]
    Empty,
    #[error("a name must be at most {MAX_NAME_CHARS} characters")]
    TooLong,
    #[error("a name must not contain control characters")]
    ControlCharacter,
    #[error("a sign-in name must not contain white space")]
    WhiteSpace,
    #[error("{0:?} is not an e-mail address")]
    InvalidEmail(String),
    #[error("{0:?} is not an extension (1 to 64 letters, digits or + * # . _ -)")]
    InvalidExtension(String),
    #[error("{0:?} is not a time zone of the IANA database (e.g. Europe/Paris, America/New_York, UTC)")]
    UnknownTimezone(String),
}

/// A display name: surrounding white space removed, 1 to 100 characters, no control characters.
pub fn display_name(raw: &str) -> Result<String, NameError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(name.to_owned())
}

/// Text from a library or a remote server (an error, a test's outcome) as one line: every run of white space
/// or control characters becomes one space; then cut to `max_chars` characters. Cleaned, not refused.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let spaced: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let line = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(max_chars).collect::<String>().trim_end().to_owned()
}

/// The form of a name that uniqueness is decided on: trimmed and lower-cased, so `Sales` and ` sales `
/// are the same name.
pub fn unique_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// A sign-in name: 1 to 100 characters, no white space or control characters (`alice`, `a.b@example.com`).
pub fn username(raw: &str) -> Result<String, NameError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    if name.chars().any(char::is_whitespace) {
        return Err(NameError::WhiteSpace);
    }
    Ok(name.to_owned())
}

/// An e-mail address, checked for shape only (`local@domain`, at most 254 characters, no white space).
pub fn email(raw: &str) -> Result<String, NameError> {
    let address = raw.trim();
    let shaped = address.len() <= 254
        && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.starts_with('.')
        });
    if shaped {
        Ok(address.to_owned())
    } else {
        Err(NameError::InvalidEmail(raw.to_owned()))
    }
}

/// A telephone extension or phone name as the recorder sees it in SIP (`2001`, `+4930123456`, `alice`):
/// 1 to 64 characters of letters, digits and `+ * # . _ -`.
pub fn extension(raw: &str) -> Result<String, NameError> {
    let ext = raw.trim();
    let valid = !ext.is_empty()
        && ext.len() <= 64
        && ext.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '.' | '_' | '-'));
    if valid {
        Ok(ext.to_owned())
    } else {
        Err(NameError::InvalidExtension(raw.to_owned()))
    }
}

/// A time zone name of the IANA database, in its canonical spelling.
pub fn timezone(raw: &str) -> Result<String, NameError> {
    raw.trim()
        .parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_owned())
        .map_err(|_| NameError::UnknownTimezone(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(display_name("  Sales  "), Ok("Sales".to_owned()));
        assert_eq!(display_name("   "), Err(NameError::Empty));
        assert_eq!(display_name(&"é".repeat(100)).map(|n| n.chars().count()), Ok(100));
        assert_eq!(display_name(&"é".repeat(101)), Err(NameError::TooLong));
        assert_eq!(display_name("a\u{0}b"), Err(NameError::ControlCharacter));
    }

    #[test]
    fn usernames_emails_and_extensions_have_their_shapes() {
        assert_eq!(username(" alice@example.com "), Ok("alice@example.com".to_owned()));
        assert_eq!(username("al ice"), Err(NameError::WhiteSpace));
        assert_eq!(email("a@b.example"), Ok("a@b.example".to_owned()));
        for bad in ["", "a", "@b", "a@", "a@b@c", "a b@c", "a@.b"] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
        assert_eq!(extension(" +4930123456 "), Ok("+4930123456".to_owned()));
        for bad in ["", "20 01", "a;b", "<sip:1@x>", &"1".repeat(65)] {
            assert!(extension(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timezones_come_from_the_iana_database() {
        assert_eq!(timezone("Europe/Paris"), Ok("Europe/Paris".to_owned()));
        assert_eq!(timezone(" UTC "), Ok("UTC".to_owned()));
        assert!(timezone("Mars/Olympus_Mons").is_err());
        assert!(timezone("").is_err());
    }
}
