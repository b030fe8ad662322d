//! Path rules (`Exact`, `Prefix`) and the normalisation every path goes through before it is
//! matched.
//!
//! See <https://kubernetes.io/docs/concepts/services-networking/ingress/#path-types>.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A configured path. Exact and Prefix paths are stored normalised (see [`normalize_path`]), so
/// that a rule and a request are compared in the same form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathRule {
    /// Matches the whole path, case-sensitively; `/foo` does not match `/foo/`.
    Exact(Box<str>),
    /// Matches element-wise: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`. Stored
    /// without its trailing slash (`/foo/` and `/foo` are the same rule); the root is `""`.
    Prefix(Box<str>),
    /// A regular expression (`use-regex`), matched as nginx's `~* "^…"`: case-insensitive,
    /// anchored at the start of the normalised path.
    Regex(PathRegex),
}

/// A compiled path regex, compared and ordered by its pattern. Linear-time (the `regex` crate)
/// and size-capped, so no pattern can make matching expensive.
#[derive(Clone, Debug)]
pub struct PathRegex(Arc<Compiled>);

/// Behind one pointer: a route's rule is held by every host it serves, and regexes are rare.
#[derive(Debug)]
struct Compiled {
    pattern: Box<str>,
    regex: regex::Regex,
}

/// How well a path rule matched a request. Ordered by precedence, as nginx picks a location: an
/// `Exact` match, then a regex (the longest pattern first), then the longest `Prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathMatch {
    pub kind: PathMatchKind,
    pub len: usize,
}

/// The kind of a [`PathMatch`], in increasing precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathMatchKind {
    Prefix,
    Regex,
    Exact,
}

/// Longest regex pattern accepted.
const MAX_PATTERN_LEN: usize = 1024;

/// Why a path (of a rule or a request) cannot be judged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidPath {
    #[error("path must start with `/`")]
    NotAbsolute,
    #[error("path has a malformed percent-escape")]
    InvalidEscape,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is not valid UTF-8 once decoded")]
    NotUtf8,
    #[error("path climbs above the root with `..`")]
    AboveRoot,
    #[error("invalid regular expression: {0}")]
    InvalidRegex(String),
    #[error("path mixes an encoded `/` with dot segments")]
    EncodedSlashWithDotSegments,
}

/// Normalises a path the way nginx does before it picks a location: percent-escapes decoded
/// (`%2F` included), runs of `/` merged, `.` and `..` segments resolved. A trailing slash is
/// kept (`/foo/.` gives `/foo/`). Paths that cannot be judged safely are refused: `..` above
/// the root, malformed escapes, NUL, bytes that do not decode to UTF-8.
///
/// Borrows when the path is already normal, so the common request costs no allocation.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, InvalidPath> {
    if !raw.starts_with('/') {
        return Err(InvalidPath::NotAbsolute);
    }
    let needs_work = raw.contains('%') || raw.contains("//") || raw.contains("/.");
    if !needs_work {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = String::from_utf8(percent_decode(raw.as_bytes())?).map_err(|_| InvalidPath::NotUtf8)?;
    let last_segment = decoded.rsplit('/').next().unwrap_or("");
    let trailing_slash = matches!(last_segment, "" | "." | "..");

    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => match out.rfind('/') {
                Some(parent) => out.truncate(parent),
                None => return Err(InvalidPath::AboveRoot),
            },
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The path to send upstream: the client's, with escapes of unreserved characters decoded
/// (`%61` is `a`, `%2E` is `.`, RFC 3986 §6.2.2.2) and empty and dot segments then resolved as
/// [`normalize_path`] resolves them, but with every other escape left as sent: `%2F` stays
/// inside its segment, so `/api/group%2Fproject` reaches the backend as it was written (as
/// nginx forwards the request URI).
///
/// Decoding the result gives what [`normalize_path`] gives for `raw`: the backend is sent the
/// request the router judged. Where the two readings could part — a segment holding an encoded
/// `/` and a dot segment inside it, or a `..` that would remove such a segment — the path is
/// refused. A path [`normalize_path`] refuses is refused too.
pub fn forwarded_path(raw: &str) -> Result<Cow<'_, str>, InvalidPath> {
    normalize_path(raw)?;
    if !raw.contains('%') && !raw.contains("//") && !raw.contains("/.") {
        return Ok(Cow::Borrowed(raw));
    }
    let path = decode_unreserved(raw);
    let has_encoded_slash = |segment: &str| segment.contains("%2F") || segment.contains("%2f");
    let last = path.rsplit('/').next().unwrap_or("");
    let trailing_slash = matches!(last, "" | "." | "..");

    let mut out = String::with_capacity(path.len());
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                let parent = out.rfind('/').ok_or(InvalidPath::AboveRoot)?;
                if has_encoded_slash(&out[parent..]) {
                    return Err(InvalidPath::EncodedSlashWithDotSegments);
                }
                out.truncate(parent);
            }
            segment => {
                if has_encoded_slash(segment) {
                    let decoded = percent_decode(segment.as_bytes())?;
                    if decoded.split(|&b| b == b'/').any(|part| part == b"." || part == b"..") {
                        return Err(InvalidPath::EncodedSlashWithDotSegments);
                    }
                }
                out.push('/');
                out.push_str(segment);
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Decodes the escapes of unreserved characters (letters, digits, `-._~`) and keeps the others
/// as written. The escapes are well-formed: [`normalize_path`] checked them.
fn decode_unreserved(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).and_then(|&b| hex_value(b)), bytes.get(i + 2).and_then(|&b| hex_value(b)))
        {
            let byte = hi << 4 | lo;
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(byte as char);
            } else {
                out.push_str(&raw[i..i + 3]);
            }
            i += 3;
            continue;
        }
        let char_len = raw[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&raw[i..i + char_len]);
        i += char_len;
    }
    out
}

fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, InvalidPath> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        let b = if b == b'%' {
            let hi = bytes.next().and_then(|&h| hex_value(h));
            let lo = bytes.next().and_then(|&l| hex_value(l));
            match (hi, lo) {
                (Some(hi), Some(lo)) => hi << 4 | lo,
                _ => return Err(InvalidPath::InvalidEscape),
            }
        } else {
            b
        };
        if b == 0 {
            return Err(InvalidPath::Nul);
        }
        out.push(b);
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

// === impl PathRule ===

impl PathRule {
    /// An `Exact` rule for a path, normalised.
    pub fn exact(path: &str) -> Result<Self, InvalidPath> {
        Ok(Self::Exact(normalize_path(path)?.into()))
    }

    /// A `Prefix` rule for a path, normalised, trailing slash dropped.
    pub fn prefix(path: &str) -> Result<Self, InvalidPath> {
        let path = normalize_path(path)?;
        Ok(Self::Prefix(path.trim_end_matches('/').into()))
    }

    /// A `Regex` rule for a pattern.
    pub fn regex(pattern: &str) -> Result<Self, InvalidPath> {
        PathRegex::new(pattern).map(Self::Regex)
    }

    /// How this rule matches a normalised request path, if it does. Routing uses hash lookups
    /// instead (see `VirtualHost`); this is the definition they must agree with.
    pub fn matches(&self, path: &str) -> Option<PathMatch> {
        match self {
            Self::Regex(r) => r
                .regex()
                .is_match(path)
                .then_some(PathMatch { len: r.pattern().len(), kind: PathMatchKind::Regex }),
            Self::Exact(p) => {
                (**p == *path).then_some(PathMatch { len: p.len(), kind: PathMatchKind::Exact })
            }
            Self::Prefix(p) => {
                let rest = path.strip_prefix(&**p)?;
                (rest.is_empty() || rest.starts_with('/'))
                    .then_some(PathMatch { len: p.len(), kind: PathMatchKind::Prefix })
            }
        }
    }
}

impl PathRule {
    /// How this rule matches on a host that has `Regex` rules, where ingress-nginx writes every
    /// location as `~* "^<path>"`: `Exact` and `Prefix` paths match any path that starts with
    /// them, ignoring ASCII case (so `Exact /foo` also matches `/FOO/bar`), and regexes as
    /// always. The match's `len` is the rule's length, the order the rules are tried in.
    pub fn matches_on_regex_host(&self, path: &str) -> Option<PathMatch> {
        match self {
            Self::Regex(_) => self.matches(path),
            Self::Exact(p) | Self::Prefix(p) => {
                let head = path.as_bytes().get(..p.len())?;
                let kind =
                    if matches!(self, Self::Exact(_)) { PathMatchKind::Exact } else { PathMatchKind::Prefix };
                head.eq_ignore_ascii_case(p.as_bytes()).then_some(PathMatch { len: p.len(), kind })
            }
        }
    }
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(p) => write!(f, "Exact {p}"),
            Self::Prefix(p) if p.is_empty() => f.write_str("Prefix /"),
            Self::Prefix(p) => write!(f, "Prefix {p}"),
            Self::Regex(r) => write!(f, "Regex {}", r.pattern()),
        }
    }
}

// === impl PathRegex ===

impl PathRegex {
    /// Compiles `pattern` as `(?i)^(?:pattern)`. The pattern must start with `/`.
    pub fn new(pattern: &str) -> Result<Self, InvalidPath> {
        if !pattern.starts_with('/') {
            return Err(InvalidPath::NotAbsolute);
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(InvalidPath::InvalidRegex(format!("longer than {MAX_PATTERN_LEN} characters")));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})"))
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                InvalidPath::InvalidRegex(e.to_string().lines().last().unwrap_or("").trim().to_owned())
            })?;
        Ok(Self(Arc::new(Compiled { pattern: pattern.into(), regex })))
    }

    /// A regex matching `path` literally at the start (for rewrites of non-regex paths).
    pub fn literal(path: &str) -> Self {
        let regex = regex::Regex::new(&format!("^{}", regex::escape(path)))
            .expect("an escaped literal is a valid regex");
        Self(Arc::new(Compiled { pattern: path.into(), regex }))
    }

    pub fn pattern(&self) -> &str {
        &self.0.pattern
    }

    pub fn regex(&self) -> &regex::Regex {
        &self.0.regex
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern() == other.pattern()
    }
}

