//! Request smuggling guard for HTTP/1 connections.
//!
//! hyper frames a request that carries both `Content-Length` and `Transfer-Encoding` by
//! `Transfer-Encoding` alone and closes the connection afterwards (RFC 9112 §6.1), but it drops
//! `Content-Length` before the request reaches us, so we could not refuse it. This wrapper reads
//! along with hyper: it follows request heads and body framing (`Content-Length` bytes, chunked
//! chunks and trailers) and records a [`Fault`] when a head carries both headers (400), or a
//! `Transfer-Encoding` other than exactly `chunked` (501, as nginx). The request handler refuses
//! the request while a fault is recorded, and the connection is closed after it.
//!
//! It also tells the connection's clock when a request head is being read (from its first byte
//! to its blank line), so that a slow head is timed by `client_header_timeout` and an idle
//! connection by the keep-alive timeout.
//!
//! Tracking continues after a request that asked for a protocol upgrade: if the upgrade is
//! refused, the next request on the connection is judged like any other; if it is accepted,
//! the connection is a tunnel and no request head is read from it again, so whatever the
//! tracker makes of the tunnelled bytes is never consulted. Tracking stops only at an HTTP/2
//! preface or a head line too long to be valid (hyper refuses those itself). On a connection
//! that must speak HTTP/1.1 only (TLS without ALPN `h2`), an HTTP/2 preface is a read error, so
//! the connection closes before anything detects HTTP/2 in it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

/// Longest head line tracked; hyper refuses longer heads anyway.
const MAX_LINE: usize = 64 * 1024;

/// Wraps a connection's byte stream and flags ambiguous request framing.
#[derive(Debug)]
pub(crate) struct FramingGuard<S> {
    inner: S,
    tracker: Tracker,
}

/// What a request head did wrong; the connection does not outlive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `Content-Length` and `Transfer-Encoding` together, or `Transfer-Encoding` twice.
    AmbiguousLength,
    /// A `Transfer-Encoding` other than exactly `chunked`.
    UnsupportedTransferEncoding,
}

/// Shared with the request handler and the connection's clock.
#[derive(Clone, Debug)]
pub(crate) struct FramingFlags(Arc<Flags>);

#[derive(Debug)]
struct Flags {
    epoch: Instant,
    /// 0, or 1 + the `Fault` discriminant.
    fault: AtomicU8,
    /// 0 while no head is being read, else 1 + milliseconds since `epoch` at its first byte.
    head_started: AtomicU64,
}

#[derive(Debug)]
struct Tracker {
    refuse_http2: bool,
    state: State,
    line: Vec<u8>,
    head: Head,
    flags: FramingFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading head lines; `first` until the request line is seen.
    Head {
        first: bool,
    },
    /// Skipping this many body bytes.
    Body(u64),
    ChunkSize,
    /// Skipping this many chunk bytes, then the CRLF after them.
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    /// No longer following the stream.
    Stopped,
    /// An HTTP/2 preface where only HTTP/1.1 may be spoken.
    RefusedHttp2,
}

#[derive(Debug, Default)]
struct Head {
    content_length: Option<u64>,
    /// The `Transfer-Encoding` values seen, if any.
    transfer_encodings: u8,
    /// The last `Transfer-Encoding` value is exactly `chunked`.
    chunked: bool,
    /// hyper frames the body as chunked (`chunked` is the last coding).
    ends_chunked: bool,
}

impl<S> FramingGuard<S> {
    /// A guard for a connection that speaks HTTP/1.1 only: an HTTP/2 preface is a read error.
    pub(crate) fn http1_only(inner: S) -> (Self, FramingFlags) {
        let (mut guard, flags) = Self::new(inner);
        guard.tracker.refuse_http2 = true;
        (guard, flags)
    }

    pub(crate) fn new(inner: S) -> (Self, FramingFlags) {
        let flags = FramingFlags(Arc::new(Flags {
            epoch: Instant::now(),
            fault: AtomicU8::new(0),
            head_started: AtomicU64::new(0),
        }));
        let tracker = Tracker {
            refuse_http2: false,
            state: State::Head { first: true },
            line: Vec::new(),
            head: Head::default(),
            flags: flags.clone(),
        };
        (Self { inner, tracker }, flags)
    }
}

impl FramingFlags {
    pub(crate) fn fault(&self) -> Option<Fault> {
        match self.0.fault.load(Ordering::Relaxed) {
            0 => None,
            1 => Some(Fault::AmbiguousLength),
            _ => Some(Fault::UnsupportedTransferEncoding),
        }
    }

