//! `block-user-agents` and `block-referers`: ingress-nginx's `$block_ua` and `$block_ref` maps,
//! tested by an `if` in every `server` block (nginx.tmpl), so before routing and before any
//! route's policy, for known and unknown hosts alike: a match is answered 403.

use http::HeaderMap;
use http::header::{HeaderName, REFERER, USER_AGENT};
use ostium_model::{HeaderBlock, HeaderSettings};

use crate::ProxyError;

pub(crate) fn check(settings: &HeaderSettings, headers: &HeaderMap) -> Result<(), ProxyError> {
    if settings.blocks_unusable {
        return Err(ProxyError::RouteDenied);
    }
    let blocks = |block: &Option<HeaderBlock>, name: HeaderName| {
        block.as_ref().is_some_and(|block| with_value(headers, name, |value| block.blocks(value)))
    };
    match blocks(&settings.block_user_agents, USER_AGENT) || blocks(&settings.block_referers, REFERER) {
        true => Err(ProxyError::Forbidden),
        false => Ok(()),
    }
}

/// The header's value as nginx's `$http_<name>` gives it: empty when absent, repeated values
/// joined with `, `.
fn with_value(headers: &HeaderMap, name: HeaderName, judge: impl Fn(&[u8]) -> bool) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return judge(b"") };
    let rest: Vec<&[u8]> = values.map(|value| value.as_bytes()).collect();
    if rest.is_empty() {
        return judge(first.as_bytes());
    }
    judge(&[first.as_bytes()].into_iter().chain(rest).collect::<Vec<_>>().join(&b", "[..]))
}
