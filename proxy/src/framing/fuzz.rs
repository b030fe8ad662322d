//! Fuzzing of the framing guard: well-formed HTTP/1 request streams (heads with headers in any
//! order and letter case, `Content-Length` and/or chunked bodies with extensions and trailers,
//! bodies that look like request heads) cut at random points. Whatever the cuts, the guard must
//! report an ambiguous length exactly when a head carried both `Content-Length` and
//! `Transfer-Encoding`, and must not be left mid-head at the end of the stream.
//!
//! `OSTIUM_FUZZ_SECONDS=600 cargo test --release -p ostium-proxy fuzz -- --nocapture` runs it for
//! ten minutes (see docs/fuzzing.md).

use std::fmt;

use ostium_test_support::fuzz;
use proptest::prelude::*;
use proptest::sample::select;

use super::*;

/// Bytes bodies are made of: some look like the framing the guard follows.
const BODY_PIECES: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b"POST / HTTP/1.1\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"x",
    b":",
];

const FILLER_HEADERS: &[(&str, &str)] = &[
    ("Host", "example.com"),
    ("Accept", "*/*"),
    ("Connection", "keep-alive"),
    ("Connection", "upgrade"),
    ("Upgrade", "websocket"),
    ("Expect", "100-continue"),
    ("Content-Type", "text/plain"),
    ("X-Content-Length", "12"),
    ("Content-Lengths", "7"),
    ("X-Transfer-Encoding", "chunked"),
    ("Transfer-Encodings", "gzip"),
    ("X-Empty", ""),
];

#[derive(Clone, Debug)]
enum Framing {
    None,
    /// `Content-Length`, sent this many times (same value), and the body.
    Length(u8, Vec<u8>),
    Chunked(Chunked),
    /// Both headers; the body follows the chunked framing, as hyper reads it.
    Both(Chunked),
}

#[derive(Clone, Debug)]
struct Chunked {
    chunks: Vec<(Vec<u8>, Spelling, &'static str)>,
    last_extension: &'static str,
    trailers: Vec<(&'static str, &'static str)>,
}

/// How a chunk size is written: upper-case hex, and leading zeros.
#[derive(Clone, Copy, Debug)]
struct Spelling {
    upper: bool,
    zeros: u8,
}

#[derive(Clone, Debug)]
struct Request {
    blank_lines: u8,
    method: &'static str,
    target: &'static str,
    fillers: Vec<(&'static str, &'static str)>,
    framing: Framing,
    /// Where the framing headers go among the others.
    framing_at: usize,
    /// Letter case of header names, a bit a letter.
    case_bits: u64,
    /// Whitespace around header values.
    padding: &'static str,
    lf_only: bool,
}

impl Request {
    fn is_ambiguous(&self) -> bool {
        matches!(self.framing, Framing::Both(_))
    }
}

/// Bytes shown as an escaped string.
struct Shown<'a>(&'a [u8]);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// A stream of requests and the points it is cut at.
#[derive(Clone)]
struct Case {
    requests: Vec<Request>,
    cuts: Vec<usize>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = stream(&self.requests);
        f.debug_struct("Case")
            .field("stream", &Shown(&stream))
            .field("cuts", &cut_points(&self.cuts, stream.len()))
            .field("requests", &self.requests)
            .finish()
    }
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        2 => select(BODY_PIECES).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

