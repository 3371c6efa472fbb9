use super::BLANK;

/// A token as a caller sent it: not blank, otherwise unchecked (the token
/// codec decides whether it is valid). As DRF's `CharField`, a missing
/// token is a bad request naming the field, not a bad token.
#[derive(Clone, Copy)]
pub struct TokenText<'a>(&'a str);

impl<'a> TokenText<'a> {
    pub fn parse(input: &'a str) -> Result<Self, String> {
        if input.trim().is_empty() {
            return Err(BLANK.into());
        }
        Ok(Self(input))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl std::fmt::Debug for TokenText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenText([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_tokens_are_refused() {
        for blank in ["", " ", "\t\n"] {
            assert!(TokenText::parse(blank).is_err(), "{blank:?} was accepted");
        }
        assert_eq!(TokenText::parse("a.b.c").map(|t| t.as_str()), Ok("a.b.c"));
    }
}
