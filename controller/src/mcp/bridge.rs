//! `infrastructor-controller mcp-stdio`: an MCP server on stdin/stdout for clients that only
//! speak stdio. It forwards every request to the controller's `/mcp` endpoint with the given
//! bearer token, so these clients pass through the same HTTP middleware (authentication,
//! scopes, timing, audit) as everyone else; it holds no credentials or state of its own.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, GetPromptRequestParams, GetPromptResponse,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::{Peer, RequestContext, RoleClient, RoleServer};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};

/// Forwards to the remote controller.
struct Bridge {
    remote: Peer<RoleClient>,
}

fn forward_error(error: rmcp::ServiceError) -> McpError {
    match error {
        rmcp::ServiceError::McpError(error) => error,
        other => McpError::internal_error(format!("controller unreachable: {other}"), None),
    }
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_prompts()
            .build();
        ServerConfig::new(capabilities).with_server_info(Implementation::new(
            "infrastructor-controller (stdio bridge)",
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.remote.list_tools(request).await.map_err(forward_error)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.remote
            .call_tool_once(request)
            .await
            .map_err(forward_error)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.remote
            .list_resources(request)
            .await
            .map_err(forward_error)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.remote
            .list_resource_templates(request)
            .await
            .map_err(forward_error)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.remote
            .read_resource_once(request)
            .await
            .map_err(forward_error)
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        self.remote
            .list_prompts(request)
            .await
            .map_err(forward_error)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        self.remote
            .get_prompt_once(request)
            .await
            .map_err(forward_error)
    }
}

/// Serves stdin/stdout until the client closes them.
pub async fn run(url: &str, token: &str) -> anyhow::Result<()> {
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token);
    let remote = ()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open an MCP session with {url}: {e}"))?;
    let bridge = Bridge {
        remote: remote.peer().clone(),
    };
    let served = bridge.serve(rmcp::transport::stdio()).await?;
    served.waiting().await?;
    let _ = remote.cancel().await;
    Ok(())
}
