//! Response compression, ingress-nginx's `use-gzip` and `enable-brotli` families (its
//! `internal/ingress/controller/config/config.go` for the defaults, `nginx.tmpl` for the nginx
//! directives they become).

/// ingress-nginx's `gzip-types` default.
pub const DEFAULT_GZIP_TYPES: &str = "application/atom+xml application/javascript application/x-javascript application/json application/rss+xml application/vnd.ms-fontobject application/x-font-ttf application/x-web-app-manifest+json application/xhtml+xml application/xml font/opentype image/svg+xml image/x-icon text/css text/javascript text/plain text/x-component";

/// ingress-nginx's `brotli-types` default (`gzip-types`' list with `application/xml+rss` first).
pub const DEFAULT_BROTLI_TYPES: &str = "application/xml+rss application/atom+xml application/javascript application/x-javascript application/json application/rss+xml application/vnd.ms-fontobject application/x-font-ttf application/x-web-app-manifest+json application/xhtml+xml application/xml font/opentype image/svg+xml image/x-icon text/css text/javascript text/plain text/x-component";

/// How responses are compressed; `Default` is ingress-nginx's: both off.
#[derive(Clone, Debug, PartialEq)]
pub struct Compression {
    /// `use-gzip`, `gzip-level`, `gzip-min-length`, `gzip-types`.
    pub gzip: Encoding,
    /// `gzip-disable`: clients that never get gzip.
    pub gzip_disable: Option<UserAgents>,
    /// `enable-brotli`, `brotli-level`, `brotli-min-length`, `brotli-types`.
    pub brotli: Encoding,
}

/// One content coding's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoding {
    pub enabled: bool,
    /// zlib's level (1–9) for gzip, the quality (0–11) for brotli.
    pub level: u32,
    /// A response whose `Content-Length` says it is shorter is sent as it is.
    pub min_length: u64,
    /// The media types compressed.
    pub types: MediaTypes,
}

/// The media types a coding applies to, as nginx's `gzip_types` and `brotli_types` hold them:
/// lower case, `text/html` always among them, or any type (`*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaTypes {
    Any,
    Listed(Box<[Box<str>]>),
}

/// `gzip-disable`: nginx's `gzip_disable` with one argument, a regular expression matched
/// against `User-Agent` ignoring case, or `msie6`.
#[derive(Clone, Debug)]
pub enum UserAgents {
    /// nginx's `msie6`: "MSIE 4.", "MSIE 5." and "MSIE 6." without "SV1" after it.
    Msie6,
    Matching(regex::bytes::Regex),
}

// === impl Compression ===

impl Default for Compression {
    fn default() -> Self {
        Self {
            gzip: Encoding {
                enabled: false,
                level: 1,
                min_length: 256,
                types: MediaTypes::parse(DEFAULT_GZIP_TYPES).unwrap_or(MediaTypes::Any),
            },
            gzip_disable: None,
            brotli: Encoding {
                enabled: false,
                level: 4,
                min_length: 20,
                types: MediaTypes::parse(DEFAULT_BROTLI_TYPES).unwrap_or(MediaTypes::Any),
            },
        }
    }
}

impl Compression {
    /// Whether any response may be compressed.
    pub fn is_enabled(&self) -> bool {
        self.gzip.enabled || self.brotli.enabled
    }

    /// Whether a client sending `user_agent` may get gzip.
    pub fn gzip_allowed_for(&self, user_agent: Option<&[u8]>) -> bool {
        match (&self.gzip_disable, user_agent) {
            (Some(disable), Some(user_agent)) => !disable.matches(user_agent),
            _ => true,
        }
    }
}

// === impl Encoding ===

impl Encoding {
    /// Whether a response of this media type (its `Content-Type`, parameters included) and
    /// length (`None`: unknown) is compressed by this coding when the client accepts it.
    pub fn applies_to(&self, content_type: &[u8], length: Option<u64>) -> bool {
        self.enabled
            && length.is_none_or(|length| length >= self.min_length)
            && self.types.matches(content_type)
    }
}

// === impl MediaTypes ===

impl MediaTypes {
    /// The space-separated list of a `*-types` key; `None` when it names no type.
    pub fn parse(list: &str) -> Option<Self> {
        let mut names = list.split_ascii_whitespace().peekable();
        names.peek()?;
        let mut types: Vec<Box<str>> = vec!["text/html".into()];
        for name in names {
            if name == "*" {
                return Some(Self::Any);
            }
            let name = name.to_ascii_lowercase();
            if !types.iter().any(|listed| **listed == name) {
                types.push(name.into());
            }
        }
        Some(Self::Listed(types.into()))
    }

