const MAX_CHARS: usize = 200;

/// An avatar URL: absolute `http` or `https`, with a host, at most 200
/// characters (Django's `URLField` default length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar(String);

impl Avatar {
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.chars().count() > MAX_CHARS {
            return Err(format!(
                "Ensure this field has no more than {MAX_CHARS} characters."
            ));
        }
        let url = url::Url::parse(input).map_err(|_| "Enter a valid URL.".to_owned())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err("Enter a valid http or https URL.".into());
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https() {
        assert!(Avatar::parse("https://cdn.example.com/a.png").is_ok());
        assert!(Avatar::parse("http://example.com/a.png?size=64").is_ok());
    }

    #[test]
    fn rejects_other_schemes_relative_and_long_urls() {
        let long = format!("https://example.com/{}", "a".repeat(200));
        for bad in [
            "ftp://example.com/a.png",
            "/a.png",
            "javascript:alert(1)",
            "",
            long.as_str(),
        ] {
            assert!(Avatar::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
