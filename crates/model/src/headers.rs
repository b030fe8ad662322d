//! The `--configmap` keys about headers, as ingress-nginx's nginx.tmpl applies them to every
//! request: headers set toward the backend (`proxy-set-headers`) and toward the client
//! (`add-headers`), endpoint headers hidden (`hide-headers`), the `Server` header
//! (`server-tokens`), which client headers nginx ignores (`enable-underscores-in-headers`,
//! `ignore-invalid-headers`), `X-Request-ID` (`generate-request-id`), `X-Original-URI`
//! (`proxy-add-original-uri-header`), and the `User-Agent` and `Referer` values answered 403
//! (`block-user-agents`, `block-referers`).

use http::{HeaderName, HeaderValue};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::Template;

/// Headers of every request and response; `Default` is ingress-nginx's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderSettings {
    /// `proxy-set-headers`: sent to the backend, replacing what the client or the proxy put
    /// under the same name (a value that is or comes out empty removes it).
    pub proxy_set_headers: Box<[(HeaderName, SetValue)]>,
    /// `add-headers`: set on every answer (nginx's `more_set_headers` at the `http` level),
    /// replacing the endpoint's.
    pub add_headers: Box<[(HeaderName, HeaderValue)]>,
    /// `hide-headers`: endpoint headers not passed to the client (`proxy_hide_header`).
    pub hide_headers: Box<[HeaderName]>,
    /// `server-tokens` (default false): answers carry `Server: ostium/<version>`; otherwise no
    /// `Server` header at all (ingress-nginx clears it).
    pub server_tokens: bool,
    /// `enable-underscores-in-headers` (default false): client headers with `_` in their name are
    /// kept.
    pub underscores_in_headers: bool,
    /// `ignore-invalid-headers` (default true): client headers whose names hold anything but
    /// letters, digits and `-` (and `_` when allowed) are dropped.
    pub ignore_invalid_headers: bool,
    /// `generate-request-id` (default true): a request without `X-Request-ID` gets one.
    pub generate_request_id: bool,
    /// `proxy-add-original-uri-header` (default false): the backend gets `X-Original-URI`, the
    /// request target as the client sent it.
    pub original_uri_header: bool,
    /// `block-user-agents`: requests whose `User-Agent` matches are answered 403.
    pub block_user_agents: Option<HeaderBlock>,
    /// `block-referers`: requests whose `Referer` matches are answered 403.
    pub block_referers: Option<HeaderBlock>,
    /// A block list could not be applied whole: every request is refused (503).
    pub blocks_unusable: bool,
}

impl Default for HeaderSettings {
    fn default() -> Self {
        Self {
            proxy_set_headers: Box::default(),
            add_headers: Box::default(),
            hide_headers: Box::default(),
            server_tokens: false,
            underscores_in_headers: false,
            ignore_invalid_headers: true,
            generate_request_id: true,
            original_uri_header: false,
            block_user_agents: None,
            block_referers: None,
            blocks_unusable: false,
        }
    }
}

/// A `proxy-set-headers` value: text, built once, or text with nginx variables, filled per
/// request from the request as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetValue {
    Text(HeaderValue),
    Template(Template),
}

impl HeaderSettings {
    /// Whether nginx ignores a client header of this name: with `ignore_invalid_headers on`, a
    /// name with a byte other than a letter, digit or `-` (or `_` under
    /// `underscores_in_headers on`).
    pub fn ignores_request_header(&self, name: &str) -> bool {
        self.ignore_invalid_headers
            && name.bytes().any(|b| {
                !(b.is_ascii_alphanumeric() || b == b'-' || (b == b'_' && self.underscores_in_headers))
            })
    }
}

/// Compiled size limits of one pattern and of all patterns of a list together, so that a
/// pathological pattern is refused at translation instead of taking memory.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;
const LIST_SIZE_LIMIT: usize = 8 << 20;
/// The lazy DFA's cache per matching thread.
const DFA_SIZE_LIMIT: usize = 2 << 20;

/// The entries of an nginx `map` that answers 403: exact values (compared ignoring ASCII case,
/// as nginx's map compares strings) and regular expressions (nginx's `~`, `~*` without case),
/// matched anywhere in the value.
#[derive(Clone, Debug)]
pub struct HeaderBlock {
    /// Lower-cased.
    exact: Box<[Box<[u8]>]>,
    patterns: Box<[BlockPattern]>,
    set: Option<RegexSet>,
}

