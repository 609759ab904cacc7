//! The gRPC surface for agents (`AgentGateway`): a thin adapter that converts protocol
//! messages, calls [`Services`], and maps errors to gRPC status codes.
//!
//! **Architecture invariant:** the device identity comes from the verified client
//! certificate, never from a payload; a payload ID that differs is refused.

pub mod listener;

use std::pin::Pin;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::Stream;
use infrastructor_proto::v1::agent_gateway_server::AgentGateway;
use infrastructor_proto::v1::{
    agent_message, controller_message, Ack, AgentMessage, ControllerMessage, EnrollRequest,
    EnrollResponse, Hello, RenewRequest, RenewResponse, Welcome,
};
use infrastructor_proto::MAX_BATCH_SAMPLES;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::ctx::Ctx;
use crate::domain::{CheckStatus, ReportedBatch, ReportedCheck, ReportedRound, ReportedSample};
use crate::error::{Error, ErrorKind};
use crate::fleet::SessionInfo;
use crate::pki::{client_certificate, ClientCertificate};
use crate::services::changes::TxnEvent;
use crate::services::links::AgentHello;
use crate::services::{now_ms, Services};
use crate::store::IngestOutcome;

const HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// Metric batches of one stream queued or committing at once (the agent sends at most 32).
const MAX_PENDING_BATCHES: usize = 64;

/// A batch's sequence number and the future of its commit.
type PendingBatch = (u64, BoxFuture<'static, Result<IngestOutcome, Error>>);
/// Persist last-seen at most this often per stream; the registry has the live value.
const LAST_SEEN_PERSIST_MS: i64 = 60_000;

pub struct Gateway {
    services: Services,
    /// Cancelled on shutdown so open streams end and the server can drain.
    shutdown: CancellationToken,
}

impl Gateway {
    pub fn new(services: Services, shutdown: CancellationToken) -> Self {
        Self { services, shutdown }
    }
}

/// The one mapping from service errors to gRPC status; internal details stay in the log.
pub fn status(error: Error) -> Status {
    let message = error.public_message();
    match error.kind() {
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::InvalidInput => Status::invalid_argument(message),
        ErrorKind::Conflict => Status::already_exists(message),
        ErrorKind::Unauthorized => Status::unauthenticated(message),
        ErrorKind::Forbidden => Status::permission_denied(message),
        ErrorKind::RateLimited => Status::resource_exhausted(message),
        ErrorKind::Unavailable => Status::unavailable(message),
        ErrorKind::Internal => {
            tracing::error!(%error, "internal error on agent gateway");
            Status::internal(message)
        }
    }
}

/// The device ID from the verified client certificate, or Unauthenticated.
fn peer_certificate<T>(request: &Request<T>) -> Result<ClientCertificate, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    client_certificate(leaf.as_ref())
        .ok_or_else(|| Status::unauthenticated("client certificate carries no device identity"))
}

/// The context of a call from a verified agent, outside its stream.
fn peer_ctx(peer: &ClientCertificate) -> Ctx {
    Ctx::agent(&peer.device_id, &uuid::Uuid::new_v4().to_string())
}

type ConnectStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentGateway for Gateway {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let body = request.into_inner();
        // Nobody is authenticated yet: the request is its own, unauthenticated, principal.
        let ctx = Ctx::new(
            crate::auth::Principal::enrolling(),
            uuid::Uuid::new_v4().to_string(),
        );
        let enrolled = self
            .services
            .enroll_agent(&ctx, &body.join_token, &body.csr_pem, &body.hostname)
            .await
            .map_err(status)?;
        Ok(Response::new(EnrollResponse {
            device_id: enrolled.device_id,
            certificate_pem: enrolled.certificate_pem,
            ca_certificate_pem: enrolled.ca_certificate_pem,
            not_after_unix_ms: enrolled.not_after_ms,
        }))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let peer = peer_certificate(&request)?;
        let (certificate_pem, not_after_unix_ms) = self
            .services
            .renew_certificate(&peer_ctx(&peer), &peer, &request.into_inner().csr_pem)
            .await
            .map_err(status)?;
        Ok(Response::new(RenewResponse {
            certificate_pem,
            not_after_unix_ms,
        }))
    }

    type ConnectStream = ConnectStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ConnectStream>, Status> {
        let peer = peer_certificate(&request)?;
        self.services
            .require_agent_allowed(&peer_ctx(&peer), &peer)
            .await
            .map_err(status)?;
        let device_id = peer.device_id;
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                body: Some(agent_message::Body::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be hello")),
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no hello received")),
        };
        if hello.device_id != device_id {
            tracing::warn!(%device_id, claimed = %hello.device_id, "hello identity does not match certificate");
            return Err(Status::permission_denied(
                "device ID in hello does not match the client certificate",
            ));
        }
        let (outbound, outbound_rx) = mpsc::channel(64);
        let session = Session::open(
            self.services.clone(),
            device_id,
            &hello,
            self.shutdown.clone(),
        )
        .await
        .map_err(status)?;
        let welcome = match session.welcome().await {
            Ok(welcome) => welcome,
            Err(error) => {
                session.close();
                return Err(status(error));
            }
        };
        let welcome_mark = welcome.high_water_mark;
        outbound
            .send(Ok(message(controller_message::Body::Welcome(welcome))))
            .await
            .map_err(|_| Status::cancelled("stream closed"))?;
        tokio::spawn(session.run(inbound, outbound, welcome_mark));
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound_rx))))
    }
}

