//! The REST API against its own OpenAPI document, by a property-based conformance fuzzer
//! (Schemathesis, from PyPI) run against a live controller: no undocumented status, no
//! schema-valid request rejected, no schema-invalid one accepted, no response that breaks its
//! schema; and the document is valid OpenAPI 3.1 (openapi-spec-validator). CI installs both
//! into one virtualenv; elsewhere the suite runs when `st` is on PATH (or named by
//! `INFRASTRUCTOR_SCHEMATHESIS`), with the validator beside it, and says so when it is not.

use std::path::PathBuf;
use std::process::Command;

use infrastructor_e2e::{controller_config, path, services_required, temp_dir, Backend};
use infrastructor_e2e::{TestAgent, TestController};

fn schemathesis() -> Option<PathBuf> {
    if let Some(named) = std::env::var_os("INFRASTRUCTOR_SCHEMATHESIS") {
        return Some(PathBuf::from(named));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("st"))
        .find(|candidate| candidate.is_file())
}

#[tokio::test]
async fn the_api_conforms_to_its_openapi_document() {
    let Some(st) = schemathesis() else {
        assert!(
            !services_required(),
            "schemathesis is required: install it (pip install schemathesis) or set \
             INFRASTRUCTOR_SCHEMATHESIS"
        );
        eprintln!("skipping: schemathesis (st) is not installed");
        return;
    };
    let dir = temp_dir();
    let mut config = controller_config(&path(&dir, "controller"), &Backend::Sqlite);
    // The fuzzer sends thousands of requests from one token; limits have their own tests.
    config.rate_limit.per_second = 100_000.0;
    config.rate_limit.burst = 100_000;
    let controller = TestController::start(config).await;
    let root = path(&dir, "managed");
    std::fs::create_dir_all(&root).unwrap();
    let policy = infrastructor_e2e::change_policy(&root, &[]);
    let (agent, _) =
        TestAgent::connected_with_changes(&controller, &path(&dir, "agent"), policy).await;

    let config_file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/schemathesis.toml");
    let schema = format!("http://{}/api/v1/openapi.json", controller.http_addr);
    let base = format!("http://{}", controller.http_addr);
    let token = controller.admin_token.clone();
    // Schemathesis keeps a cache where it runs; not in the source tree.
    let scratch = path(&dir, "schemathesis");
    std::fs::create_dir_all(&scratch).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .arg("--config-file")
            .arg(config_file)
            .args([
                "run",
                &schema,
                "--url",
                &base,
                "--checks",
                "all",
                "--no-color",
            ])
            .env("INFRASTRUCTOR_FUZZ_TOKEN", token)
            .current_dir(scratch)
            .output()
    })
    .await
    .unwrap()
    .expect("schemathesis runs");
    agent.stop().await;
    controller.shutdown().await;
    let report = String::from_utf8_lossy(&output.stdout);
    // The summary (phases, operations, cases generated) in the test's output, pass or fail.
    let lines: Vec<&str> = report.lines().collect();
    eprintln!("{}", lines[lines.len().saturating_sub(30)..].join("\n"));
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