/// One regular expression of a [`HeaderBlock`], checked on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPattern {
    source: Box<str>,
    case_insensitive: bool,
}

impl BlockPattern {
    /// Checks `source` (Rust `regex` syntax, close to PCRE without look-around or back
    /// references) under the size limit.
    pub fn new(source: &str, case_insensitive: bool) -> Result<Self, String> {
        RegexBuilder::new(source)
            .case_insensitive(case_insensitive)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string())
            .map(|_: Regex| Self { source: source.into(), case_insensitive })
    }

    /// The pattern as nginx's map writes it: `~` or `~*`, then the expression.
    pub fn as_nginx(&self) -> String {
        format!("{}{}", if self.case_insensitive { "~*" } else { "~" }, self.source)
    }
}

impl HeaderBlock {
    /// A list of exact values and checked patterns; `Err` when the patterns together exceed the
    /// size limit.
    pub fn new(exact: Vec<String>, patterns: Vec<BlockPattern>) -> Result<Self, String> {
        let exact = exact.into_iter().map(|e| e.to_ascii_lowercase().into_bytes().into()).collect();
        let set = match patterns.is_empty() {
            true => None,
            false => Some(
                RegexSetBuilder::new(patterns.iter().map(|p| match p.case_insensitive {
                    true => format!("(?i:{})", p.source),
                    false => format!("(?:{})", p.source),
                }))
                .size_limit(LIST_SIZE_LIMIT)
                .dfa_size_limit(DFA_SIZE_LIMIT)
                .build()
                .map_err(|e| e.to_string())?,
            ),
        };
        Ok(Self { exact, patterns: patterns.into(), set })
    }

    /// Whether the header's value (empty when the request has none, as nginx's `$http_*`) is
    /// blocked.
    pub fn blocks(&self, value: &[u8]) -> bool {
        self.exact.iter().any(|exact| exact.eq_ignore_ascii_case(value))
            || self.set.as_ref().is_some_and(|set| set.is_match(value))
    }

    /// The entries, exact values first, as nginx's map would list them.
    pub fn entries(&self) -> impl Iterator<Item = String> + '_ {
        let exact = self.exact.iter().map(|e| String::from_utf8_lossy(e).into_owned());
        exact.chain(self.patterns.iter().map(BlockPattern::as_nginx))
    }
}

impl PartialEq for HeaderBlock {
    fn eq(&self, other: &Self) -> bool {
        self.exact == other.exact && self.patterns == other.patterns
    }
}

impl Eq for HeaderBlock {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values_ignore_case_and_patterns_match_anywhere() {
        let patterns = vec![
            BlockPattern::new(r"chrome/68\.0", true).unwrap(),
            BlockPattern::new(r"^Bad", false).unwrap(),
            BlockPattern::new(r"^$", false).unwrap(),
        ];
        let block = HeaderBlock::new(vec!["AlphaBot".into()], patterns).unwrap();
        assert!(block.blocks(b"alphabot"));
        assert!(!block.blocks(b"alphabot/2"));
        assert!(block.blocks(b"Mozilla/5.0 Chrome/68.0.3440"));
        assert!(block.blocks(b"Badger"));
        assert!(!block.blocks(b"badger"));
        assert!(block.blocks(b""), "an absent header is the empty value");
        assert!(!block.blocks(b"Mozilla/5.0 Safari"));
    }

    #[test]
    fn huge_patterns_are_refused() {
        assert!(BlockPattern::new(r"\w{1000}\w{1000}\w{1000}", false).is_err());
        assert!(BlockPattern::new(r"(", false).is_err());
    }

    #[test]
    fn invalid_names_are_ignored_as_nginx_does() {
        let mut settings = HeaderSettings::default();
        assert!(settings.ignores_request_header("x_custom"));
        assert!(settings.ignores_request_header("x.custom"));
        assert!(!settings.ignores_request_header("x-custom-2"));
        settings.underscores_in_headers = true;
        assert!(!settings.ignores_request_header("x_custom"));
        assert!(settings.ignores_request_header("x.custom"));
        settings.ignore_invalid_headers = false;
        settings.underscores_in_headers = false;
        assert!(!settings.ignores_request_header("x_custom"));
    }
}
