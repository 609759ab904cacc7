//! `GET /jobs/{job}/events`: a job's event stream as Server-Sent Events — step started and
//! finished, progress `n/m`, log lines, and the final state, after which the stream ends. A
//! client that reconnects with `Last-Event-ID` gets what it missed and goes on from there.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};

use super::problem::ApiError;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::operations::params::JobId;
use crate::services::jobs::JobEvent;
use crate::services::Services;

/// Events read from the store at a time.
const PAGE: i64 = 100;
/// How often the stream looks at the store when no local wake-up came (the job may run on
/// another replica).
const POLL: Duration = Duration::from_secs(1);

pub async fn job_events(
    State(services): State<Services>,
    Path(job): Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let Some(ctx) = super::middleware::caller(&parts) else {
        return ApiError(Error::Unauthorized("authentication required".into())).into_response();
    };
    let opened = async {
        let job = JobId::try_from(job)?;
        let after = last_event_id(&parts.headers)?;
        // Scope and existence are answered as a problem before the stream starts.
        services.job_events(&ctx, job.as_str(), after, 0).await?;
        Ok::<_, Error>((job, after))
    };
    match opened.await {
        Ok((job, after)) => Sse::new(follow(services, ctx, job, after))
            .keep_alive(KeepAlive::default())
            .into_response(),
        Err(error) => ApiError(error).into_response(),
    }
}

fn last_event_id(headers: &HeaderMap) -> Result<i64> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(0);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .filter(|seq| *seq >= 0)
        .ok_or_else(|| Error::invalid("Last-Event-ID must be an event's number"))
}

/// Where a stream is: the last event sent, and whether the job had ended when it last read.
struct Cursor {
    services: Services,
    ctx: Ctx,
    job: JobId,
    after: i64,
    ended: bool,
    wake: tokio::sync::broadcast::Receiver<String>,
}

fn follow(
    services: Services,
    ctx: Ctx,
    job: JobId,
    after: i64,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    let wake = services.jobs.subscribe();
    let cursor = Cursor {
        services,
        ctx,
        job,
        after,
        ended: false,
        wake,
    };
    stream::unfold(Some(cursor), |cursor| async move {
        let mut cursor = cursor?;
        loop {
            let read = cursor
                .services
                .job_events(&cursor.ctx, cursor.job.as_str(), cursor.after, PAGE)
                .await;
            let (events, ended) = match read {
                Ok(page) => page,
                Err(error) => {
                    let event = Event::default().event("error").data(error.public_message());
                    return Some((vec![event], None));
                }
            };
            if let Some(last) = events.last() {
                cursor.after = last.seq;
                cursor.ended = ended;
                let events = events.iter().map(sse_event).collect();
                return Some((events, Some(cursor)));
            }
            // Nothing new: done if the job had ended when the events were read, else wait.
            if ended || cursor.ended {
                return None;
            }
            wait(&mut cursor).await;
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)))
}

async fn wait(cursor: &mut Cursor) {
    let woken = crate::jobs::changed(&mut cursor.wake, cursor.job.as_str());
    tokio::select! {
        _ = woken => {}
        _ = tokio::time::sleep(POLL) => {}
    }
}

fn sse_event(event: &JobEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(event.seq.to_string())
        .event(event.kind.clone())
        .data(data)
}
