//! Every operation the controller offers, as a type. Each implements [`Operation`]: its
//! [`Meta`] (ID, route, scope, effect, summary, description), its request parts (path, query,
//! body: typed and validated when decoded), its response type, and one `run` that calls a
//! service method. [`registry::REGISTRY`] lists them once; the REST routes, the OpenAPI
//! document, the MCP tools and the runner of approved requests all come from that list, and
//! every call goes through the one [`pipeline`].
//!
//! - [`params`]: validated path parameters and shared request parts.
//! - [`pipeline`]: scope → decode → confirm/approval → run → audit → timing, for every surface.
//! - [`confirm`]: single-use confirmation IDs for MCP mutations (plan → confirm).
//! - [`registry`]: the list, and the type-erased entry each surface iterates.
//! - [`devices`], [`observe`], [`containers`], [`changes`], [`jobs`], [`admin`], [`approvals`]:
//!   the operations (and [`analytics`], [`applications`]).

pub mod admin;
pub mod alerts;
pub mod analytics;
pub mod applications;
pub mod approvals;
pub mod backups;
pub mod changes;
pub mod confirm;
pub mod containers;
pub mod devices;
pub mod dr;
pub mod jobs;
pub mod observe;
pub mod params;
pub mod pipeline;
pub mod registry;

use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::auth::Scope;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::services::jobs::JobClaims;
use crate::services::Services;

pub use registry::{by_id, by_route, by_tool, Registered, REGISTRY};

/// Arguments in their flat form: path, query and body fields side by side, as MCP tool
/// arguments, audit records and held requests carry them.
pub type Arguments = Map<String, Value>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Delete => "delete",
        }
    }
}

/// What calling an operation does to the world; it decides auditing, plan → confirm,
/// approval holds and the MCP annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Reads stored state.
    Read,
    /// Runs checks on hosts now and reports; changes nothing.
    Probe,
    /// A dry run with privileged side effects (validators run as root on hosts): audited,
    /// never held.
    DryRun,
    /// Changes state (devices, tokens, files on hosts): audited, plan → confirm over MCP, held
    /// for approval when the caller's mutations need it.
    Mutation,
    /// A human's decision on a held request: audited, never held, REST-only (an MCP client
    /// must not approve its own request).
    Decision,
}

/// Everything about an operation that is not code.
#[derive(Debug)]
pub struct Meta {
    pub id: &'static str,
    pub method: Method,
    /// axum path syntax under `/api/v1`, e.g. `/devices/{device}`.
    pub path: &'static str,
    pub scope: Scope,
    pub effect: Effect,
    /// One line, for listings.
    pub summary: &'static str,
    /// When to use it, what it returns, its side effects.
    pub description: &'static str,
    /// The REST status of success: 200, 201 (created) or 204 (no body).
    pub success: u16,
    /// How it is offered to a model over MCP, if it is: plumbing (join tokens, the SSH key,
    /// audit paging) and reads folded into a richer tool stay REST-only.
    pub tool: Option<Tool>,
}

/// An MCP tool: an operation as a model sees it.
#[derive(Debug)]
pub struct Tool {
    /// Named for what an operator asks, e.g. `deploy_configuration_change`.
    pub name: &'static str,
    pub title: &'static str,
    /// For a model: when to use it, what it returns, its side effects, an example call.
    pub description: &'static str,
    /// May change or delete something that cannot simply be added back (`destructiveHint`).
    pub destructive: bool,
    /// Calling it again with the same arguments changes nothing more (`idempotentHint`).
    pub idempotent: bool,
    /// Reaches out to the managed hosts rather than only the controller (`openWorldHint`).
    pub open_world: bool,
    /// Arguments a model gets unless it says otherwise (compact answers by default).
    pub defaults: &'static [(&'static str, &'static str)],
}

impl Tool {
    /// A tool over a read of the controller's own state.
    pub const fn read(name: &'static str, title: &'static str, description: &'static str) -> Self {
        Self {
            name,
            title,
            description,
            destructive: false,
            idempotent: true,
            open_world: false,
            defaults: &[],
        }
    }
}

impl Meta {
    pub fn mutating(&self) -> bool {
        matches!(self.effect, Effect::Mutation | Effect::Decision)
    }

    pub fn audited(&self) -> bool {
        matches!(
            self.effect,
            Effect::DryRun | Effect::Mutation | Effect::Decision
        )
    }

    /// Whether a request for it may be held for another person's approval.
    pub fn holdable(&self) -> bool {
        self.effect == Effect::Mutation
    }

