//! The OpenAPI document, generated from the operation table.

use serde_json::{json, Map, Value};

use crate::operations::OPERATIONS;

pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let mut parameters: Vec<Value> = Vec::new();
        if operation.path.contains("{device}") {
            parameters.push(json!({"name": "device",
                "in": "path",
                "required": true,
                "description": "device ID or name",
                "schema": {"type": "string"}}));
        }
        if operation.path.contains("{change}") {
            parameters.push(json!({"name": "change",
                "in": "path",
                "required": true,
                "description": "change ID",
                "schema": {"type": "string"}}));
        }
        for (name, description) in operation.query {
            parameters.push(json!({"name": name,
                "in": "query",
                "required": operation.id == "query_metrics" && *name == "series",
                "description": description,
                "schema": {"type": "string"}}));
        }
        let entry = paths
            .entry(format!("/api/v1{}", operation.path))
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(
                operation.method.to_string(),
                json!({
                    "operationId": operation.id,
                    "summary": operation.summary,
                    "parameters": parameters,
                    "security": [{"bearer": []}],
                    "x-required-scope": operation.scope.as_str(),
                    "responses": {
                        "200": {"description": "success"},
                        "400": {"description": "invalid input", "content": {"application/problem+json": {}}},
                        "401": {"description": "missing or invalid token"},
                        "403": {"description": "token lacks the required scope"},
                        "404": {"description": "not found"}
                    }
                }),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Infrastructor controller API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}
