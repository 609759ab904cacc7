//! MCP resources: what a client may read or attach as context — the device inventory, one
//! device at a glance, a device's latest checks, a change. Each URI maps to a read
//! operation, run through the same pipeline as a tool call (scope, timing).

use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use serde_json::json;

use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::operations::params::DeviceRef;
use crate::operations::pipeline::{How, Outcome};
use crate::operations::{by_id, Arguments};
use crate::services::Services;

const SCHEME: &str = "infrastructor://";
const JSON: &str = "application/json";
/// Devices listed one by one in `resources/list`; the inventory resource has them all.
const LISTED_DEVICES: usize = 200;

/// A resource URI, parsed: the operation that reads it and its arguments.
fn route(uri: &str) -> Result<(&'static str, Arguments)> {
    let unknown = || Error::NotFound(format!("no resource {uri:?}; see resources/templates/list"));
    let path = uri.strip_prefix(SCHEME).ok_or_else(unknown)?;
    let argument = |name: &str, value: &str| Arguments::from_iter([(name.into(), json!(value))]);
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["devices"] => Ok(("list_devices", Arguments::new())),
        ["devices", device] => Ok(("device_overview", argument("device", device))),
        ["devices", device, "checks"] => Ok(("list_checks", argument("device", device))),
        ["changes", change] => Ok(("get_change", argument("change", change))),
        _ => Err(unknown()),
    }
}

/// Runs read operation `operation` through the pipeline.
async fn run(
    services: &Services,
    ctx: &Ctx,
    operation: &str,
    arguments: Arguments,
) -> Result<serde_json::Value> {
    let entry = by_id(operation).ok_or_else(|| Error::Internal(format!("no {operation}")))?;
    let how = How::Mcp {
        tool: "resources/read",
        confirmation: None,
    };
    match entry.call(services, ctx, how, arguments).await? {
        Outcome::Done(value) => Ok(value),
        _ => Err(Error::Internal(format!("{operation} is not a read"))),
    }
}

/// Reads `uri` as JSON text.
pub async fn read(services: &Services, ctx: &Ctx, uri: &str) -> Result<ReadResourceResult> {
    let (operation, arguments) = route(uri)?;
    let value = run(services, ctx, operation, arguments).await?;
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let contents = ResourceContents::text(text, uri).with_mime_type(JSON);
    Ok(ReadResourceResult::new(vec![contents]))
}

/// The inventory, and each device (up to [`LISTED_DEVICES`]) as a resource of its own.
pub async fn list(services: &Services, ctx: &Ctx) -> Result<ListResourcesResult> {
    let inventory = Resource::new(format!("{SCHEME}devices"), "devices")
        .with_title("Device inventory")
        .with_description("Every device with its kind, status and headline metrics")
        .with_mime_type(JSON);
    let mut resources = vec![inventory];
    let devices = run(services, ctx, "list_devices", Arguments::new()).await?;
    let names = devices
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|device| device["name"].as_str());
    for name in names.take(LISTED_DEVICES) {
        // Names are validated when devices are created; a stored name that would not make a
        // clean URI is left out rather than listed.
        if DeviceRef::try_from(name.to_string()).is_err() {
            continue;
        }
        let resource = Resource::new(format!("{SCHEME}devices/{name}"), name)
            .with_title(format!("Device {name}"))
            .with_description("The device, its capabilities and check verdicts")
            .with_mime_type(JSON);
        resources.push(resource);
    }
    Ok(ListResourcesResult::with_all_items(resources))
}

pub fn templates() -> ListResourceTemplatesResult {
    let template = |uri: &str, name: &str, title: &str, description: &str| {
        ResourceTemplate::new(format!("{SCHEME}{uri}"), name)
            .with_title(title)
            .with_description(description)
            .with_mime_type(JSON)
    };
    ListResourceTemplatesResult::with_all_items(vec![
        template(
            "devices/{device}",
            "device",
            "One device",
            "A device (by ID or name) with its capabilities and every check's newest verdict",
        ),
        template(
            "devices/{device}/checks",
            "device-checks",
            "A device's latest checks",
            "The newest report of every check of the device, with its evidence",
        ),
        template(
            "changes/{change}",
            "change",
            "One configuration change",
            "A change's state, requester and per-device diffs, validator and health results",
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_map_to_read_operations() {
        assert_eq!(route("infrastructor://devices").unwrap().0, "list_devices");
        let (operation, arguments) = route("infrastructor://devices/nas/checks").unwrap();
        assert_eq!(
            (operation, &arguments["device"]),
            ("list_checks", &json!("nas"))
        );
        assert_eq!(
            route("infrastructor://changes/ab12").unwrap().0,
            "get_change"
        );
        for unknown in [
            "file:///etc/passwd",
            "infrastructor://devices/a/b/c",
            "infrastructor://",
        ] {
            assert!(route(unknown).is_err(), "{unknown}");
        }
    }
}
