//! What every dialect's stream shares: token pacing with the stream faults, lazily
//! produced bodies, and connections cut on purpose.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde::Serialize;

use crate::faults::Fault;
use crate::state::App;

/// One step of a paced stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Send token `index`; `last` when the stream then ends cleanly.
    Token { index: usize, last: bool },
    /// A `cut_after_tokens` fault strikes: drop the connection.
    Cut,
    /// A `stream_error_after_tokens` fault strikes: send the dialect's error and end.
    Error,
    /// Every token was sent: finish the stream.
    Done,
}

/// Times the tokens of one stream and decides where its fault strikes.
///
/// A fault count beyond the reply strikes after the last token; after [`Beat::Cut`] or
/// [`Beat::Error`] the stream must end.
pub(crate) struct Pacer {
    tokens: usize,
    first_delay: Duration,
    token_delay: Duration,
    cut_after: Option<usize>,
    error_after: Option<usize>,
    next: usize,
}

impl Pacer {
    pub(crate) fn new(app: &App, tokens: usize, fault: &Fault) -> Self {
        Self {
            tokens,
            first_delay: app.cfg.first_token_delay,
            token_delay: app.cfg.token_delay,
            cut_after: fault.cut_after_tokens,
            error_after: fault.stream_error_after_tokens,
            next: 0,
        }
    }

    /// Waits for the next step (no wait before [`Beat::Done`]).
    pub(crate) async fn beat(&mut self) -> Beat {
        let i = self.next;
        let done = i >= self.tokens;
        let cut = self.cut_after.is_some_and(|c| done || i >= c);
        let error = self.error_after.is_some_and(|c| done || i >= c);
        if done && !cut && !error {
            return Beat::Done;
        }
        let delay = if i == 0 {
            self.first_delay
        } else {
            self.token_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if cut {
            // Returning Pending once lets the server flush what was sent before the
            // error tears the connection down.
            tokio::task::yield_now().await;
            return Beat::Cut;
        }
        if error {
            return Beat::Error;
        }
        self.next = i + 1;
        let last =
            self.next >= self.tokens && self.cut_after.is_none() && self.error_after.is_none();
        Beat::Token { index: i, last }
    }
}

/// A stream that produces one frame per poll: the timer for a token starts only when the
/// previous frame has been taken, and dropping the body (client gone) drops the timer.
pub(crate) trait Frames: Send + 'static {
    /// The next frame, an error that breaks the connection, or `None` at the end.
    fn next_frame(&mut self) -> impl Future<Output = Option<Result<Bytes, std::io::Error>>> + Send;
}

/// A response body that pulls from `frames`.
pub(crate) fn stream_body<F: Frames>(frames: F) -> Body {
    Body::from_stream(futures::stream::unfold(frames, |mut frames| async move {
        let item = frames.next_frame().await?;
        Some((item, frames))
    }))
}

/// A body that sends `prefix` and then breaks the connection.
pub(crate) fn cut_body(prefix: Bytes) -> Body {
    let stream = futures::stream::unfold(Some(prefix), |state| async move {
        match state {
            Some(prefix) => Some((Ok(prefix), None)),
            None => {
                // Returning Pending once lets the server flush what was sent before the
                // error tears the connection down.
                tokio::task::yield_now().await;
                Some((Err(cut_error()), None))
            }
        }
    });
    Body::from_stream(stream)
}

/// A plain JSON answer cut in the middle of the document.
pub(crate) fn half_body(json: Vec<u8>) -> Body {
    let half = json.len() / 2;
    cut_body(Bytes::from(json).slice(..half))
}

pub(crate) fn cut_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "mock fault: connection cut",
    )
}

/// Appends `data: <json>\n\n`.
pub(crate) fn push_data<T: Serialize>(buf: &mut Vec<u8>, value: &T) -> Result<(), std::io::Error> {
    buf.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *buf, value).map_err(std::io::Error::other)?;
    buf.extend_from_slice(b"\n\n");
    Ok(())
}

/// Appends `event: <name>\ndata: <json>\n\n`.
pub(crate) fn push_event<T: Serialize>(
    buf: &mut Vec<u8>,
    name: &str,
    value: &T,
) -> Result<(), std::io::Error> {
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    push_data(buf, value)
}
