//! The endpoint's response headers as the route reshapes them, as nginx's proxy module does:
//! `proxy_redirect` on the start of `Location` and of `Refresh` after `url=` (a `Location` it
//! turned into a path is then made absolute, unless `relative-redirects`), `proxy_cookie_domain`
//! and `proxy_cookie_path` on the attributes of each `Set-Cookie`. Headers nothing matches are
//! left byte for byte.

use http::header::{Entry, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use ostium_model::{Shaping, TextRewrite};

const REFRESH: HeaderName = HeaderName::from_static("refresh");

/// Reshapes the endpoint's headers for a request on `host` (as the client sent it).
pub(crate) fn shape(headers: &mut HeaderMap, shaping: &Shaping, is_tls: bool, host: Option<&str>) {
    if let Some(redirect) = &shaping.redirect {
        rewrite_each(headers, LOCATION, |location| {
            let rewritten = replace_prefix(location, 0, redirect)?;
            if !rewritten.starts_with(b"/") {
                return Some(rewritten);
            }
            // nginx's header filter makes a rewritten path absolute (`absolute_redirect`).
            match shaping.redirect_origin(is_tls, host.unwrap_or("")) {
                Some(origin) => Some([origin.as_bytes(), &rewritten].concat()),
                None => Some(rewritten),
            }
        });
        rewrite_each(headers, REFRESH, |refresh| {
            let url = find_ignore_case(refresh, b"url=")? + 4;
            replace_prefix(refresh, url, redirect)
        });
    }
    if shaping.cookie_domain.is_some() || shaping.cookie_path.is_some() {
        rewrite_each(headers, SET_COOKIE, |cookie| rewrite_cookie(cookie, shaping));
    }
}

/// Replaces each value of `name` that `rewrite` changes.
fn rewrite_each(headers: &mut HeaderMap, name: HeaderName, rewrite: impl Fn(&[u8]) -> Option<Vec<u8>>) {
    let Entry::Occupied(mut entry) = headers.entry(name) else { return };
    for value in entry.iter_mut() {
        // What was a valid value, with valid text put in, stays valid; if not, it is kept.
        if let Some(new) = rewrite(value.as_bytes())
            && let Ok(new) = HeaderValue::from_bytes(&new)
        {
            *value = new;
        }
    }
}

/// nginx's `proxy_redirect <from> <to>`: `from` at `start` of `value`, compared exactly, becomes
/// `to`.
fn replace_prefix(value: &[u8], start: usize, rewrite: &TextRewrite) -> Option<Vec<u8>> {
    let rest = value[start..].strip_prefix(rewrite.from.as_bytes())?;
    Some([&value[..start], rewrite.to.as_bytes(), rest].concat())
}

/// Where `needle` (lower case) first occurs in `haystack`, ignoring ASCII case.
fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window.eq_ignore_ascii_case(needle))
}

/// A `Set-Cookie` value with its `Domain` and `Path` rewritten, as nginx's
/// `ngx_http_proxy_rewrite_cookie`: the value is split at `;` into attributes (spaces around
/// names and values trimmed); a cookie without `=` in its first part is left alone; `Domain`
/// (a leading `.` kept) is replaced when it equals `cookie_domain.from` ignoring case, `Path`
/// when it starts with `cookie_path.from`. When anything changed, the attributes are joined
/// again with `; `.
fn rewrite_cookie(cookie: &[u8], shaping: &Shaping) -> Option<Vec<u8>> {
    let mut attributes: Vec<(&[u8], Option<&[u8]>)> = cookie.split(|&b| b == b';').map(attribute).collect();
    attributes.first()?.1?;
    let mut rewritten: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, (name, value)) in attributes.iter().enumerate().skip(1) {
        let Some(value) = value else { continue };
        if let Some(domain) = &shaping.cookie_domain
            && name.eq_ignore_ascii_case(b"domain")
        {
            let dot = usize::from(value.first() == Some(&b'.'));
            if value[dot..].eq_ignore_ascii_case(domain.from.as_bytes()) {
                rewritten.push((i, [&value[..dot], domain.to.as_bytes()].concat()));
            }
        }
        if let Some(path) = &shaping.cookie_path
            && name.eq_ignore_ascii_case(b"path")
            && let Some(new) = replace_prefix(value, 0, path)
        {
            rewritten.push((i, new));
        }
    }
    if rewritten.is_empty() {
        return None;
    }
    for (i, value) in &rewritten {
        attributes[*i].1 = Some(value);
    }
    let mut out = Vec::with_capacity(cookie.len() + 16);
    for (i, (name, value)) in attributes.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(name);
        if let Some(value) = value {
            out.push(b'=');
            out.extend_from_slice(value);
        }
    }
    Some(out)
}

