//! The device registry: list, look up, register agentless hosts, delete (revoke), and the
//! SSH key agentless hosts trust.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::params::DevicePath;
use super::{Effect, Input, Meta, Method, Nothing, Operation, Tool};
use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::services::devices::{CreateAgentlessDevice as NewAgentless, DeviceView, SshPublicKey};
use crate::services::Services;

pub struct ListDevices;

impl Operation for ListDevices {
    const META: Meta = Meta {
        id: "list_devices",
        method: Method::Get,
        path: "/devices",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "List devices with status and headline metrics",
        description: "Every device the controller knows, agents and agentless hosts, with its \
            connection status and newest CPU, memory and load samples.",
        success: 200,
        tool: Some(Tool::read(
            "list_devices",
            "List devices",
            "Start here to see the fleet. Returns every device (agents and agentless hosts) \
            with its kind, status (online, offline, never_connected, agentless), last contact \
            and headline CPU, memory and load. Changes nothing. Example: {}",
        )),
    };
    type Path = Nothing;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Vec<DeviceView>;

    async fn run(services: &Services, ctx: &Ctx, _: Input<Self>) -> Result<Self::Response> {
        services.list_devices(ctx).await
    }
}

pub struct CreateAgentlessDevice;

impl Operation for CreateAgentlessDevice {
    const META: Meta = Meta {
        id: "create_agentless_device",
        method: Method::Post,
        path: "/devices",
        scope: Scope::Operate,
        effect: Effect::Mutation,
        summary: "Register an agentless device reached over SSH",
        description: "Adds a host without an agent: the controller reaches it over SSH as \
            ssh_user at ssh_address, trusting only the pinned ssh_host_key (or the configured \
            known_hosts). Install the controller's SSH public key on the host first.",
        success: 201,
        tool: Some(Tool {
            name: "add_agentless_device",
            title: "Add an agentless device",
            description: "Use when the operator wants a host without an agent managed over \
                SSH. The first call returns a plan and a confirmation_id; nothing is added \
                until the call is repeated with it. Returns the registered device. The host \
                must already trust the controller's SSH key (GET /api/v1/ssh-public-key). \
                Example: {\"name\": \"nas\", \"ssh_address\": \"nas.home:22\", \
                \"ssh_user\": \"monitor\", \"ssh_host_key\": \"ssh-ed25519 AAAA...\"}",
            destructive: false,
            idempotent: false,
            open_world: false,
            defaults: &[],
        }),
    };
    type Path = Nothing;
    type Query = Nothing;
    type Body = NewAgentless;
    type Response = DeviceView;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.create_agentless_device(ctx, input.body).await
    }
}

pub struct GetDevice;

impl Operation for GetDevice {
    const META: Meta = Meta {
        id: "get_device",
        method: Method::Get,
        path: "/devices/{device}",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "One device by ID or name",
        description: "The device's kind, status, addresses, agent version and headline metrics.",
        success: 200,
        tool: None,
    };
    type Path = DevicePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = DeviceView;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        services.get_device(ctx, input.path.device.as_str()).await
    }
}

pub struct DeleteDevice;

/// What a deletion answers over surfaces that carry a body.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    pub deleted: String,
}

impl Operation for DeleteDevice {
    const META: Meta = Meta {
        id: "delete_device",
        method: Method::Delete,
        path: "/devices/{device}",
        scope: Scope::Admin,
        effect: Effect::Mutation,
        summary: "Delete a device; revokes its certificate and ends its stream",
        description: "Removes the device and its history from the registry. An agent's \
            certificate is revoked at once and its stream closed; it cannot reconnect without \
            enrolling again.",
        success: 204,
        tool: Some(Tool {
            name: "remove_device",
            title: "Remove a device",
            description: "Use only when the operator asks to remove a host from management. \
                Deletes the device and its history; an agent's certificate is revoked at \
                once. The first call returns the device as a plan and a confirmation_id; the \
                repeated call with it deletes. Needs an admin token. Example: \
                {\"device\": \"old-nas\"}",
            destructive: true,
            idempotent: true,
            open_world: false,
            defaults: &[],
        }),
    };
    type Path = DevicePath;
    type Query = Nothing;
    type Body = Nothing;
    type Response = Deleted;

    async fn run(services: &Services, ctx: &Ctx, input: Input<Self>) -> Result<Self::Response> {
        let device = input.path.device.as_str();
        services.delete_device(ctx, device).await?;
        Ok(Deleted {
            deleted: device.to_string(),
        })
    }

    async fn preview(services: &Services, ctx: &Ctx, input: &Input<Self>) -> Result<Value> {
        let device = services.get_device(ctx, input.path.device.as_str()).await?;
        Ok(serde_json::to_value(device).unwrap_or(Value::Null))
    }
}

pub struct GetSshPublicKey;

impl Operation for GetSshPublicKey {
    const META: Meta = Meta {
        id: "ssh_public_key",
        method: Method::Get,
        path: "/ssh-public-key",
        scope: Scope::Read,
        effect: Effect::Read,
        summary: "The controller's SSH public key, for authorized_keys on agentless hosts",
        description: "One line to append to ~/.ssh/authorized_keys of the account the \
            controller logs in as on an agentless host.",
        success: 200,
        tool: None,
    };
    type Path = Nothing;
    type Query = Nothing;
    type Body = Nothing;
    type Response = SshPublicKey;

    async fn run(services: &Services, ctx: &Ctx, _: Input<Self>) -> Result<Self::Response> {
        services.ssh_public_key(ctx)
    }
}
