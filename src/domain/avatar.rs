use super::too_long;

const MAX_CHARS: usize = 200;

/// An avatar URL: absolute `http` or `https`, with a domain name or IP
/// host, at most 200 characters (Django's `URLField` default length). It is
/// kept in the URL parser's canonical form, so what is stored is exactly
/// what clients will load (`http:/host` is stored as `http://host/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar(String);

impl Avatar {
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.chars().count() > MAX_CHARS {
            return Err(too_long(MAX_CHARS, "characters"));
        }
        // The URL parser silently drops tabs and newlines; refuse them instead.
        if input.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("Enter a valid URL.".into());
        }
        let url = url::Url::parse(input).map_err(|_| "Enter a valid URL.".to_owned())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("Enter a valid http or https URL.".into());
        }
        let valid_host = match url.host() {
            Some(url::Host::Domain(domain)) => {
                !domain.is_empty()
                    && domain.split('.').all(|label| {
                        !label.is_empty()
                            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    })
            }
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
            None => false,
        };
        if !valid_host {
            return Err("Enter a valid URL.".into());
        }
        let canonical = String::from(url);
        if canonical.chars().count() > MAX_CHARS {
            return Err(too_long(MAX_CHARS, "characters"));
        }
        Ok(Self(canonical))
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
    fn stores_the_canonical_form() {
        let avatar = Avatar::parse("HTTPS://CDN.Example.com/a.png").map(Avatar::into_string);
        assert_eq!(avatar.as_deref(), Ok("https://cdn.example.com/a.png"));
        let avatar = Avatar::parse("http:/example.com/a.png").map(Avatar::into_string);
        assert_eq!(avatar.as_deref(), Ok("http://example.com/a.png"));
    }

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
