//! Response compression (`use-gzip`, `enable-brotli`), as nginx's gzip filter and ngx_brotli's
//! filter decide it with ingress-nginx's template (`gzip_proxied any`, `gzip_vary on`,
//! `gzip_http_version 1.1`):
//!
//! - only 200, 403 and 404 answers with a body (not to HEAD), without a `Content-Encoding`,
//!   of a listed media type, and not known to be shorter than the minimum length;
//! - brotli first (its filter runs before gzip's) when the client accepts `br`, else gzip when
//!   it accepts `gzip`, speaks HTTP/1.1 or later and is not excluded by `gzip-disable`; an
//!   `Accept-Encoding` coding counts unless its q-value is 0;
//! - a compressed answer loses `Content-Length` and `Accept-Ranges`, and a strong `ETag`
//!   becomes weak; every answer that could have been compressed gets `Vary: Accept-Encoding`.
//!
//! Beyond nginx, `Cache-Control: no-transform` answers and gRPC answers are never compressed.
//! The body is compressed as it streams: output is sent every [`FLUSH_AT`] bytes, and flushed
//! whenever the endpoint pauses, so that a streamed answer keeps streaming.

use std::io::Write;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    USER_AGENT, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Version};
use http_body::{Body, Frame};
use ostium_model::GlobalSettings;

use crate::ProxyBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Compressed output this long is sent without waiting for more.
const FLUSH_AT: usize = 16 * 1024;

/// ngx_brotli's default `brotli_window` (512 KiB), as log2.
const BROTLI_WINDOW_BITS: u32 = 19;
const BROTLI_MIN_WINDOW_BITS: u32 = 10;

/// What a request's client may get, taken when its table compresses anything.
#[derive(Debug)]
pub(crate) struct Negotiation {
    settings: Arc<GlobalSettings>,
    gzip: bool,
    brotli: bool,
}

impl Negotiation {
    /// `None` when the table compresses nothing: then nothing more is done for the request.
    pub(crate) fn new(global: &Arc<GlobalSettings>, version: Version, headers: &HeaderMap) -> Option<Self> {
        let compression = &global.compression;
        if !compression.is_enabled() {
            return None;
        }
        // nginx reads the first Accept-Encoding header only.
        let accept = headers.get(ACCEPT_ENCODING).map(HeaderValue::as_bytes).unwrap_or_default();
        let gzip = compression.gzip.enabled
            && version >= Version::HTTP_11
            && accepts_gzip(accept)
            && compression.gzip_allowed_for(headers.get(USER_AGENT).map(HeaderValue::as_bytes));
        let brotli = compression.brotli.enabled && accepts_brotli(accept);
        Some(Self { settings: global.clone(), gzip, brotli })
    }

    /// The response as nginx's filters leave it: compressed, or as it was (with `Vary` when
    /// it could have been compressed for another client).
    pub(crate) fn apply(self, mut response: Response<ProxyBody>) -> Response<ProxyBody> {
        if !matches!(response.status(), StatusCode::OK | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
            return response;
        }
        let compression = &self.settings.compression;
        let length = response.body().size_hint().exact();
        let headers = response.headers_mut();
        if headers.get(CONTENT_ENCODING).is_some_and(|coding| !coding.is_empty())
            || forbids_transform(headers)
        {
            return response;
        }
        let content_type = headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
        if content_type.starts_with(b"application/grpc") {
            return response;
        }
        let brotli = compression.brotli.applies_to(content_type, length);
        let gzip = compression.gzip.applies_to(content_type, length);
        if !brotli && !gzip {
            return response;
        }
        add_vary(headers);
        let (coding, codec) = if brotli && self.brotli {
            ("br", Codec::brotli(compression.brotli.level, length))
        } else if gzip && self.gzip {
            ("gzip", Codec::gzip(compression.gzip.level))
        } else {
            return response;
        };
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
        headers.remove(CONTENT_LENGTH);
        headers.remove(ACCEPT_RANGES);
        weaken_etag(headers);
        response.map(|body| body.encoded(Encoder::new(codec)))
    }
}

/// Whether an `Accept-Encoding` value accepts gzip, as nginx's `ngx_http_gzip_ok` reads it:
/// `gzip` (any case) after the start, `,` or a space, then optional parameters whose `q` must
/// be 0.001 to 1 (`ngx_http_gzip_quantity`: anything malformed counts as 0). `*` does not name it.
fn accepts_gzip(accept: &[u8]) -> bool {
    if accept.starts_with(b"gzip,") {
        return true;
    }
    let mut from = 0;
    let rest = loop {
        let Some(at) = find_ignore_case(&accept[from..], b"gzip").map(|at| from + at) else { return false };
        if at == 0 || matches!(accept[at - 1], b',' | b' ') {
            break &accept[at + 4..];
        }
        from = at + 4;
    };
    let mut rest = rest.iter();
    loop {
        match rest.next() {
            None | Some(b',') => return true,
            Some(b';') => break,
            Some(b' ') => {}
            Some(_) => return false,
        }
    }
    loop {
        match rest.next() {
            None => return true,
            Some(b'q' | b'Q') => break,
            Some(b' ') => {}
            Some(_) => return false,
        }
    }
    match rest.as_slice() {
        [b'=', value @ ..] if !value.is_empty() => gzip_quantity(value) > 0,
        _ => false,
    }
}

