//! ListUsers' `filter`: the subset of AIP-160 the service supports, parsed
//! by hand into a [`UserFilter`] (what storage narrows the listing by).
//!
//! ```text
//! filter      = [ restriction { "AND" restriction } ]
//! restriction = ( "email" | "username" ) "=" string
//!             | ( "is_active" | "is_staff" ) "=" ( "true" | "false" )
//! string      = '"' { character | '\"' | '\\' } '"'
//! ```
//!
//! Whitespace may surround every token. `AND` is upper case, as in AIP-160.
//! Each field may be restricted once. Anything else (another field or
//! operator, `OR`, `NOT`, parentheses, single quotes, other escapes) is
//! refused with a description naming the part that is not supported.

use super::{Email, Username};

/// Longest filter accepted, in characters: room for every field at its
/// longest value, with escapes.
const MAX_FILTER_CHARS: usize = 2048;

/// Which users to list: every restriction given must hold. The default
/// restricts nothing; any other filter comes from [`UserFilter::parse`], so
/// its keys are always those of a valid email or username.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// `email = "…"`, as the lower-cased key uniqueness is decided on.
    email_key: Option<String>,
    /// `username = "…"`, as the lower-cased key logins are matched on.
    username_key: Option<String>,
    is_active: Option<bool>,
    is_staff: Option<bool>,
}

impl UserFilter {
    /// `email = "…"`: the email's key ([`Email::key`]).
    pub fn email_key(&self) -> Option<&str> {
        self.email_key.as_deref()
    }

    /// `username = "…"`: the username's key ([`Username::key`]).
    pub fn username_key(&self) -> Option<&str> {
        self.username_key.as_deref()
    }

    /// `is_active = true` / `false`.
    pub fn is_active(&self) -> Option<bool> {
        self.is_active
    }

    /// `is_staff = true` / `false`.
    pub fn is_staff(&self) -> Option<bool> {
        self.is_staff
    }

