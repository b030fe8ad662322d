//! Request smuggling guard for HTTP/1 connections.
//!
//! hyper frames a request that carries both `Content-Length` and `Transfer-Encoding` by
//! `Transfer-Encoding` alone and closes the connection afterwards (RFC 9112 §6.1), but it drops
//! `Content-Length` before the request reaches us, so we could not refuse it. This wrapper reads
//! along with hyper: it follows request heads and body framing (`Content-Length` bytes, chunked
//! chunks and trailers) and raises a flag when a head carries both headers. The request handler
//! answers 400 while the flag is up, and hyper closes the connection after it.
//!
//! Tracking stops (conservatively, leaving hyper's own safe handling) at an HTTP/2 preface, a
//! protocol upgrade, or a head too large to be valid.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest head line tracked; hyper refuses longer heads anyway.
const MAX_LINE: usize = 64 * 1024;

/// Wraps a connection's byte stream and flags ambiguous request framing.
#[derive(Debug)]
pub(crate) struct FramingGuard<S> {
    inner: S,
    tracker: Tracker,
}

/// Shared with the request handler: set once a request with both lengths was read.
pub(crate) type AmbiguityFlag = Arc<AtomicBool>;

#[derive(Debug)]
struct Tracker {
    state: State,
    line: Vec<u8>,
    head: Head,
    flag: AmbiguityFlag,
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
}

#[derive(Debug, Default)]
struct Head {
    content_length: Option<u64>,
    chunked: bool,
    transfer_encoding: bool,
    upgrade: bool,
}

impl<S> FramingGuard<S> {
    pub(crate) fn new(inner: S) -> (Self, AmbiguityFlag) {
        let flag = AmbiguityFlag::default();
        let tracker = Tracker {
            state: State::Head { first: true },
            line: Vec::new(),
            head: Head::default(),
            flag: flag.clone(),
        };
        (Self { inner, tracker }, flag)
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
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Tracker {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Stopped => return,
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
            State::Head { first: true } if line.is_empty() => State::Head { first: true },
            State::Head { first: true } if line.starts_with(b"PRI * HTTP/2.0") => State::Stopped,
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
            self.head.transfer_encoding = true;
            self.head.chunked = value.to_ascii_lowercase().ends_with(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.head.upgrade = true;
        }
    }

    fn end_of_head(&mut self) -> State {
        if self.head.transfer_encoding && self.head.content_length.is_some() {
            self.flag.store(true, Ordering::Relaxed);
            return State::Stopped; // hyper closes the connection after this request
        }
        if self.head.upgrade {
            return State::Stopped; // what follows may be another protocol
        }
        match (self.head.chunked, self.head.content_length) {
            (true, _) => State::ChunkSize,
            (false, Some(0) | None) => State::Head { first: true },
            (false, Some(n)) => State::Body(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged(chunks: &[&[u8]]) -> bool {
        let (mut guard, flag) = FramingGuard::new(());
        for chunk in chunks {
            guard.tracker.feed(chunk);
        }
        flag.load(Ordering::Relaxed)
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
    fn http2_and_upgrades_stop_tracking() {
        assert!(!flagged(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(!flagged(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]));
    }
}
