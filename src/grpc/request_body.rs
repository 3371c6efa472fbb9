//! A call's request body under a deadline: the request timeout, or the
//! client's `grpc-timeout` if shorter. A body that has not ended by then
//! fails with DEADLINE_EXCEEDED, which tonic's decoder hands to the handler
//! as the call's status: the call ends and hyper frees the stream and what
//! it buffered (a slow or silent client holds a stream for that long at
//! most). On a client-streaming method (reflection) the deadline holds
//! until the first message is in, not the end of the stream.
//!
//! A body that breaks off (the client reset the stream or dropped the
//! connection) marks the request [`ClientGone`]: tonic reports it as
//! INTERNAL "Unexpected EOF", and the call log records CANCELLED instead.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http::Request;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tonic::Status;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC length-prefixed message header: a flag byte, a u32 length.
const MESSAGE_HEADER_LEN: usize = 5;

/// Set once the request body broke off: the client went away mid-call.
#[derive(Debug, Clone, Default)]
pub(super) struct ClientGone(Arc<AtomicBool>);

impl ClientGone {
    pub(super) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `request` with its body under the deadline, and a [`ClientGone`] in its
/// extensions.
pub(super) fn with_deadline(request: Request<Incoming>, limit: Duration) -> Request<TimedBody> {
    let limit = grpc_timeout(request.headers()).map_or(limit, |asked| asked.min(limit));
    let streaming = request.uri().path().starts_with("/grpc.reflection.");
    let gone = ClientGone::default();
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(gone.clone());
    let body = TimedBody {
        body,
        deadline: Instant::now().checked_add(limit),
        timer: None,
        limit,
        first_message: streaming.then(FirstMessage::default),
        gone,
        expired: false,
    };
    Request::from_parts(parts, body)
}

/// A request body that fails with DEADLINE_EXCEEDED unless it ends (or
/// its first message is in, for a streaming method) in time.
pub struct TimedBody {
    body: Incoming,
    /// `None` once the body is in (or the limit is beyond any clock).
    deadline: Option<Instant>,
    /// Made only when the body has to be waited for: most unary requests
    /// are in h2's buffers by the time they are read, and need no timer.
    timer: Option<Pin<Box<Sleep>>>,
    limit: Duration,
    first_message: Option<FirstMessage>,
    gone: ClientGone,
    expired: bool,
}

impl TimedBody {
    fn expire(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.expired = true;
        self.disarm();
        let status = Status::deadline_exceeded(format!(
            "the request message did not arrive within {:?}",
            self.limit
        ));
        Poll::Ready(Some(Err(Box::new(status))))
    }

    fn disarm(&mut self) {
        self.deadline = None;
        self.timer = None;
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(None);
        }
        let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) else {
            let Some(deadline) = this.deadline else {
                return Poll::Pending;
            };
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            return match timer.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => this.expire(),
            };
        };
        match &frame {
            None => this.disarm(),
            Some(Ok(frame)) => {
                if let (Some(first), Some(data)) = (&mut this.first_message, frame.data_ref())
                    && first.observe(data)
                {
                    this.disarm();
                } else if this
                    .deadline
                    .is_some_and(|deadline| Instant::now() >= deadline)
                {
                    // Trickled in, but too slowly.
                    return this.expire();
                }
            }
            Some(Err(_)) => {
                this.disarm();
                this.gone.set();
            }
        }
        Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// How much of a stream's first message has arrived.
#[derive(Debug, Default)]
struct FirstMessage {
    header: [u8; MESSAGE_HEADER_LEN],
    header_seen: usize,
    body_left: Option<usize>,
}

impl FirstMessage {
    /// Takes `data` in; whether the first message is now complete.
    fn observe(&mut self, data: &Bytes) -> bool {
        let mut data = data.clone();
        if self.body_left.is_none() {
            let take = (MESSAGE_HEADER_LEN - self.header_seen).min(data.remaining());
            self.header[self.header_seen..self.header_seen + take].copy_from_slice(&data[..take]);
            self.header_seen += take;
            data.advance(take);
            if self.header_seen < MESSAGE_HEADER_LEN {
                return false;
            }
            let [_, a, b, c, d] = self.header;
            let length = u32::from_be_bytes([a, b, c, d]);
            self.body_left = Some(usize::try_from(length).unwrap_or(usize::MAX));
        }
        let left = self.body_left.unwrap_or(0).saturating_sub(data.remaining());
        self.body_left = Some(left);
        left == 0
    }
}

/// The client's deadline from its `grpc-timeout` header (an integer of at
/// most 8 digits and a unit), if it sent a valid one.
pub(super) fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value.parse().ok()?);
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeout_is_read_in_every_unit_and_junk_is_ignored() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout_of("500m"), Some(Duration::from_millis(500)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            timeout_of("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for junk in ["", "S", "10", "123456789S", "10s", "-1S", "1.5S"] {
            assert_eq!(timeout_of(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn the_first_message_is_complete_after_its_prefix_and_length_in_any_split() {
        let message: Vec<u8> = [0, 0, 0, 0, 3, 7, 8, 9, 0, 0].to_vec();
        let mut whole = FirstMessage::default();
        assert!(whole.observe(&Bytes::from(message.clone())));
        let mut split = FirstMessage::default();
        let done: Vec<bool> = message[..8]
            .iter()
            .map(|&byte| split.observe(&Bytes::from(vec![byte])))
            .collect();
        assert_eq!(
            done,
            [false, false, false, false, false, false, false, true]
        );
        let mut empty = FirstMessage::default();
        assert!(empty.observe(&Bytes::from_static(&[0, 0, 0, 0, 0])));
    }
}