    /// # Errors
    /// A caller-facing description of the first part that is not supported
    /// or not valid.
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.chars().count() > MAX_FILTER_CHARS {
            return Err(format!(
                "Ensure this field has no more than {MAX_FILTER_CHARS} characters."
            ));
        }
        let tokens = lex(input)?;
        let mut tokens = tokens.into_iter().peekable();
        let mut filter = Self::default();
        if tokens.peek().is_none() {
            return Ok(filter);
        }
        loop {
            filter.restrict(&mut tokens)?;
            match tokens.next() {
                None => return Ok(filter),
                Some(Token::Word(word)) if word == "AND" => {
                    if tokens.peek().is_none() {
                        return Err("Nothing follows the last AND.".to_owned());
                    }
                }
                Some(Token::Word(word)) if word == "OR" => {
                    return Err("OR is not supported; combine restrictions with AND.".to_owned());
                }
                Some(other) => {
                    return Err(format!(
                        "Expected AND between restrictions, found {}.",
                        other.describe()
                    ));
                }
            }
        }
    }

    /// Whether nothing is restricted.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// One canonical text per filter, whatever order or spacing it was
    /// written in: what a page token is bound to.
    pub fn canonical(&self) -> String {
        let flag = |v: Option<bool>| v.map_or("", |v| if v { "true" } else { "false" });
        format!(
            "email={}\0username={}\0is_active={}\0is_staff={}",
            self.email_key.as_deref().unwrap_or(""),
            self.username_key.as_deref().unwrap_or(""),
            flag(self.is_active),
            flag(self.is_staff),
        )
    }

    /// Parses one `field = value` into `self`.
    fn restrict(&mut self, tokens: &mut impl Iterator<Item = Token>) -> Result<(), String> {
        let field = match tokens.next() {
            Some(Token::Word(word)) => word,
            Some(other) => {
                return Err(format!(
                    "Expected a field name, found {}.",
                    other.describe()
                ));
            }
            None => return Err("Expected a field name.".to_owned()),
        };
        if matches!(field.as_str(), "AND" | "OR" | "NOT") {
            return Err(format!(
                "{field} is not supported here; expected a field name."
            ));
        }
        if !matches!(
            field.as_str(),
            "email" | "username" | "is_active" | "is_staff"
        ) {
            return Err(format!(
                "Filtering on {} is not supported; filter on email, username, \
                 is_active or is_staff.",
                quoted(&field)
            ));
        }
        match tokens.next() {
            Some(Token::Operator(op)) if op == "=" => {}
            Some(Token::Operator(op)) => {
                return Err(format!(
                    "The operator {} after {field} is not supported; only \"=\" is.",
                    quoted(&op)
                ));
            }
            Some(other) => {
                return Err(format!(
                    "Expected \"=\" after {field}, found {}.",
                    other.describe()
                ));
            }
            None => return Err(format!("Expected \"=\" after {field}.")),
        }
        let value = tokens.next();
        let twice = || format!("{field} is restricted twice; give each field at most once.");
        match field.as_str() {
            "email" | "username" => {
                let text = match value {
                    Some(Token::String(text)) => text,
                    other => {
                        return Err(format!(
                            "{field} takes a string in double quotes, found {}.",
                            describe(other.as_ref())
                        ));
                    }
                };
                let (slot, key) = if field == "email" {
                    let key = Email::parse(&text).map_err(|e| format!("email: {e}"))?;
                    (&mut self.email_key, key.key())
                } else {
                    let key = Username::parse(&text).map_err(|e| format!("username: {e}"))?;
                    (&mut self.username_key, key.key())
                };
                if slot.replace(key).is_some() {
                    return Err(twice());
                }
            }
            _ => {
                let flag = match value {
                    Some(Token::Word(word)) if word == "true" => true,
                    Some(Token::Word(word)) if word == "false" => false,
                    other => {
                        return Err(format!(
                            "{field} takes true or false, found {}.",
                            describe(other.as_ref())
                        ));
                    }
                };
                let slot = if field == "is_active" {
                    &mut self.is_active
                } else {
                    &mut self.is_staff
                };
                if slot.replace(flag).is_some() {
                    return Err(twice());
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A field name, a keyword (`AND`) or a literal (`true`).
    Word(String),
    /// A run of operator characters: `=`, `!=`, `<=`, `:` …
    Operator(String),
    /// A double-quoted string, escapes resolved.
    String(String),
    /// Anything else: `(`, `'`, `,` …
    Other(char),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Self::Word(text) | Self::Operator(text) => quoted(text),
            Self::String(text) => format!("the string {}", quoted(text)),
            Self::Other(c) => quoted(c.encode_utf8(&mut [0; 4])),
        }
    }
}

/// The most characters of the caller's input a description repeats.
const MAX_QUOTED_CHARS: usize = 64;

/// `text` as a description quotes it: in double quotes with control
/// characters, quotes and backslashes escaped (`{:?}`), cut to
/// [`MAX_QUOTED_CHARS`] characters and an ellipsis.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

fn describe(token: Option<&Token>) -> String {
    token.map_or_else(|| "nothing".to_owned(), Token::describe)
}

const OPERATOR_CHARS: &[char] = &['=', '!', '<', '>', ':', '~'];

fn lex(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            tokens.push(Token::String(string(&mut chars)?));
        } else if OPERATOR_CHARS.contains(&c) {
            let mut op = String::new();
            while let Some(&c) = chars.peek().filter(|c| OPERATOR_CHARS.contains(c)) {
                op.push(c);
                chars.next();
            }
            tokens.push(Token::Operator(op));
        } else if c.is_alphanumeric() || c == '_' || c == '.' {
            let mut word = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_alphanumeric() || **c == '_' || **c == '.')
            {
                word.push(c);
                chars.next();
            }
            tokens.push(Token::Word(word));
        } else if c == '\'' {
            return Err(
                "Strings in single quotes are not supported; use double quotes.".to_owned(),
            );
        } else {
            chars.next();
            tokens.push(Token::Other(c));
            // Nothing valid contains it: refused where the parser meets it,
            // with what came before as context.
        }
    }
    Ok(tokens)
}

