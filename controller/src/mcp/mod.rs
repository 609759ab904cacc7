//! The MCP surface (rmcp, streamable HTTP, nested at `/mcp` in the same axum router as REST):
//! one tool per entry of [`crate::operations::OPERATIONS`], each a thin adapter over the same
//! service method the REST handler calls.
//!
//! Tool calls reach this module through the same HTTP middleware as REST — request ID,
//! authentication, timing, error logging — so the caller's principal and correlation ID are
//! taken from the HTTP request rmcp hands over. Mutating tools are plan → confirm
//! ([`confirm`]).
//!
//! - [`tools`]: the tool list (input schemas from the operation table) and the dispatcher.
//! - [`confirm`]: single-use confirmation IDs bound to a plan and its caller.
//! - [`bridge`]: `mcp-stdio`, which forwards a stdio MCP client to `/mcp`.

pub mod bridge;
pub mod confirm;
pub mod tools;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, ServerHandler};
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::ctx::Ctx;
use crate::error::Error;
use crate::services::Services;

/// Serves MCP sessions with the controller's services.
#[derive(Clone)]
pub struct McpServer {
    services: Services,
    confirmations: Arc<confirm::Confirmations>,
}

/// The streamable HTTP service to nest at `/mcp`. Stateless and JSON answers: every tool call
/// is one POST that passes through the HTTP middleware on its own.
pub fn service(
    services: Services,
    shutdown: CancellationToken,
) -> StreamableHttpService<McpServer, LocalSessionManager> {
    let server = McpServer {
        services,
        confirmations: Arc::new(confirm::Confirmations::default()),
    };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        // Host and Origin are checked by our own middleware, with the configured lists.
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_cancellation_token(shutdown);
    StreamableHttpService::new(move || Ok(server.clone()), Arc::default(), config)
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "infrastructor-controller",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Fleet manager for Linux hosts. Read tools list devices, metrics, checks and \
                 changes; mutating tools answer first with a plan and a confirmation_id, and \
                 act only when called again with that confirmation_id.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools::catalog()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // The authentication middleware guarantees a principal; without one, refuse.
        let Some(ctx) = caller(&context) else {
            let anonymous = Ctx::new(crate::auth::Principal::system("anonymous"), "-");
            let error = Error::Unauthorized("authentication required".into());
            return Ok(CallToolResponse::Complete(tool_error(&error, &anonymous)));
        };
        let span =
            tracing::info_span!("mcp_tool", tool = %request.name, request_id = %ctx.request_id);
        let _entered = span.enter();
        let arguments = request.arguments.unwrap_or_default();
        let outcome = tools::call(
            &self.services,
            &self.confirmations,
            &ctx,
            &request.name,
            arguments,
        )
        .await;
        Ok(CallToolResponse::Complete(match outcome {
            Ok(value) => CallToolResult::structured(as_object(value)),
            Err(error) => tool_error(&error, &ctx),
        }))
    }
}

/// Structured tool output must be a JSON object: lists come as `{"items": [...]}`.
fn as_object(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(_) => value,
        serde_json::Value::Array(_) => serde_json::json!({ "items": value }),
        other => serde_json::json!({ "value": other }),
    }
}

/// The principal and correlation ID the HTTP middleware established for this request.
fn caller(context: &RequestContext<RoleServer>) -> Option<Ctx> {
    let parts = context.extensions.get::<axum::http::request::Parts>()?;
    let principal = parts.extensions.get::<Principal>().cloned()?;
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    Some(Ctx::new(principal, request_id))
}

/// An MCP tool error: the same kind and safe message as a REST problem, with the request ID.
fn tool_error(error: &Error, ctx: &Ctx) -> CallToolResult {
    let kind = crate::rest::problem::status_for(error.kind());
    if kind.is_server_error() {
        tracing::error!(request_id = %ctx.request_id, %error, "tool failed");
    }
    CallToolResult::structured_error(serde_json::json!({
        "status": kind.as_u16(),
        "title": kind.canonical_reason().unwrap_or("error"),
        "detail": error.public_message(),
        "request_id": ctx.request_id,
    }))
}