fn message(body: controller_message::Body) -> ControllerMessage {
    ControllerMessage { body: Some(body) }
}

/// One agent's stream, registered in the session registry for its lifetime.
struct Session {
    services: Services,
    device_id: String,
    session_id: u64,
    cancel: CancellationToken,
    shutdown: CancellationToken,
    /// Commands from the [`crate::fleet::AgentDriver`] for this agent.
    commands: mpsc::Receiver<ControllerMessage>,
    /// Correlates what this stream reports in the controller's log.
    stream_id: String,
}

impl Session {
    async fn open(
        services: Services,
        device_id: String,
        hello: &Hello,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        let now = now_ms();
        let stream_id = format!("stream-{}", uuid::Uuid::new_v4().simple());
        let ctx = Ctx::agent(&device_id, &stream_id);
        let said = AgentHello {
            hostname: hello.hostname.clone(),
            agent_version: hello.agent_version.clone(),
        };
        let agent = services
            .agent_connected(&ctx, &device_id, &said, now)
            .await?;
        let (command_sender, commands) = mpsc::channel(32);
        let (session_id, cancel) = services.sessions.register(
            &device_id,
            SessionInfo {
                connected_at_ms: now,
                last_seen_ms: now,
                agent_version: agent.agent_version,
                hostname: agent.hostname,
            },
            Some(command_sender),
        );
        services
            .telemetry
            .agents_connected
            .set(services.sessions.count() as i64);
        tracing::debug!(%device_id, resume_point = hello.last_assigned_seq, "stream registered");
        Ok(Self {
            services,
            device_id,
            session_id,
            cancel,
            shutdown,
            commands,
            stream_id,
        })
    }

    /// The context of one message from the agent.
    fn ctx(&self) -> Ctx {
        Ctx::agent(&self.device_id, &self.stream_id)
    }

    /// The resume point (see [`Services::resume_point`]).
    async fn welcome(&self) -> Result<Welcome, Error> {
        let high_water_mark = self
            .services
            .resume_point(&self.ctx(), &self.device_id)
            .await?;
        Ok(Welcome {
            high_water_mark,
            max_batch_samples: MAX_BATCH_SAMPLES,
        })
    }

    /// Unregisters a session that never ran.
    fn close(&self) {
        self.services
            .sessions
            .unregister(&self.device_id, self.session_id);
    }