/// The rest of a string whose opening quote was read.
fn string(chars: &mut impl Iterator<Item = char>) -> Result<String, String> {
    let mut text = String::new();
    loop {
        match chars.next() {
            None => return Err("A string is not closed: a double quote is missing.".to_owned()),
            Some('"') => return Ok(text),
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => text.push(c),
                Some(c) => {
                    return Err(format!(
                        "The escape \\{} is not supported; only \\\" and \\\\ are.",
                        c.escape_debug()
                    ));
                }
                None => {
                    return Err("A string is not closed: a double quote is missing.".to_owned());
                }
            },
            Some(c) => text.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> UserFilter {
        UserFilter::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    fn refused(input: &str) -> String {
        match UserFilter::parse(input) {
            Ok(filter) => panic!("{input:?} was accepted as {filter:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_and_blank_filters_restrict_nothing() {
        assert!(parsed("").is_empty());
        assert!(parsed(" \t\n").is_empty());
    }

    #[test]
    fn each_field_and_their_conjunction() {
        let filter = parsed(r#"email = "Ann.Lee@Example.COM""#);
        assert_eq!(filter.email_key.as_deref(), Some("ann.lee@example.com"));
        let filter = parsed(r#"username="ANN""#);
        assert_eq!(filter.username_key.as_deref(), Some("ann"));
        assert_eq!(parsed("is_active = false").is_active, Some(false));
        assert_eq!(parsed("is_staff=true").is_staff, Some(true));
        let all = parsed(
            "  is_staff = true AND\tusername = \"Ann\"\nAND is_active = true AND email = \"a@b.io\" ",
        );
        assert_eq!(
            all,
            UserFilter {
                email_key: Some("a@b.io".into()),
                username_key: Some("ann".into()),
                is_active: Some(true),
                is_staff: Some(true),
            }
        );
    }

    #[test]
    fn strings_take_backslash_escapes() {
        assert_eq!(
            lex(r#"username="a\"b\\c""#),
            Ok(vec![
                Token::Word("username".into()),
                Token::Operator("=".into()),
                Token::String(r#"a"b\c"#.into()),
            ])
        );
        // Read before the value is checked (a quote is no username character).
        let e = refused(r#"username = "a\"b""#);
        assert!(e.starts_with("username:"), "{e}");
        assert!(refused(r#"email = "a\nb""#).contains("\\n"));
        assert!(refused(r#"email = "abc"#).contains("not closed"));
        assert!(refused(r#"email = "abc\"#).contains("not closed"));
    }

    #[test]
    fn the_canonical_form_ignores_order_spacing_and_case() {
        let a = parsed(r#"is_active = true AND username = "Ann""#);
        let b = parsed(r#"username="ann"    AND is_active=true"#);
        assert_eq!(a.canonical(), b.canonical());
        assert_ne!(a.canonical(), parsed("is_active = true").canonical());
        assert_ne!(
            parsed("is_staff = true").canonical(),
            parsed("is_active = true").canonical()
        );
        assert_eq!(parsed("").canonical(), UserFilter::default().canonical());
    }

    #[test]
    fn unsupported_parts_are_named() {
        for (input, named) in [
            (r#"name = "ann""#, "\"name\""),
            (r#"email != "a@b.io""#, "\"!=\""),
            (r#"email : "a@b.io""#, "\":\""),
            ("is_active > false", "\">\""),
            (r#"is_active = true OR is_staff = true"#, "OR"),
            (r#"NOT is_active = true"#, "NOT"),
            (r#"is_active = true and is_staff = true"#, "\"and\""),
            (r#"is_active = true is_staff = true"#, "\"is_staff\""),
            (r#"(is_active = true)"#, "\"(\""),
            (r#"email = 'a@b.io'"#, "single quotes"),
            ("is_active = yes", "\"yes\""),
            ("is_active = \"true\"", "the string \"true\""),
            ("email = ann", "\"ann\""),
            ("is_active = true AND", "AND"),
            ("is_active =", "nothing"),
            ("is_active", "\"=\""),
            ("is_active = true AND is_active = false", "twice"),
            ("email = \"not an email\"", "email:"),
            ("username = \"a b\"", "username:"),
        ] {
            let e = refused(input);
            assert!(e.contains(named), "{input:?}: {e:?} does not name {named}");
        }
        assert!(refused(&"a".repeat(MAX_FILTER_CHARS + 1)).contains("no more than"));
    }

    #[test]
    fn there_are_no_wildcards() {
        // `*` is an ordinary character: matched as itself where allowed...
        let filter = parsed(r#"email = "A*@b.io""#);
        assert_eq!(filter.email_key(), Some("a*@b.io"));
        // ...refused where it is not (no username has one).
        assert!(refused(r#"username = "a*""#).starts_with("username:"));
    }

    #[test]
    fn echoed_input_is_quoted_escaped_and_cut_short() {
        // Control characters and quotes come back escaped, inside quotes.
        let e = refused("is_staff = \"na\u{7}me\"");
        assert!(e.contains(r#"the string "na\u{7}me""#), "{e}");
        let e = refused("is_active = \"a\\\"b\nc\"");
        assert!(e.contains(r#"the string "a\"b\nc""#), "{e}");
        assert!(refused("is_staff = true \u{1b}").contains(r#""\u{1b}""#));
        assert!(refused(r#"email = "a\	b""#).contains(r"\\t"));
        // A long word is cut to MAX_QUOTED_CHARS characters and an ellipsis.
        let long = "é".repeat(2000);
        let e = refused(&long);
        assert!(
            e.contains(&format!("\"{}\"…", "é".repeat(MAX_QUOTED_CHARS))),
            "{e}"
        );
        assert!(e.chars().count() < MAX_QUOTED_CHARS + 100, "{e}");
        let e = refused(&format!("is_active = \"{}\"", "x".repeat(500)));
        assert!(
            e.contains(&format!("\"{}\"…", "x".repeat(MAX_QUOTED_CHARS))),
            "{e}"
        );
        // Up to the limit, whole.
        let word = "w".repeat(MAX_QUOTED_CHARS);
        assert!(refused(&word).contains(&format!("\"{word}\" is")));
    }
}