/// nginx's `ngx_http_gzip_quantity`: a q-value in thousandths' digits summed (only 0 matters),
/// 0 for anything malformed or above 1.
fn gzip_quantity(value: &[u8]) -> u32 {
    let mut bytes = value.iter();
    let whole = match bytes.next() {
        Some(b'0') => 0,
        Some(b'1') => 100,
        _ => return 0,
    };
    match bytes.next() {
        None | Some(b',' | b' ') => return whole,
        Some(b'.') => {}
        Some(_) => return 0,
    }
    let (mut q, mut digits) = (whole, 0);
    for &c in bytes {
        match c {
            b',' | b' ' => break,
            b'0'..=b'9' => {
                q += u32::from(c - b'0');
                digits += 1;
            }
            _ => return 0,
        }
    }
    if q > 100 || digits > 3 { 0 } else { q }
}

/// Whether an `Accept-Encoding` value accepts brotli, as ngx_brotli's `check_accept_encoding`
/// reads it: `br` (any case) between the start, `,` or a space and the end, `,`, a space or
/// `;`, unless a `;q=0` (`0.`, `0.0` … `0.000`) follows.
fn accepts_brotli(accept: &[u8]) -> bool {
    let mut from = 0;
    loop {
        let Some(at) = find_ignore_case(&accept[from..], b"br").map(|at| from + at) else { return false };
        from = at + 2;
        let before = at.checked_sub(1).map_or(b' ', |i| accept[i]);
        let after = accept.get(from).copied().unwrap_or(b' ');
        if matches!(before, b',' | b' ') && matches!(after, b',' | b' ' | b';') {
            return !brotli_zero_quality(&accept[from..]);
        }
    }
}

fn brotli_zero_quality(mut rest: &[u8]) -> bool {
    for expected in [b';', b'q', b'=', b'0'] {
        while let [b' ', tail @ ..] = rest {
            rest = tail;
        }
        match rest.split_first() {
            Some((&c, tail)) if c == expected => rest = tail,
            _ => return false,
        }
    }
    let [b'.', decimals @ ..] = rest else { return true };
    for i in 0..3 {
        match decimals.get(i) {
            Some(b'0') => {}
            Some(b'1'..=b'9') => return false,
            _ => return true,
        }
    }
    true
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window.eq_ignore_ascii_case(needle))
}

/// `Cache-Control: no-transform` (RFC 9111 §5.2.2.6): a proxy must not change the content.
fn forbids_transform(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    })
}

/// `Vary: Accept-Encoding`, merged into the `Vary` the response has.
fn add_vary(headers: &mut HeaderMap) {
    let mut values = headers.get_all(VARY).iter().peekable();
    if values.peek().is_none() {
        headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        return;
    }
    let mut merged = Vec::new();
    for value in values {
        for field in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if field == b"*" || field.eq_ignore_ascii_case(b"accept-encoding") {
                return; // already varies on it
            }
            if !field.is_empty() {
                merged.extend_from_slice(field);
                merged.extend_from_slice(b", ");
            }
        }
    }
    merged.extend_from_slice(b"Accept-Encoding");
    if let Ok(merged) = HeaderValue::from_bytes(&merged) {
        headers.insert(VARY, merged);
    }
}

/// nginx's `ngx_http_weak_etag`: a strong `ETag` becomes weak, a malformed one is removed.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(ETAG) else { return };
    let etag = etag.as_bytes();
    if etag.len() > 2 && etag.starts_with(b"W/") {
        return;
    }
    match HeaderValue::from_bytes(&[b"W/", etag].concat()) {
        Ok(weak) if etag.starts_with(b"\"") => {
            headers.insert(ETAG, weak);
        }
        _ => {
            headers.remove(ETAG);
        }
    }
}

/// A response body's compressor, between the endpoint's body and the client.
#[derive(Debug)]
pub(crate) struct Encoder {
    /// `None` once the body has ended.
    codec: Option<Codec>,
    /// Input was written since the last flush.
    unflushed: bool,
    /// Trailers of the endpoint's body, sent after the compressed data.
    trailers: Option<HeaderMap>,
}

