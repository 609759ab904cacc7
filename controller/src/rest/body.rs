//! Request bodies, read with a bound. When the answer comes before the body is read (a scope
//! refused before decoding, a body over the bound), what the client is still sending is
//! drained in the background, within limits: the client then reads the answer instead of a
//! connection reset for the bytes nobody took.

use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use futures::StreamExt;

/// Most bytes drained after an early answer; beyond it the connection is simply closed.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// How long an early answer's body may take to drain.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A request body that is drained if dropped unread.
pub struct RequestBody(Option<BodyDataStream>);

/// The body was larger than the bound.
#[derive(Debug)]
pub struct TooLarge;

impl RequestBody {
    pub fn new(body: Body) -> Self {
        Self(Some(body.into_data_stream()))
    }

    /// The whole body, if it is at most `limit` bytes.
    pub async fn read(mut self, limit: usize) -> Result<Bytes, TooLarge> {
        let Some(stream) = self.0.as_mut() else {
            return Ok(Bytes::new());
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| TooLarge)?;
            if bytes.len() + chunk.len() > limit {
                return Err(TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        self.0 = None;
        Ok(Bytes::from(bytes))
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let (Some(stream), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(drain(stream));
    }
}

async fn drain(mut stream: BodyDataStream) {
    let discard = async {
        let mut drained = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len();
            if drained > DRAIN_LIMIT {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}
