//! A real MCP client (rmcp over streamable HTTP) for tests.

use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, NumberOrString, ProgressNotificationParam,
    ProgressToken, RequestMetaObject,
};
use rmcp::service::NotificationContext;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;

use crate::TestController;

pub type Client = RunningService<RoleClient, ()>;

pub fn mcp_url(controller: &TestController) -> String {
    format!("http://{}/mcp", controller.http_addr)
}

/// An initialized MCP session with `token` as its bearer token.
pub async fn connect(controller: &TestController, token: &str) -> Client {
    let config =
        StreamableHttpClientTransportConfig::with_uri(mcp_url(controller)).auth_header(token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP session")
}

pub async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments))
        .await
        .expect("tools/call")
}

pub fn structured(result: &CallToolResult) -> &Value {
    result
        .structured_content
        .as_ref()
        .unwrap_or_else(|| panic!("structured content in {result:?}"))
}

/// Calls a mutating tool twice: once for the plan, once with its confirmation ID.
pub async fn call_confirmed(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let plan = call(client, tool, arguments.clone()).await;
    let plan = structured(&plan);
    let confirmation = plan["confirmation_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a plan with a confirmation_id: {plan}"))
        .to_string();
    let mut confirmed = arguments;
    confirmed["confirmation_id"] = Value::from(confirmation);
    call(client, tool, confirmed).await
}

/// A client that keeps every progress notification it receives.
#[derive(Clone, Default)]
pub struct ProgressRecorder {
    pub received: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for ProgressRecorder {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default()
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.received.lock().unwrap().push(params);
    }
}

pub type RecordingClient = RunningService<RoleClient, ProgressRecorder>;

/// A session whose client records progress notifications.
pub async fn connect_recording(
    controller: &TestController,
    token: &str,
) -> (RecordingClient, ProgressRecorder) {
    let config =
        StreamableHttpClientTransportConfig::with_uri(mcp_url(controller)).auth_header(token);
    let recorder = ProgressRecorder::default();
    let client = recorder
        .clone()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP session");
    (client, recorder)
}

/// Calls `tool` asking for progress under `token`.
pub async fn call_with_progress(
    client: &RecordingClient,
    tool: &str,
    arguments: Value,
    token: &str,
) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object");
    };
    let mut meta = RequestMetaObject::default();
    meta.set_progress_token(ProgressToken(NumberOrString::String(
        token.to_string().into(),
    )));
    let mut params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
    params.meta = Some(meta);
    client.call_tool(params).await.expect("tools/call")
}