    /// When the request head being read began to arrive, if one is being read.
    pub(crate) fn head_started(&self) -> Option<Instant> {
        match self.0.head_started.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.0.epoch + std::time::Duration::from_millis(ms - 1)),
        }
    }

    fn raise(&self, fault: Fault) {
        let _ = self.0.fault.compare_exchange(0, 1 + fault as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn set_head_started(&self, reading: bool) {
        let value = if reading { 1 + self.0.epoch.elapsed().as_millis() as u64 } else { 0 };
        self.0.head_started.store(value, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let this = &mut *self;
            this.tracker.feed(&buf.filled()[before..]);
            if this.tracker.state == State::RefusedHttp2 {
                let refused =
                    io::Error::new(io::ErrorKind::InvalidData, "HTTP/2 preface on an HTTP/1.1 connection");
                return Poll::Ready(Err(refused));
            }
        }
        result
    }
}

write_through_to_inner!(FramingGuard);

impl Tracker {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Stopped | State::RefusedHttp2 => return,
                State::Body(remaining) | State::ChunkData(remaining) => {
                    let take = remaining.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    let left = remaining - take;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head { first: true },
                        (State::Body(_), n) => State::Body(n),
                        (_, 0) => State::ChunkDataEnd,
                        (_, n) => State::ChunkData(n),
                    };
                }
                _ => {
                    if self.state == (State::Head { first: true }) && self.line.is_empty() {
                        self.flags.set_head_started(true);
                    }
                    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                        self.push_line(bytes);
                        return;
                    };
                    self.push_line(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.on_line(line.strip_suffix(b"\r").unwrap_or(&line));
                    self.line = line;
                    self.line.clear();
                }
            }
        }
    }

    fn push_line(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > MAX_LINE {
            self.state = State::Stopped;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn on_line(&mut self, line: &[u8]) {
        self.state = match self.state {
            // Empty lines before a request line are tolerated (RFC 9112 §2.2).
            State::Head { first: true } if line.is_empty() => {
                self.flags.set_head_started(false);
                State::Head { first: true }
            }
            State::Head { first: true } if line.starts_with(b"PRI * HTTP/2.0") => {
                self.flags.set_head_started(false);
                if self.refuse_http2 { State::RefusedHttp2 } else { State::Stopped }
            }
            State::Head { first: true } => {
                self.head = Head::default();
                State::Head { first: false }
            }
            State::Head { first: false } if line.is_empty() => self.end_of_head(),
            State::Head { first: false } => {
                self.header(line);
                State::Head { first: false }
            }
            State::ChunkSize => {
                let size = line.split(|&b| b == b';').next().unwrap_or_default();
                match std::str::from_utf8(size).ok().and_then(|s| u64::from_str_radix(s.trim(), 16).ok()) {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Stopped, // malformed: hyper refuses it
                }
            }
            State::ChunkDataEnd => State::ChunkSize,
            State::Trailers if line.is_empty() => State::Head { first: true },
            State::Trailers => State::Trailers,
            other => other,
        };
    }

    fn header(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|&b| b == b':') else { return };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            self.head.content_length =
                std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).or(Some(0));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.transfer_encodings = self.head.transfer_encodings.saturating_add(1);
            self.head.chunked = value.eq_ignore_ascii_case(b"chunked");
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
            self.head.ends_chunked = last.eq_ignore_ascii_case(b"chunked");
        }
    }

    fn end_of_head(&mut self) -> State {
        self.flags.set_head_started(false);
        let head = &self.head;
        if head.transfer_encodings > 0 && head.content_length.is_some() || head.transfer_encodings > 1 {
            self.flags.raise(Fault::AmbiguousLength);
            return State::Stopped; // the connection is closed after this request
        }
        if head.transfer_encodings == 1 && !head.chunked {
            self.flags.raise(Fault::UnsupportedTransferEncoding);
            return State::Stopped;
        }
        match (self.head.ends_chunked, self.head.content_length) {
            (true, _) => State::ChunkSize,
            (false, Some(0) | None) => State::Head { first: true },
            (false, Some(n)) => State::Body(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(chunks: &[&[u8]]) -> Option<Fault> {
        let (mut guard, flags) = FramingGuard::new(());
        for chunk in chunks {
            guard.tracker.feed(chunk);
        }
        flags.fault()
    }

    fn flagged(chunks: &[&[u8]]) -> bool {
        fault(chunks) == Some(Fault::AmbiguousLength)
    }

    #[test]
    fn both_lengths_in_one_head_are_flagged_in_any_order() {
        assert!(flagged(&[
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(flagged(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n"]));
    }

    #[test]
    fn ordinary_keep_alive_traffic_is_not_flagged() {
        assert!(!flagged(&[
            b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 45\r\n\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 1\r\n", // 45 body bytes, not headers
            b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"1d\r\nContent-Length: 1\r\nX: y\r\n\r\n\r\n0\r\n\r\n",
        ]));
    }

    #[test]
    fn an_ambiguous_request_after_bodies_is_still_found() {
        let chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let sized = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz";
        let ambiguous = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let all = [&chunked[..], sized, ambiguous].concat();
        for split in 0..all.len() {
            assert!(flagged(&[&all[..split], &all[split..]]), "split at {split}");
        }
    }

    #[test]
    fn http2_preface_stops_tracking() {
        assert!(!flagged(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }

    #[test]
    fn tracking_goes_on_after_a_request_that_asked_for_an_upgrade() {
        assert!(flagged(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]));
    }

    #[test]
    fn transfer_encodings_other_than_chunked_are_unsupported() {
        for te in ["gzip", "gzip, chunked", "chunked, chunked", "identity", "xchunked"] {
            let head = format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(fault(&[head.as_bytes()]), Some(Fault::UnsupportedTransferEncoding), "{te}");
        }
        assert_eq!(fault(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"]), None);
        let twice = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(fault(&[twice]), Some(Fault::AmbiguousLength));
    }

    #[test]
    fn a_head_is_timed_from_its_first_byte_to_its_blank_line() {
        let (mut guard, flags) = FramingGuard::new(());
        assert!(flags.head_started().is_none());
        guard.tracker.feed(b"GE");
        assert!(flags.head_started().is_some());
        guard.tracker.feed(b"T / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(flags.head_started().is_none(), "complete");
        guard.tracker.feed(b"\r\n");
        assert!(flags.head_started().is_none(), "blank lines between requests are not a head");
    }
}
#[cfg(test)]
mod fuzz;
