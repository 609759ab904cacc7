//! The gateway refuses everything that is not a valid, current, matching client certificate
//! over TLS 1.3: no certificate, another CA, expired, revoked, identity mismatch, plaintext,
//! TLS 1.2, oversized messages.

use std::sync::Arc;
use std::time::Duration;

use infrastructor_agent::identity::{self, Identity};
use infrastructor_agent::metrics::HostMetrics;
use infrastructor_agent::tls;
use infrastructor_controller::pki::Pki;
use infrastructor_e2e::{agent_config, eventually, hello, path, TestAgent, TestController};
use infrastructor_proto::v1::agent_gateway_client::AgentGatewayClient;
use infrastructor_proto::v1::{agent_message, AgentMessage, RenewRequest};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Opens a stream with `identity`'s certificate and sends `first`; returns the status the
/// gateway answered with (or the transport error as `Unavailable`).
async fn try_connect(
    url: &str,
    config: Arc<rustls::ClientConfig>,
    first: AgentMessage,
) -> Result<(), tonic::Status> {
    let channel = tls::connect(url, config)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = AgentGatewayClient::new(channel);
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(first).await.expect("queue hello");
    let mut inbound = client
        .connect(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    // The welcome proves the stream was accepted.
    inbound
        .message()
        .await?
        .ok_or_else(|| tonic::Status::aborted("closed"))?;
    Ok(())
}

/// The server refused during the TLS handshake: the client sees a transport failure, never an
/// application status. In TLS 1.3 the client may notice the closed connection before the
/// alert, so the alert is checked only when it is visible.
fn assert_refused_by_tls(status: &tonic::Status, alert: &str) {
    let text = format!("{status:?}");
    assert!(
        matches!(
            status.code(),
            Code::Unknown | Code::Cancelled | Code::Unavailable
        ) && text.contains("ransport"),
        "expected a TLS-level refusal, got {text}"
    );
    if text.contains("alert") {
        assert!(text.contains(alert), "expected alert {alert}, got {text}");
    }
}

fn with_certificate(identity: &Identity, cert_pem: String) -> Identity {
    let mut forged = identity.clone();
    forged.cert_pem = cert_pem;
    forged
}

#[tokio::test]
async fn gateway_refuses_every_invalid_client() {
    let (dir, controller) = TestController::start_sqlite().await;
    let url = controller.gateway_url();
    let identity = controller.enroll(&path(&dir, "agent")).await;
    let device_id = identity.meta.device_id.clone();
    let pin = identity::parse_fingerprint(controller.services.pki.ca_fingerprint()).unwrap();

    // The genuine identity works.
    try_connect(
        &url,
        tls::mutual_tls_config(&identity).unwrap(),
        hello(&device_id, "h"),
    )
    .await
    .expect("valid client accepted");

    // No client certificate: TLS succeeds (enrollment needs that) but Connect and Renew refuse.
    let anonymous = tls::pinned_ca_config(pin).unwrap();
    let status = try_connect(&url, anonymous.clone(), hello(&device_id, "h"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let channel = tls::connect(&url, anonymous).await.unwrap();
    let status = AgentGatewayClient::new(channel)
        .renew(RenewRequest {
            csr_pem: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // A certificate for the same device ID, signed by another CA.
    let rogue_ca = Pki::load_or_create(&path(&dir, "rogue"), &["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::from_pem(&identity.key_pem).unwrap();
    let csr = identity::certificate_request(&key, "h").unwrap();
    let rogue = rogue_ca
        .sign_device_csr(&csr, &device_id, Duration::from_secs(3600))
        .unwrap();
    let forged = with_certificate(&identity, rogue.pem);
    let refused = try_connect(
        &url,
        tls::mutual_tls_config(&forged).unwrap(),
        hello(&device_id, "h"),
    )
    .await
    .unwrap_err();
    // Same subject name as our CA, so webpki finds our CA and the signature check fails.
    assert_refused_by_tls(&refused, "DecryptError");

    // An expired certificate from the right CA.
    let now = time::OffsetDateTime::now_utc();
    let expired = controller
        .services
        .pki
        .sign_device_csr_valid(
            &csr,
            &device_id,
            now - time::Duration::days(2),
            now - time::Duration::days(1),
        )
        .unwrap();
    let stale = with_certificate(&identity, expired.pem);
    let refused = try_connect(
        &url,
        tls::mutual_tls_config(&stale).unwrap(),
        hello(&device_id, "h"),
    )
    .await
    .unwrap_err();
    assert_refused_by_tls(&refused, "CertificateExpired");

    // A valid certificate whose hello claims another device.
    let status = try_connect(
        &url,
        tls::mutual_tls_config(&identity).unwrap(),
        hello("someone-else", "h"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The first message must be a hello.
    let not_hello = AgentMessage {
        body: Some(agent_message::Body::Heartbeat(Default::default())),
    };
    let status = try_connect(&url, tls::mutual_tls_config(&identity).unwrap(), not_hello)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // An oversized message is refused by the size limit.
    let huge = hello(&device_id, &"x".repeat(5 * 1024 * 1024));
    let status = try_connect(&url, tls::mutual_tls_config(&identity).unwrap(), huge)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Plaintext HTTP/2 against the TLS port.
    let plaintext =
        tonic::transport::Endpoint::from_shared(format!("http://{}", controller.grpc_addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await;
    if let Ok(channel) = plaintext {
        let status = AgentGatewayClient::new(channel)
            .renew(RenewRequest {
                csr_pem: String::new(),
            })
            .await
            .unwrap_err();
        assert_ne!(status.code(), Code::Ok);
    }

    // TLS 1.2 is not spoken.
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::parse_certs(&identity.ca_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls12.alpn_protocols = vec![b"h2".to_vec()];
    let error = tls::connect(&url, Arc::new(tls12)).await.unwrap_err();
    assert!(
        error.to_string().to_lowercase().contains("version")
            || error.to_string().contains("handshake"),
        "{error}"
    );

    // No refused attempt left a session behind.
    assert_eq!(controller.services.sessions.count(), 0);
    controller.shutdown().await;
}

#[tokio::test]
async fn deleting_a_device_revokes_it() {
    let (dir, controller) = TestController::start_sqlite().await;
    let state_dir = path(&dir, "agent");
    let identity = controller.enroll(&state_dir).await;
    let device_id = identity.meta.device_id.clone();
    let agent = TestAgent::start(
        agent_config(&state_dir, Duration::from_millis(200)),
        Box::new(HostMetrics::new()),
    );
    eventually(Duration::from_secs(30), "agent connected", || async {
        agent.handle.is_connected().then_some(())
    })
    .await;

    let response = controller
        .http()
        .delete(controller.api_url(&format!("/devices/{device_id}")))
        .bearer_auth(&controller.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);

    // The open stream is ended and every reconnect is refused.
    eventually(Duration::from_secs(30), "agent disconnected", || async {
        (!agent.handle.is_connected()).then_some(())
    })
    .await;
    let status = try_connect(
        &controller.gateway_url(),
        tls::mutual_tls_config(&identity).unwrap(),
        hello(&device_id, "h"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let channel = tls::connect(
        &controller.gateway_url(),
        tls::mutual_tls_config(&identity).unwrap(),
    )
    .await
    .unwrap();
    let key = rcgen::KeyPair::from_pem(&identity.key_pem).unwrap();
    let status = AgentGatewayClient::new(channel)
        .renew(RenewRequest {
            csr_pem: identity::certificate_request(&key, "h").unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "a revoked device cannot renew"
    );
    let (status, _) = controller.get_json(&format!("/devices/{device_id}")).await;
    assert_eq!(status, 404);
    agent.stop().await;
    controller.shutdown().await;
}
