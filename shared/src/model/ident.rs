//! Configured table and schema names. They are validated and always quoted, never
//! pasted raw: `case` is a reserved word in both Snowflake and Postgres.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a plain identifier (letters, digits and _, starting with a letter or _, at most 63 characters)")]
pub struct InvalidIdentifier(pub String);

impl Identifier {
    pub fn parse(raw: &str) -> Result<Self, InvalidIdentifier> {
        let mut chars = raw.chars();
        let starts_well = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if starts_well && rest_ok && raw.len() <= 63 {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidIdentifier(raw.to_string()))
        }
    }

    /// Only used to keep reading the configuration after an invalid name was
    /// reported; the configuration is refused as a whole anyway.
    pub fn fallback() -> Self {
        Self("invalid".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a double-quoted SQL identifier. Validation guarantees that it
    /// holds no quote, so no escaping is needed.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_words_are_fine_because_they_are_quoted() {
        assert_eq!(Identifier::parse("case").unwrap().quoted(), "\"case\"");
    }

    #[test]
    fn anything_that_could_break_out_of_quotes_is_refused() {
        for bad in [
            "",
            "1case",
            "ca\"se",
            "case;drop",
            "public.case",
            "ca se",
            "é",
            &"x".repeat(64),
        ] {
            assert!(Identifier::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
