//! The MCP surface with a real MCP client (rmcp over streamable HTTP): the same operations as
//! REST, through the same authentication, scopes and error model; plan → confirm for
//! mutating tools; Origin validation.

use infrastructor_controller::auth::Scope;
use infrastructor_controller::operations::REGISTRY;
use infrastructor_e2e::mcp::{call, connect, mcp_url, structured};
use infrastructor_e2e::TestController;
use rmcp::model::JsonObject;
use serde_json::{json, Value};

#[tokio::test]
async fn tools_mirror_the_operations_and_answer_like_rest() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let client = connect(&controller, &controller.admin_token).await;
    let info = client.peer_info().expect("server info");
    assert!(info.capabilities.tools.is_some());

    // Parity: one tool per operation offered over MCP (all but a human's decisions), and one
    // REST route per operation (an unauthenticated call is a 401 from the route's stack, not
    // the 404 of an unknown path or the 405 of a wrong method).
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    let metas = || REGISTRY.iter().map(|entry| entry.meta());
    let mut operations: Vec<&str> = metas().filter(|o| o.mcp()).map(|o| o.id).collect();
    names.sort_unstable();
    operations.sort_unstable();
    assert_eq!(
        names, operations,
        "one tool per operation, no more, no less"
    );
    let rest_only: Vec<&str> = metas().filter(|o| !o.mcp()).map(|o| o.id).collect();
    assert_eq!(rest_only, ["approve_request", "reject_request"]);
    let http = reqwest::Client::new();
    for operation in metas() {
        let path = operation
            .path
            .replace("{device}", "d")
            .replace("{change}", "c")
            .replace("{approval}", "a");
        let url = format!("http://{}/api/v1{path}", controller.http_addr);
        let method = operation.method.as_str().to_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let status = http.request(method, &url).send().await.unwrap().status();
        assert_eq!(status, 401, "{:?} {url} is not routed", operation.method);
    }
    for tool in &tools {
        assert_eq!(
            tool.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            tool.name
        );
    }
    let deploy = tools.iter().find(|t| t.name == "deploy_change").unwrap();
    let properties = deploy.input_schema["properties"].as_object().unwrap();
    assert!(properties.contains_key("devices") && properties.contains_key("confirmation_id"));
    let get_device = tools.iter().find(|t| t.name == "get_device").unwrap();
    assert_eq!(get_device.input_schema["required"], json!(["device"]));

    // The same answer as REST, as structured content.
    let (_, over_rest) = controller.get_json("/ssh-public-key").await;
    let result = call(&client, "ssh_public_key", json!({})).await;
    assert_eq!(result.is_error, Some(false));
    assert_eq!(structured(&result), &over_rest);
    let meta = result.meta.as_ref().expect("_meta with the request ID");
    assert!(meta.0["infrastructor/request_id"].as_str().unwrap().len() > 8);
    let devices = call(&client, "list_devices", json!({})).await;
    assert_eq!(
        structured(&devices),
        &json!({"items": []}),
        "lists come as items"
    );

    // Errors are tool errors with the REST status, a safe message and the request ID.
    let missing = call(&client, "get_device", json!({"device": "nope"})).await;
    assert_eq!(missing.is_error, Some(true));
    let problem = structured(&missing);
    assert_eq!(problem["status"], 404);
    assert!(problem["detail"].as_str().unwrap().contains("not found"));
    assert!(
        problem["request_id"].as_str().unwrap().len() > 8,
        "{problem}"
    );
    let bad = call(&client, "get_device", json!({"device": "x", "extra": 1})).await;
    assert_eq!(structured(&bad)["status"], 400);
    assert!(structured(&bad)["detail"]
        .as_str()
        .unwrap()
        .contains("unknown argument"));
    client.cancel().await.unwrap();
    controller.shutdown().await;
}