    /// Whether `content_type` (a `Content-Type` value) is one of these: its media type, without
    /// parameters, compared ignoring case. A response without a type never is.
    pub fn matches(&self, content_type: &[u8]) -> bool {
        let end = content_type.iter().position(|&b| b == b';').unwrap_or(content_type.len());
        let media_type = content_type[..end].trim_ascii();
        if media_type.is_empty() {
            return false;
        }
        match self {
            Self::Any => true,
            Self::Listed(types) => {
                types.iter().any(|listed| listed.as_bytes().eq_ignore_ascii_case(media_type))
            }
        }
    }
}

// === impl UserAgents ===

impl UserAgents {
    /// `gzip-disable`'s value; `Err` for a regular expression that does not compile.
    pub fn parse(value: &str) -> Result<Self, regex::Error> {
        if value == "msie6" {
            return Ok(Self::Msie6);
        }
        regex::bytes::RegexBuilder::new(value).case_insensitive(true).build().map(Self::Matching)
    }

    pub fn matches(&self, user_agent: &[u8]) -> bool {
        match self {
            Self::Msie6 => is_msie6(user_agent),
            Self::Matching(regex) => regex.is_match(user_agent),
        }
    }
}

impl PartialEq for UserAgents {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Msie6, Self::Msie6) => true,
            (Self::Matching(a), Self::Matching(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// nginx's test in `ngx_http_process_user_agent`.
fn is_msie6(user_agent: &[u8]) -> bool {
    let Some(at) = user_agent.windows(5).position(|window| window == b"MSIE ") else { return false };
    let msie = &user_agent[at..];
    if msie.len() <= 8 || msie[6] != b'.' {
        return false;
    }
    match msie[5] {
        b'4' | b'5' => true,
        b'6' => !msie[8..].windows(3).any(|window| window == b"SV1"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_html_is_always_listed_and_star_means_any() {
        let types = MediaTypes::parse("application/JSON").unwrap();
        assert!(types.matches(b"text/html; charset=utf-8"));
        assert!(types.matches(b"Application/Json"));
        assert!(!types.matches(b"text/plain"));
        assert!(!types.matches(b""));
        let any = MediaTypes::parse("text/plain *").unwrap();
        assert_eq!(any, MediaTypes::Any);
        assert!(any.matches(b"image/png"));
        assert!(!any.matches(b" ; charset=utf-8"), "no media type");
        assert_eq!(MediaTypes::parse("  "), None);
        assert!(MediaTypes::parse("text/html").is_some());
    }

    #[test]
    fn defaults_are_ingress_nginx_config_go() {
        let defaults = Compression::default();
        assert!(!defaults.is_enabled());
        assert_eq!((defaults.gzip.level, defaults.gzip.min_length), (1, 256));
        assert_eq!((defaults.brotli.level, defaults.brotli.min_length), (4, 20));
        assert!(defaults.gzip.types.matches(b"text/css"));
        assert!(defaults.brotli.types.matches(b"application/xml+rss"));
        assert!(!defaults.gzip.types.matches(b"application/xml+rss"));
    }

    #[test]
    fn a_known_length_under_the_minimum_is_not_compressed() {
        let gzip = Encoding { enabled: true, ..Compression::default().gzip };
        assert!(gzip.applies_to(b"text/plain", Some(256)));
        assert!(!gzip.applies_to(b"text/plain", Some(255)));
        assert!(gzip.applies_to(b"text/plain", None));
        assert!(!gzip.applies_to(b"image/png", None));
    }

    #[test]
    fn msie6_is_nginx_s_test() {
        let msie6 = UserAgents::parse("msie6").unwrap();
        assert!(msie6.matches(b"Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.0)"));
        assert!(msie6.matches(b"Mozilla/4.0 (compatible; MSIE 5.5; Windows 98)"));
        assert!(!msie6.matches(b"Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)"));
        assert!(!msie6.matches(b"Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0)"));
        let pattern = UserAgents::parse("curl/[0-9]").unwrap();
        assert!(pattern.matches(b"CURL/8.1"));
        assert!(!pattern.matches(b"Wget/1.2"));
        assert!(pattern.matches(b"curl/8 \xff"), "a User-Agent that is not UTF-8 is matched too");
        assert!(UserAgents::parse("(unclosed").is_err());
    }
}