    /// Offered as an MCP tool. Never a human's decision: an MCP client must not approve its
    /// own request.
    pub fn mcp(&self) -> bool {
        self.tool.is_some() && self.effect != Effect::Decision
    }
}

/// One part of a request (path, query or body): a deserializable, documented type whose
/// decoding validates it.
pub trait Part: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static> Part for T {}

/// An operation: its metadata, request parts, response and the one service call it makes.
pub trait Operation: Send + Sync + 'static {
    const META: Meta;
    type Path: Part;
    type Query: Part;
    type Body: Part;
    type Response: Serialize + JsonSchema + Send;

    /// Whether the plan an MCP mutation shows first is itself a dry run on hosts (a change's
    /// validators run there), and so audited like one.
    const PLAN_IS_DRY_RUN: bool = false;

    /// Long-running: the call queues a durable job (`202 Accepted` with the job) and the
    /// job runner calls `run` outside the request; `?wait=` (REST) or the MCP call waits
    /// for its result.
    const JOB: bool = false;

    fn run(
        services: &Services,
        ctx: &Ctx,
        input: Input<Self>,
    ) -> impl Future<Output = Result<Self::Response>> + Send;

    /// A job's devices and the resources it changes on them, resolved before it is queued
    /// (a resource another live job holds refuses this one, naming the holder).
    fn claims(
        _services: &Services,
        _ctx: &Ctx,
        _input: &Input<Self>,
    ) -> impl Future<Output = Result<JobClaims>> + Send {
        async { Ok(JobClaims::default()) }
    }

    /// Finishes a job that a controller crash (or a dead replica) interrupted: reconcile
    /// with what the hosts say, then go on or undo, deterministically. By default it runs
    /// again, for operations whose `run` is safe to repeat.
    fn resume(
        services: &Services,
        ctx: &Ctx,
        input: Input<Self>,
    ) -> impl Future<Output = Result<Self::Response>> + Send {
        Self::run(services, ctx, input)
    }

    /// Why a job that answered `response` still failed (a deploy that was rolled back);
    /// `None` when it succeeded.
    fn failure(_response: &Self::Response) -> Option<String> {
        None
    }

    /// What a mutation would do, shown before it runs (the MCP plan, the approver's view):
    /// by default the checked request itself.
    fn preview(
        _services: &Services,
        _ctx: &Ctx,
        input: &Input<Self>,
    ) -> impl Future<Output = Result<Value>> + Send {
        let arguments = Value::Object(input.to_arguments());
        async move { Ok(arguments) }
    }
}

/// A decoded, validated request.
pub struct Input<O: Operation + ?Sized> {
    pub path: O::Path,
    pub query: O::Query,
    pub body: O::Body,
}

impl<O: Operation + ?Sized> Input<O> {
    /// Decodes the flat form: path and query fields are picked out by name, the rest is the
    /// body. A name no part declares is refused.
    pub fn from_arguments(mut arguments: Arguments) -> Result<Self> {
        let path_names = field_names::<O::Path>();
        let query_names = field_names::<O::Query>();
        let body_names = field_names::<O::Body>();
        if let Some(unknown) = arguments.keys().find(|name| {
            ![&path_names, &query_names, &body_names]
                .iter()
                .any(|names| names.contains(name))
        }) {
            return Err(Error::invalid(format!("unknown argument {unknown:?}")));
        }
        let path = decode(take(&mut arguments, &path_names))?;
        let query = decode(take(&mut arguments, &query_names))?;
        let body = decode(arguments)?;
        Ok(Self { path, query, body })
    }

    /// The flat form, the inverse of [`Self::from_arguments`].
    pub fn to_arguments(&self) -> Arguments {
        let mut arguments = Arguments::new();
        for part in [
            as_object(&self.path),
            as_object(&self.query),
            as_object(&self.body),
        ] {
            arguments.extend(part);
        }
        arguments
    }
}

fn as_object(part: &impl Serialize) -> Arguments {
    match serde_json::to_value(part) {
        Ok(Value::Object(fields)) => fields,
        _ => Arguments::new(),
    }
}

fn take(arguments: &mut Arguments, names: &[String]) -> Arguments {
    names
        .iter()
        .filter_map(|name| arguments.remove_entry(name))
        .collect()
}

fn decode<T: Part>(fields: Arguments) -> Result<T> {
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| Error::invalid(format!("invalid arguments: {e}")))
}

/// The property names a part's schema declares.
pub fn field_names<T: JsonSchema>() -> Vec<String> {
    let schema = schemars::schema_for!(T);
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

/// A request part with no fields (an operation without query parameters or body).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nothing {}
