//! Request bodies read in full before an endpoint is chosen (`proxy-request-buffering: on`, as
//! nginx's `proxy_request_buffering`). The first `client-body-buffer-size` bytes stay in memory
//! and the rest goes to a temporary file, so a request holds little memory however large its
//! upload (the file is bounded by the route's body limit). A buffered body goes upstream with
//! its length, and is sent again, from the start, when a try fails.
//!
//! Temporary files live in a private directory (mode 0700) made when the first is needed and
//! removed with the proxy. They never have a name there for long: they are created unnamed
//! where the system allows it, else unlinked at once, so the disk space returns when the body is
//! dropped, even if the process dies.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::ProxyError;
use crate::body::{BodyClock, client_body_fault};

/// How much of a temporary file one read sends upstream.
const READ_CHUNK: usize = 64 * 1024;

/// Where buffered bodies spill: a private directory under `parent`, made when first needed.
#[derive(Debug)]
pub(crate) struct BodyFiles {
    parent: PathBuf,
    dir: OnceCell<tempfile::TempDir>,
    /// A failure to make the directory was logged (each request that needs it tries again).
    reported: AtomicBool,
}

/// A request body read in full: its first part in memory, the rest in a temporary file.
#[derive(Debug)]
pub(crate) struct BufferedBody {
    memory: Bytes,
    file: Option<Arc<std::fs::File>>,
    file_len: u64,
}

/// A buffered body as one try sends it, from the start.
#[derive(Debug)]
pub(crate) struct Replay {
    memory: Option<Bytes>,
    file: Option<Arc<std::fs::File>>,
    offset: u64,
    end: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    clock: Arc<BodyClock>,
}

/// A temporary file could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("the buffered request body could not be read back")]
pub(crate) struct ReplayError(#[source] io::Error);

// === impl BodyFiles ===

impl BodyFiles {
    pub(crate) fn new(parent: PathBuf) -> Self {
        Self { parent, dir: OnceCell::new(), reported: AtomicBool::new(false) }
    }

    /// A new unnamed file in the private directory (made now if it does not exist yet; a failure
    /// is tried again by the next request).
    async fn create(&self) -> io::Result<tokio::fs::File> {
        let made = self.dir.get_or_try_init(|| {
            let parent = self.parent.clone();
            blocking(move || tempfile::Builder::new().prefix("ostium-request-bodies-").tempdir_in(parent))
        });
        let dir = made.await.inspect_err(|error| {
            if !self.reported.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    parent = %self.parent.display(),
                    %error,
                    "cannot make a directory for request bodies: requests whose body outgrows client-body-buffer-size get 500"
                );
            }
        })?;
        let path = dir.path().to_owned();
        let file = blocking(move || tempfile::tempfile_in(path)).await?;
        Ok(tokio::fs::File::from_std(file))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)?
}

// === impl BufferedBody ===

impl BufferedBody {
    /// Reads `body` to its end: up to `memory_limit` bytes into memory, the rest into a file of
    /// `files`. Trailers are dropped, as nginx drops them. A body the client fails to send gets
    /// its answer (408, 400, 413); a file that cannot be written, 500.
    pub(crate) async fn read<B>(
        mut body: B,
        memory_limit: usize,
        files: &BodyFiles,
    ) -> Result<Self, ProxyError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let expected = body.size_hint().exact().map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let mut memory = BytesMut::with_capacity(expected.min(memory_limit));
        let mut file = None;
        let mut file_len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                let error = error.into();
                client_body_fault(&*error).unwrap_or(ProxyError::BadRequest("request body"))
            })?;
            let Ok(data) = frame.into_data() else { continue };
            let room = if file.is_none() { memory_limit - memory.len() } else { 0 };
            if data.len() <= room {
                memory.extend_from_slice(&data);
                continue;
            }
            memory.extend_from_slice(&data[..room]);
            let spill = match &mut file {
                Some(file) => file,
                None => file.insert(files.create().await.map_err(write_failed)?),
            };
            spill.write_all(&data[room..]).await.map_err(write_failed)?;
            file_len += (data.len() - room) as u64;
        }
        let file = match file {
            Some(mut file) => {
                file.flush().await.map_err(write_failed)?;
                Some(Arc::new(file.into_std().await))
            }
            None => None,
        };
        Ok(Self { memory: memory.freeze(), file, file_len })
    }

    /// The body's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.memory.len() as u64 + self.file_len
    }

    /// The body for one try, reporting to `clock`.
    pub(crate) fn replay(&self, clock: Arc<BodyClock>) -> Replay {
        Replay {
            memory: Some(self.memory.clone()).filter(|m| !m.is_empty()),
            file: self.file.clone(),
            offset: 0,
            end: self.file_len,
            reading: None,
            clock,
        }
    }
}

fn write_failed(error: io::Error) -> ProxyError {
    tracing::debug!(%error, "a request body could not be written to a temporary file");
    ProxyError::BodyBufferFailed
}

// === impl Replay ===

impl Replay {
    fn remaining(&self) -> u64 {
        self.memory.as_ref().map_or(0, |m| m.len() as u64) + (self.end - self.offset)
    }
}

impl Body for Replay {
    type Data = Bytes;
    type Error = ReplayError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReplayError>>> {
        let this = &mut *self;
        if let Some(memory) = this.memory.take() {
            this.clock.sent_part();
            return Poll::Ready(Some(Ok(Frame::data(memory))));
        }
        let Some(file) = this.file.as_ref().filter(|_| this.offset < this.end) else {
            this.clock.sent_all();
            return Poll::Ready(None);
        };
        let reading = this.reading.get_or_insert_with(|| {
            let (file, offset) = (file.clone(), this.offset);
            let len = (this.end - offset).min(READ_CHUNK as u64) as usize;
            tokio::task::spawn_blocking(move || {
                let mut chunk = vec![0; len];
                file.read_exact_at(&mut chunk, offset)?;
                Ok(Bytes::from(chunk))
            })
        });
        let read = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        match read.map_err(io::Error::other).and_then(|read| read) {
            Ok(chunk) => {
                this.offset += chunk.len() as u64;
                this.clock.sent_part();
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Err(error) => Poll::Ready(Some(Err(ReplayError(error)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A body of ready chunks.
    struct Chunks(VecDeque<&'static [u8]>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(Bytes::from_static(chunk)))))
        }
    }

    async fn replayed(body: &BufferedBody) -> Vec<u8> {
        let replay = body.replay(Arc::new(BodyClock::new(true)));
        replay.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_body_spills_past_the_memory_limit_and_replays_whole_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let files = BodyFiles::new(dir.path().to_owned());
        let chunks = Chunks([&b"hello "[..], b"buffered ", b"world"].into());
        let body = BufferedBody::read(chunks, 8, &files).await.unwrap();
        assert_eq!(body.len(), 20);
        assert_eq!(&body.memory[..], b"hello bu", "memory holds the first 8 bytes");
        assert_eq!(body.file_len, 12);
        for _ in 0..2 {
            assert_eq!(replayed(&body).await, b"hello buffered world");
        }
        let private = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        assert_eq!(std::fs::read_dir(&private).unwrap().count(), 0, "the temporary file has no name");
    }

    #[tokio::test]
    async fn a_small_body_stays_in_memory() {
        let files = BodyFiles::new("/nonexistent".into());
        let body = BufferedBody::read(Chunks([&b"tiny"[..]].into()), 8, &files).await.unwrap();
        assert_eq!((body.len(), body.file.is_none()), (4, true));
        assert_eq!(replayed(&body).await, b"tiny");
    }
}
