//! A request's body on its way upstream, and what each try sends: nothing, the client's body
//! streamed as the endpoint takes it, or a buffered body sent again from the start. A streamed
//! body can go to a second try only if the first never read from it (its connection failed).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use tokio::sync::oneshot;

use crate::body::{BodyClock, RequestBody};
use crate::buffer::{BufferedBody, Replay};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request's body, held for the tries of the request.
#[derive(Debug, Default)]
pub(crate) enum OutgoingBody {
    /// The request has no body.
    #[default]
    None,
    /// The client's body, streamed (under the route's size limit and the client's clock).
    Streamed {
        /// `None` while a try holds it.
        body: Option<Limited<RequestBody>>,
        clock: Arc<BodyClock>,
        /// Where a try that never read the body hands it back.
        returned: Option<oneshot::Receiver<Limited<RequestBody>>>,
    },
    /// Read in full before the first try (`proxy-request-buffering`).
    Buffered(BufferedBody),
}

/// The body one try sends.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    Empty,
    Streamed(Lent),
    Replay(Replay),
}

/// A streamed body lent to one try: handed back when dropped unread.
#[derive(Debug)]
pub(crate) struct Lent {
    body: Option<Limited<RequestBody>>,
    read: bool,
    home: Option<oneshot::Sender<Limited<RequestBody>>>,
}

// === impl OutgoingBody ===

impl OutgoingBody {
    /// The body for the next try, and the clock that times the endpoint taking it (none for a
    /// request without a body); `None` when a streamed body was read by an earlier try and
    /// cannot be sent again.
    pub(crate) fn for_try(&mut self) -> Option<(UpstreamBody, Option<Arc<BodyClock>>)> {
        match self {
            Self::None => Some((UpstreamBody::Empty, None)),
            Self::Buffered(body) => {
                let clock = Arc::new(BodyClock::new(body.len() > 0));
                Some((UpstreamBody::Replay(body.replay(clock.clone())), Some(clock)))
            }
            Self::Streamed { body, clock, returned } => {
                let body = body.take().or_else(|| returned.take()?.try_recv().ok())?;
                let (home, back) = oneshot::channel();
                *returned = Some(back);
                let lent = Lent { body: Some(body), read: false, home: Some(home) };
                Some((UpstreamBody::Streamed(lent), Some(clock.clone())))
            }
        }
    }

    /// Whether a try that failed can be followed by another with the same body: always, unless
    /// the body is streamed and the failed try sent the request (nginx's rule for
    /// `proxy_request_buffering off`).
    pub(crate) fn can_resend(&self, sent: bool) -> bool {
        !sent || !matches!(self, Self::Streamed { .. })
    }
}

// === impl UpstreamBody ===

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Streamed(lent) => {
                lent.read = true;
                let Some(body) = lent.body.as_mut() else { return Poll::Ready(None) };
                Pin::new(body).poll_frame(cx)
            }
            Self::Replay(replay) => Pin::new(replay).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Streamed(lent) => lent.body.as_ref().is_none_or(Body::is_end_stream),
            Self::Replay(replay) => replay.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Streamed(lent) => lent.body.as_ref().map_or(SizeHint::with_exact(0), Body::size_hint),
            Self::Replay(replay) => replay.size_hint(),
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if self.read {
            return;
        }
        if let (Some(body), Some(home)) = (self.body.take(), self.home.take()) {
            let _ = home.send(body);
        }
    }
}