enum Codec {
    Gzip(Box<GzEncoder<Vec<u8>>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Codec {
    fn gzip(level: u32) -> Self {
        Self::Gzip(Box::new(GzEncoder::new(Vec::new(), flate2::Compression::new(level))))
    }

    /// ngx_brotli's window: its default, or less for a body known to be shorter.
    fn brotli(quality: u32, length: Option<u64>) -> Self {
        let mut window_bits = BROTLI_WINDOW_BITS;
        if let Some(length) = length.filter(|&length| length > 0) {
            window_bits = BROTLI_MIN_WINDOW_BITS;
            while window_bits < BROTLI_WINDOW_BITS && length > 1 << window_bits {
                window_bits += 1;
            }
        }
        Self::Brotli(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, quality, window_bits)))
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Gzip(gzip) => gzip.write_all(data),
            Self::Brotli(brotli) => brotli.write_all(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Gzip(gzip) => gzip.flush(),
            Self::Brotli(brotli) => brotli.flush(),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Self::Gzip(gzip) => gzip.get_mut(),
            Self::Brotli(brotli) => brotli.get_mut(),
        }
    }

    /// The rest of the output, the coding's end included.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Gzip(gzip) => gzip.finish(),
            Self::Brotli(brotli) => Ok(brotli.into_inner()),
        }
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Gzip(_) => "Gzip",
            Self::Brotli(_) => "Brotli",
        })
    }
}

impl Encoder {
    fn new(codec: Codec) -> Self {
        Self { codec: Some(codec), unflushed: false, trailers: None }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.codec.is_none() && self.trailers.is_none()
    }

    /// The next frame of compressed body, reading `source` (the endpoint's body) as needed.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        mut source: impl FnMut(&mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let Some(codec) = &mut self.codec else {
                return Poll::Ready(self.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))));
            };
            match source(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        codec.write(&data)?;
                        self.unflushed = true;
                        if codec.output().len() >= FLUSH_AT {
                            return self.ready(|codec| Ok(std::mem::take(codec.output())));
                        }
                    }
                    Err(frame) => {
                        self.trailers = frame.into_trailers().ok();
                        return self.end();
                    }
                },
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => return self.end(),
                // The endpoint paused: what it sent so far goes to the client now.
                Poll::Pending if self.unflushed => {
                    self.unflushed = false;
                    return self.ready(|codec| {
                        codec.flush()?;
                        Ok(std::mem::take(codec.output()))
                    });
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(codec) = self.codec.take() else { return Poll::Ready(None) };
        match codec.finish() {
            Ok(rest) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest))))),
            Err(error) => Poll::Ready(Some(Err(error.into()))),
        }
    }

    fn ready(
        &mut self,
        output: impl FnOnce(&mut Codec) -> std::io::Result<Vec<u8>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(codec) = &mut self.codec else { return Poll::Ready(None) };
        Poll::Ready(Some(output(codec).map(|bytes| Frame::data(Bytes::from(bytes))).map_err(Into::into)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_as_nginx_reads_it() {
        for (accept, gzip, br) in [
            ("gzip, deflate, br", true, true),
            ("gzip,deflate", true, false),
            ("GZIP;q=0.5", true, false),
            ("br;q=0, gzip;q=0.001", true, false),
            ("gzip; q=0, br; q=0.000", false, false),
            ("gzip;q=0.", false, false),
            ("gzip;q=1.5, br;q=1.0", false, true),
            ("gzip;level=1, br ; q = 0", false, false),
            ("gzip;q=0.0001", false, false),
            ("x-gzip, brotli", false, false),
            ("*", false, false),
            ("identity;q=0", false, false),
            ("deflate,gzip", true, false),
        ] {
            assert_eq!(accepts_gzip(accept.as_bytes()), gzip, "gzip in {accept:?}");
            assert_eq!(accepts_brotli(accept.as_bytes()), br, "br in {accept:?}");
        }
    }

    #[test]
    fn vary_is_merged_once() {
        let mut headers = HeaderMap::new();
        add_vary(&mut headers);
        assert_eq!(headers[VARY], "Accept-Encoding");
        let mut headers = HeaderMap::new();
        headers.append(VARY, HeaderValue::from_static("Origin"));
        headers.append(VARY, HeaderValue::from_static("Cookie, "));
        add_vary(&mut headers);
        assert_eq!(headers.get_all(VARY).iter().collect::<Vec<_>>(), ["Origin, Cookie, Accept-Encoding"]);
        let mut headers = HeaderMap::new();
        headers.insert(VARY, HeaderValue::from_static("origin, accept-encoding"));
        add_vary(&mut headers);
        assert_eq!(headers[VARY], "origin, accept-encoding");
    }

    #[test]
    fn etags_become_weak_or_go() {
        for (etag, after) in [("\"v1\"", Some("W/\"v1\"")), ("W/\"v1\"", Some("W/\"v1\"")), ("v1", None)] {
            let mut headers = HeaderMap::new();
            headers.insert(ETAG, HeaderValue::from_static(etag));
            weaken_etag(&mut headers);
            assert_eq!(headers.get(ETAG).map(|v| v.to_str().unwrap()), after, "{etag}");
        }
    }

    #[test]
    fn no_transform_is_found_among_directives() {
        let mut headers = HeaderMap::new();
        headers.append(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        assert!(!forbids_transform(&headers));
        headers.append(CACHE_CONTROL, HeaderValue::from_static("private, No-Transform"));
        assert!(forbids_transform(&headers));
    }
}