    /// Reads the agent's messages, keeping up to [`MAX_PENDING_BATCHES`] metric batches in
    /// flight, and acks each batch — in order — once its group commit has completed.
    async fn run(
        mut self,
        mut inbound: Streaming<AgentMessage>,
        outbound: mpsc::Sender<Result<ControllerMessage, Status>>,
        resume_point: u64,
    ) {
        let mut pending: FuturesOrdered<BoxFuture<'static, (u64, Result<IngestOutcome, Error>)>> =
            FuturesOrdered::new();
        let mut last_enqueued = resume_point;
        let mut last_persisted = now_ms();
        let end = loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break Some(Status::permission_denied(
                    "stream ended by the controller (device revoked or replaced)",
                )),
                _ = self.shutdown.cancelled() => break Some(Status::unavailable("controller shutting down")),
                Some(command) = self.commands.recv() => {
                    if outbound.send(Ok(command)).await.is_err() {
                        break None;
                    }
                }
                Some((seq, committed)) = pending.next(), if !pending.is_empty() => {
                    match committed {
                        Ok(IngestOutcome::Stored | IngestOutcome::Duplicate) => {
                            // Acked only after the commit: an ack means the batch is durable.
                            let ack = message(controller_message::Body::Ack(Ack { seq }));
                            if outbound.send(Ok(ack)).await.is_err() {
                                break None;
                            }
                        }
                        Ok(IngestOutcome::OutOfOrder) => {
                            break Some(Status::aborted("an earlier batch was not stored; reconnect and resend from \
                                the high-water mark"));
                        }
                        Err(error) => break Some(status(error)),
                    }
                }
                next = inbound.message(), if pending.len() < MAX_PENDING_BATCHES => {
                    let body = match next {
                        Ok(Some(AgentMessage { body: Some(body) })) => body,
                        Ok(Some(AgentMessage { body: None })) => continue,
                        Ok(None) => break None,
                        Err(error) => {
                            tracing::info!(device_id = %self.device_id, %error, "agent stream failed");
                            break None;
                        }
                    };
                    let now = now_ms();
                    self.services.sessions.touch(&self.device_id, self.session_id, now);
                    match self.handle(body, last_enqueued).await {
                        Ok(Some((seq, committed))) => {
                            last_enqueued = last_enqueued.max(seq);
                            pending.push_back(Box::pin(async move { (seq, committed.await) }));
                        }
                        Ok(None) => {}
                        Err(error) => break Some(status(error)),
                    }
                    if now - last_persisted > LAST_SEEN_PERSIST_MS {
                        last_persisted = now;
                        self.services.agent_seen(&self.ctx(), &self.device_id, now).await;
                    }
                }
            }
        };
        if let Some(status) = end {
            let _ = outbound.send(Err(status)).await;
        }
        self.services
            .sessions
            .unregister(&self.device_id, self.session_id);
        self.services
            .agent_disconnected(&self.ctx(), &self.device_id, now_ms())
            .await;
        self.services
            .telemetry
            .agents_connected
            .set(self.services.sessions.count() as i64);
    }

    /// Handles one message; a metric batch is queued for storage and returned with the
    /// future of its commit.
    async fn handle(
        &self,
        body: agent_message::Body,
        last_enqueued: u64,
    ) -> Result<Option<PendingBatch>, Error> {
        match body {
            agent_message::Body::Metrics(batch) => {
                if batch.samples.len() > MAX_BATCH_SAMPLES as usize {
                    return Err(Error::invalid(format!(
                        "batch larger than {MAX_BATCH_SAMPLES} samples"
                    )));
                }
                let batch = reported_batch(batch);
                let committed = self
                    .services
                    .enqueue_batch(&self.ctx(), &self.device_id, &batch, last_enqueued)
                    .await?;
                Ok(Some((batch.seq, Box::pin(committed))))
            }
            agent_message::Body::CheckReports(round) => {
                self.services
                    .record_check_reports(&self.ctx(), &self.device_id, &reported_round(round))
                    .await?;
                Ok(None)
            }
            agent_message::Body::Heartbeat(_) => Ok(None),
            agent_message::Body::ChangeEvent(event) => {
                match host_event(event) {
                    Some(event) => {
                        self.services
                            .record_change_event(&self.ctx(), &self.device_id, &event)
                            .await
                    }
                    None => tracing::warn!(device_id = %self.device_id,
                        "change event with an unknown state; ignored"),
                }
                Ok(None)
            }
            agent_message::Body::CommandResult(result) => {
                tracing::debug!(device_id = %self.device_id, request_id = %result.request_id, "command result");
                self.services.agents.complete(&self.device_id, result);
                Ok(None)
            }
            agent_message::Body::Hello(_) => Err(Error::invalid("hello may only be sent once")),
        }
    }
}

/// An agent's metric batch as the services take it (the strings are moved, not copied).
fn reported_batch(batch: infrastructor_proto::v1::MetricBatch) -> ReportedBatch {
    ReportedBatch {
        seq: batch.seq,
        samples: batch
            .samples
            .into_iter()
            .map(|sample| ReportedSample {
                series: sample.series,
                labels: sample.labels,
                timestamp_ms: sample.timestamp_ms,
                value: sample.value,
            })
            .collect(),
        spool_dropped_batches: batch.spool_dropped_batches,
        spool_dropped_samples: batch.spool_dropped_samples,
    }
}

/// An agent's check round as the services take it; reports without a status say nothing and
/// are dropped here.
fn reported_round(round: infrastructor_proto::v1::CheckReports) -> ReportedRound {
    use infrastructor_proto::v1::CheckStatus as Proto;
    ReportedRound {
        capabilities: round.capabilities,
        reports: round
            .reports
            .into_iter()
            .filter_map(|report| {
                let status = CheckStatus::from_proto(Proto::try_from(report.status).ok()?)?;
                Some(ReportedCheck {
                    check: report.check,
                    status,
                    message: report.message,
                    evidence_json: report.evidence_json,
                    checked_at_ms: report.checked_at_unix_ms,
                })
            })
            .collect(),
    }
}

/// An agent's change event with its state checked against the engine's states.
fn host_event(event: infrastructor_proto::v1::ChangeEvent) -> Option<TxnEvent> {
    let state = infrastructor_hostops::change::wire::txn_state(event.state).ok()?;
    Some(TxnEvent {
        txn_id: event.txn_id,
        state,
        reason: event.reason,
    })
}