/// `name[=value]` of one cookie attribute, spaces around both trimmed (nginx trims spaces, not
/// tabs).
fn attribute(text: &[u8]) -> (&[u8], Option<&[u8]>) {
    match text.iter().position(|&b| b == b'=') {
        Some(eq) => (trim_spaces(&text[..eq]), Some(trim_spaces(&text[eq + 1..]))),
        None => (trim_spaces(text), None),
    }
}

fn trim_spaces(mut text: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = text {
        text = rest;
    }
    while let [rest @ .., b' '] = text {
        text = rest;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(from: &str, to: &str) -> Option<TextRewrite> {
        Some(TextRewrite { from: from.into(), to: to.into() })
    }

    fn shaped(shaping: &Shaping, pairs: &[(&str, &str)], is_tls: bool) -> HeaderMap {
        let mut headers: HeaderMap = pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect();
        shape(&mut headers, shaping, is_tls, Some("Shop.example.com:8443"));
        headers
    }

    fn all<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn location_and_refresh_prefixes_are_rewritten_case_sensitively() {
        let shaping = Shaping {
            redirect: rewrite("http://backend:8080/", "https://shop.example.com/app/"),
            ..Shaping::default()
        };
        let h = shaped(
            &shaping,
            &[
                ("location", "http://backend:8080/login?next=/"),
                ("refresh", "5; URL=http://backend:8080/done"),
                ("x-other", "http://backend:8080/"),
            ],
            false,
        );
        assert_eq!(h["location"], "https://shop.example.com/app/login?next=/");
        assert_eq!(h["refresh"], "5; URL=https://shop.example.com/app/done");
        assert_eq!(h["x-other"], "http://backend:8080/");
        let h = shaped(&shaping, &[("location", "HTTP://BACKEND:8080/x"), ("refresh", "5")], false);
        assert_eq!(h["location"], "HTTP://BACKEND:8080/x");
        assert_eq!(h["refresh"], "5");
    }

    /// nginx's ngx_http_header_filter: a rewritten `Location` starting with `/` gets the scheme
    /// and host, and the port with `port_in_redirect`; one nothing rewrote stays relative.
    #[test]
    fn a_location_rewritten_to_a_path_is_made_absolute_unless_relative() {
        let mut shaping = Shaping { redirect: rewrite("http://backend/", "/"), ..Shaping::default() };
        let pairs = [("location", "http://backend/a"), ("location", "/untouched")];
        assert_eq!(
            all(&shaped(&shaping, &pairs, true), "location"),
            ["https://shop.example.com/a", "/untouched"]
        );
        shaping.port_in_redirects = true;
        assert_eq!(all(&shaped(&shaping, &pairs, true), "location")[0], "https://shop.example.com:8443/a");
        shaping.relative_redirects = true;
        assert_eq!(all(&shaped(&shaping, &pairs, true), "location")[0], "/a");
    }

    #[test]
    fn every_set_cookie_gets_its_domain_and_path_rewritten() {
        let shaping = Shaping {
            cookie_domain: rewrite("localhost", "example.org"),
            cookie_path: rewrite("/one/", "/"),
            ..Shaping::default()
        };
        let h = shaped(
            &shaping,
            &[
                ("set-cookie", "a=1; Domain=.LocalHost;Path=/one/two ; HttpOnly"),
                ("set-cookie", "b=2; domain=localhost.net; path=/other"),
                ("set-cookie", "c=3;path=/one/"),
                ("set-cookie", "flag; Path=/one/"),
            ],
            false,
        );
        assert_eq!(
            all(&h, "set-cookie"),
            [
                "a=1; Domain=.example.org; Path=/two; HttpOnly",
                "b=2; domain=localhost.net; path=/other",
                "c=3; path=/",
                "flag; Path=/one/",
            ]
        );
    }

    #[test]
    fn nothing_to_do_without_rewrites() {
        let h = shaped(&Shaping::default(), &[("location", "/x"), ("set-cookie", "a=1;Path=/")], false);
        assert_eq!(h["location"], "/x");
        assert_eq!(h["set-cookie"], "a=1;Path=/");
    }
}
