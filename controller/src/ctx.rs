//! The context every service method takes first: who is calling and under which request ID.

use crate::auth::Principal;

#[derive(Clone, Debug)]
pub struct Ctx {
    pub principal: Principal,
    /// Correlation ID: from `x-request-id` or generated; logged with every line of the operation.
    pub request_id: String,
}

impl Ctx {
    pub fn new(principal: Principal, request_id: impl Into<String>) -> Self {
        Self {
            principal,
            request_id: request_id.into(),
        }
    }

    /// For the controller's own work (CLI, bootstrap, background jobs).
    pub fn system(what: &str) -> Self {
        Self::new(Principal::system(what), uuid::Uuid::new_v4().to_string())
    }
}