fn chunked() -> impl Strategy<Value = Chunked> {
    let extension = select(&["", ";a=b", ";name=\"q;x\"", " ;ext", ";x;y=1"][..]);
    let spelling = (any::<bool>(), 0..3u8).prop_map(|(upper, zeros)| Spelling { upper, zeros });
    let chunk = (body().prop_filter("a chunk is not empty", |b| !b.is_empty()), spelling, extension.clone());
    let trailer =
        select(&[("X-Trailer", "1"), ("Content-Length", "5"), ("Transfer-Encoding", "chunked")][..]);
    (prop::collection::vec(chunk, 0..4), extension, prop::collection::vec(trailer, 0..3))
        .prop_map(|(chunks, last_extension, trailers)| Chunked { chunks, last_extension, trailers })
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        2 => Just(Framing::None),
        3 => (1..3u8, body()).prop_map(|(times, body)| Framing::Length(times, body)),
        3 => chunked().prop_map(Framing::Chunked),
        1 => chunked().prop_map(Framing::Both),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        (0..3u8, select(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"][..])),
        select(&["/", "/a?b=c", "*", "http://example.com/x", "/%2e%2e/x"][..]),
        prop::collection::vec(select(FILLER_HEADERS), 0..5),
        framing(),
        any::<usize>(),
        any::<u64>(),
        select(&["", " ", "\t", "  "][..]),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |((blank_lines, method), target, fillers, framing, framing_at, case_bits, padding, lf_only)| {
                Request {
                    blank_lines,
                    method,
                    target,
                    fillers,
                    framing,
                    framing_at,
                    case_bits,
                    padding,
                    lf_only,
                }
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (prop::collection::vec(request(), 1..6), prop::collection::vec(any::<usize>(), 0..8))
        .prop_map(|(requests, cuts)| Case { requests, cuts })
}

fn spell_case(name: &str, bits: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| if bits >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect()
}

fn write_chunked(out: &mut Vec<u8>, chunked: &Chunked) {
    for (data, spelling, extension) in &chunked.chunks {
        let zeros = "0".repeat(usize::from(spelling.zeros));
        let size = if spelling.upper { format!("{:X}", data.len()) } else { format!("{:x}", data.len()) };
        out.extend_from_slice(format!("{zeros}{size}{extension}\r\n").as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("0{}\r\n", chunked.last_extension).as_bytes());
    for (name, value) in &chunked.trailers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn write_request(out: &mut Vec<u8>, request: &Request) {
    let eol = if request.lf_only { "\n" } else { "\r\n" };
    for _ in 0..request.blank_lines {
        out.extend_from_slice(eol.as_bytes());
    }
    out.extend_from_slice(format!("{} {} HTTP/1.1{eol}", request.method, request.target).as_bytes());

    let mut framing_headers: Vec<(&str, String)> = Vec::new();
    match &request.framing {
        Framing::None => {}
        Framing::Length(times, body) => {
            for _ in 0..*times {
                framing_headers.push(("Content-Length", body.len().to_string()));
            }
        }
        Framing::Chunked(_) => framing_headers.push(("Transfer-Encoding", "chunked".into())),
        Framing::Both(chunked) => {
            let mut body = Vec::new();
            write_chunked(&mut body, chunked);
            framing_headers.push(("Content-Length", body.len().to_string()));
            framing_headers.push(("Transfer-Encoding", "chunked".into()));
        }
    }
    let mut headers: Vec<(&str, String)> =
        request.fillers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
    let at = request.framing_at % (headers.len() + 1);
    headers.splice(at..at, framing_headers);
    for (i, (name, value)) in headers.iter().enumerate() {
        let name = spell_case(name, request.case_bits.rotate_left(i as u32 * 7));
        let padding = request.padding;
        out.extend_from_slice(format!("{name}:{padding}{value}{padding}{eol}").as_bytes());
    }
    out.extend_from_slice(eol.as_bytes());

    match &request.framing {
        Framing::None => {}
        Framing::Length(_, body) => out.extend_from_slice(body),
        Framing::Chunked(chunked) | Framing::Both(chunked) => write_chunked(out, chunked),
    }
}

fn stream(requests: &[Request]) -> Vec<u8> {
    let mut out = Vec::new();
    for request in requests {
        write_request(&mut out, request);
    }
    out
}

/// The cut positions, in order, within a stream of `len` bytes.
fn cut_points(cuts: &[usize], len: usize) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    points.sort_unstable();
    points
}

/// Feeds the stream in pieces; the fault found and whether a head is still being read.
fn feed(stream: &[u8], points: &[usize]) -> (Option<Fault>, bool) {
    let (mut guard, flags) = FramingGuard::new(());
    let mut start = 0;
    for &point in points.iter().chain([&stream.len()]) {
        guard.tracker.feed(&stream[start..point]);
        start = point;
    }
    (flags.fault(), flags.head_started().is_some())
}

#[test]
fn fuzz_framing() {
    fuzz::run("fuzz_framing", 1000, case(), |case| {
        let stream = stream(&case.requests);
        let expected = case.requests.iter().any(Request::is_ambiguous).then_some(Fault::AmbiguousLength);
        let cuts = cut_points(&case.cuts, stream.len());
        let splits =
            [("the given cuts", cuts), ("no cut", Vec::new()), ("every byte", (1..stream.len()).collect())];
        for (how, points) in &splits {
            let (fault, mid_head) = feed(&stream, points);
            prop_assert_eq!(fault, expected, "fed with {}", how);
            prop_assert!(!mid_head, "a head is still being read at the end of the stream (fed with {how})");
        }
        Ok(())
    });
}
