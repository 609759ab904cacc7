//! The stdio bridge: a real MCP client speaks stdio to `infrastructor-controller mcp-stdio`,
//! which forwards to a running controller's `/mcp` — through its authentication and scopes.

// Test code: unwrap() is how a test says "this must hold".
#![allow(clippy::unwrap_used)]

use infrastructor_controller::auth::Scope;
use infrastructor_controller::ctx::Ctx;
use infrastructor_controller::services::tokens::NewApiToken;
use infrastructor_controller::{Controller, ControllerConfig};
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;

const CONTROLLER: &str = env!("CARGO_BIN_EXE_infrastructor-controller");

async fn controller(dir: &tempfile::TempDir) -> Controller {
    let config = ControllerConfig {
        data_dir: dir.path().to_path_buf(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        ..ControllerConfig::default()
    };
    Controller::start(config).await.unwrap()
}

fn bridge(controller: &Controller, token: &str) -> TokioChildProcess {
    let mut command = tokio::process::Command::new(CONTROLLER);
    command
        .arg("mcp-stdio")
        .arg("--url")
        .arg(format!("http://{}/mcp", controller.http_addr))
        .env("INFRASTRUCTOR_TOKEN", token)
        .env("INFRASTRUCTOR_LOG", "warn");
    TokioChildProcess::new(command).unwrap()
}

#[tokio::test]
async fn a_stdio_client_reaches_the_tools_through_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller(&dir).await;
    let admin = controller.bootstrap_admin_token.clone().unwrap().token;
    let client = ().serve(bridge(&controller, &admin)).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert!(
        tools
            .iter()
            .any(|t| t.name == "deploy_configuration_change"),
        "{tools:?}"
    );
    let devices = client
        .call_tool(CallToolRequestParams::new("list_devices"))
        .await
        .unwrap();
    let devices = devices.structured_content.unwrap();
    assert_eq!(devices["items"], serde_json::json!([]));
    // Resources and prompts pass through the bridge too.
    let templates = client.list_all_resource_templates().await.unwrap();
    assert!(templates
        .iter()
        .any(|t| t.uri_template == "infrastructor://devices/{device}"));
    let prompts = client.list_all_prompts().await.unwrap();
    assert!(
        prompts.iter().any(|p| p.name == "triage_device"),
        "{prompts:?}"
    );
    client.cancel().await.unwrap();

    // The bridge adds no authority of its own: a read token stays a read token.
    let reader = controller
        .services
        .create_api_token(
            &Ctx::system("test"),
            NewApiToken::new("reader", Scope::Read),
        )
        .await
        .unwrap()
        .token;
    let client = ().serve(bridge(&controller, &reader)).await.unwrap();
    let refused = client
        .call_tool(CallToolRequestParams::new("diagnose_infrastructure"))
        .await
        .unwrap();
    assert_eq!(refused.is_error, Some(true));
    assert_eq!(refused.structured_content.unwrap()["status"], 403);
    client.cancel().await.unwrap();

    // A bad token: the bridge cannot open a session and says why.
    let output = tokio::process::Command::new(CONTROLLER)
        .args(["mcp-stdio", "--url"])
        .arg(format!("http://{}/mcp", controller.http_addr))
        .env("INFRASTRUCTOR_TOKEN", "ifr_wrong")
        .stdin(std::process::Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());

    // A token file works when it is private, and is refused when others can read it; a
    // token is never accepted as a flag.
    use std::os::unix::fs::PermissionsExt;
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{admin}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = tokio::process::Command::new(CONTROLLER);
    command
        .args(["mcp-stdio", "--url"])
        .arg(format!("http://{}/mcp", controller.http_addr))
        .arg("--token-file")
        .arg(&file)
        .env_remove("INFRASTRUCTOR_TOKEN")
        .env("INFRASTRUCTOR_LOG", "warn");
    let client = ().serve(TokioChildProcess::new(command).unwrap()).await.unwrap();
    assert!(!client.list_all_tools().await.unwrap().is_empty());
    client.cancel().await.unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = tokio::process::Command::new(CONTROLLER)
        .args([
            "mcp-stdio",
            "--url",
            "http://127.0.0.1:9/mcp",
            "--token-file",
        ])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!loose.status.success());
    assert!(String::from_utf8_lossy(&loose.stderr).contains("chmod 600"));
    let flag = tokio::process::Command::new(CONTROLLER)
        .args([
            "mcp-stdio",
            "--url",
            "http://127.0.0.1:9/mcp",
            "--token",
            &admin,
        ])
        .output()
        .await
        .unwrap();
    assert!(!flag.status.success(), "no --token flag");
    controller.shutdown().await;
}