impl Eq for PathRegex {}

impl PartialOrd for PathRegex {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PathRegex {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pattern().cmp(other.pattern())
    }
}

impl std::hash::Hash for PathRegex {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pattern().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/foo", "/foo/", "/a/b.c/d", "/x{y}*:z"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(q)) if q == p), "{p}");
        }
    }

    #[test]
    fn no_spelling_of_admin_escapes_normalisation() {
        for p in [
            "/admin",
            "//admin",
            "/./admin",
            "/x/../admin",
            "/%61dmin",
            "/%2e/admin",
            "/x/%2e%2e/admin",
            "/x%2F..%2Fadmin",
            "/x/.%2E/admin",
            "///admin",
        ] {
            assert_eq!(normalize_path(p).unwrap(), "/admin", "{p}");
        }
    }

    #[test]
    fn trailing_slash_is_kept_through_dot_segments() {
        assert_eq!(normalize_path("/foo/").unwrap(), "/foo/");
        assert_eq!(normalize_path("/foo//").unwrap(), "/foo/");
        assert_eq!(normalize_path("/foo/.").unwrap(), "/foo/");
        assert_eq!(normalize_path("/foo/bar/..").unwrap(), "/foo/");
        assert_eq!(normalize_path("/foo/..").unwrap(), "/");
        assert_eq!(normalize_path("/.").unwrap(), "/");
    }

    #[test]
    fn unjudgeable_paths_are_refused() {
        assert_eq!(normalize_path("/.."), Err(InvalidPath::AboveRoot));
        assert_eq!(normalize_path("/a/../../b"), Err(InvalidPath::AboveRoot));
        assert_eq!(normalize_path("/%2e%2e/etc"), Err(InvalidPath::AboveRoot));
        assert_eq!(normalize_path("/%zz"), Err(InvalidPath::InvalidEscape));
        assert_eq!(normalize_path("/%4"), Err(InvalidPath::InvalidEscape));
        assert_eq!(normalize_path("/a%00b"), Err(InvalidPath::Nul));
        assert_eq!(normalize_path("/%ff"), Err(InvalidPath::NotUtf8));
        assert_eq!(normalize_path("foo"), Err(InvalidPath::NotAbsolute));
        assert_eq!(normalize_path(""), Err(InvalidPath::NotAbsolute));
    }

    #[test]
    fn forwarded_paths_keep_escapes_but_resolve_segments() {
        let cases = [
            ("/api/group%2Fproject", "/api/group%2Fproject"),
            ("/a//b/./c/../d", "/a/b/d"),
            ("/caf%C3%A9/%2e/x", "/caf%C3%A9/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/a/%2E%2E/b/", "/b/"),
            ("/a/b/.", "/a/b/"),
            ("/admin%2Fx", "/admin%2Fx"),
            ("/x%20y", "/x%20y"),
            ("/plain", "/plain"),
        ];
        for (raw, expected) in cases {
            assert_eq!(forwarded_path(raw).unwrap(), expected, "{raw}");
            assert_eq!(normalize_path(expected).unwrap(), normalize_path(raw).unwrap(), "{raw}");
        }
    }

    #[test]
    fn forwarded_paths_refuse_what_the_backend_could_read_otherwise() {
        for raw in ["/a%2Fb/../c", "/x%2F..%2Fadmin", "/a/%2e%2E%2fb", "/.."] {
            assert!(forwarded_path(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn utf8_escapes_decode() {
        assert_eq!(normalize_path("/caf%C3%A9").unwrap(), "/café");
    }

    #[test]
    fn prefix_ignores_trailing_slash_of_the_rule() {
        assert_eq!(PathRule::prefix("/foo/").unwrap(), PathRule::prefix("/foo").unwrap());
        assert_eq!(PathRule::prefix("/").unwrap(), PathRule::Prefix("".into()));
    }

    #[test]
    fn exact_beats_regex_beats_prefix_and_longer_beats_shorter() {
        let exact = PathMatch { len: 4, kind: PathMatchKind::Exact };
        let regex = PathMatch { len: 9, kind: PathMatchKind::Regex };
        let prefix = PathMatch { len: 4, kind: PathMatchKind::Prefix };
        let longer = PathMatch { len: 8, kind: PathMatchKind::Prefix };
        assert!(exact > regex && regex > longer && longer > prefix);
    }

    #[test]
    fn regex_rules_are_anchored_case_insensitive_and_bounded() {
        let rule = PathRule::regex("/api/v[0-9]+|/legacy").unwrap();
        assert!(rule.matches("/API/v2/users").is_some());
        assert!(rule.matches("/legacy/x").is_some());
        assert!(rule.matches("/x/legacy").is_none(), "alternatives are anchored too");
        assert!(PathRule::regex("/a(").is_err());
        assert!(PathRule::regex("api").is_err());
        assert!(PathRule::regex(&format!("/{}", "a".repeat(2000))).is_err());
    }
}