#[tokio::test]
async fn a_mutating_tool_needs_a_confirmation_bound_to_its_plan_and_caller() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let client = connect(&controller, &controller.admin_token).await;
    let arguments = json!({
        "name": "nas", "ssh_address": "127.0.0.1:22", "ssh_user": "monitor",
        "ssh_host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    });
    let plan = call(&client, "create_agentless_device", arguments.clone()).await;
    let plan = structured(&plan).clone();
    assert_eq!(plan["status"], "confirmation_required", "{plan}");
    let confirmation = plan["confirmation_id"].as_str().unwrap().to_string();
    let (status, _) = controller.get_json("/devices/nas").await;
    assert_eq!(status, 404, "nothing happens without confirmation");

    let mut other = arguments.clone();
    other["name"] = json!("other");
    other["confirmation_id"] = json!(confirmation);
    let mismatch = call(&client, "create_agentless_device", other).await;
    assert!(structured(&mismatch)["detail"]
        .as_str()
        .unwrap()
        .contains("does not match"));

    let someone_else = connect(
        &controller,
        &controller.api_token("mcp-admin", Scope::Admin).await,
    )
    .await;
    let mut confirmed = arguments.clone();
    confirmed["confirmation_id"] = json!(confirmation);
    let stolen = call(&someone_else, "create_agentless_device", confirmed.clone()).await;
    assert_eq!(structured(&stolen)["status"], 403, "{:?}", stolen);

    let created = call(&client, "create_agentless_device", confirmed.clone()).await;
    assert_eq!(created.is_error, Some(false), "{created:?}");
    assert_eq!(structured(&created)["name"], "nas");
    let (status, _) = controller.get_json("/devices/nas").await;
    assert_eq!(status, 200);
    let replay = call(&client, "create_agentless_device", confirmed).await;
    assert!(structured(&replay)["detail"]
        .as_str()
        .unwrap()
        .contains("already used"));
    someone_else.cancel().await.unwrap();
    client.cancel().await.unwrap();
    controller.shutdown().await;
}

#[tokio::test]
async fn the_same_authentication_and_scopes_apply() {
    let (_dir, controller) = TestController::start_sqlite().await;
    let http = controller.http();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});
    let post = |token: Option<&str>, origin: Option<&str>| {
        let mut request = http
            .post(mcp_url(&controller))
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let anonymous = post(None, None).await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let forged = post(Some("ifr_not-a-token"), None).await.unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let foreign = post(Some(&controller.admin_token), Some("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(foreign.status().as_u16(), 403);
    let body: Value = foreign.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("origin"),
        "{body}"
    );
    let ok = post(Some(&controller.admin_token), None).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert!(ok.headers().contains_key("x-request-id"));

    let reader = connect(
        &controller,
        &controller.api_token("mcp-read", Scope::Read).await,
    )
    .await;
    let listed = call(&reader, "list_devices", json!({})).await;
    assert_eq!(listed.is_error, Some(false));
    let refused = call(&reader, "diagnose_infrastructure", json!({})).await;
    assert_eq!(structured(&refused)["status"], 403);
    assert!(
        structured(&refused)["detail"]
            .as_str()
            .unwrap()
            .contains("operate"),
        "{refused:?}"
    );
    let operator = connect(
        &controller,
        &controller.api_token("mcp-operate", Scope::Operate).await,
    )
    .await;
    // Not even a plan (or a confirmation ID) for a caller who could not run the operation.
    let mut args = JsonObject::new();
    args.insert("expires_in".into(), json!("1h"));
    let refused = call(&operator, "create_enrollment_token", Value::Object(args)).await;
    assert_eq!(structured(&refused)["status"], 403);
    assert!(structured(&refused).get("confirmation_id").is_none());
    assert!(structured(&refused)["detail"]
        .as_str()
        .unwrap()
        .contains("admin"));
    reader.cancel().await.unwrap();
    operator.cancel().await.unwrap();
    controller.shutdown().await;
}
