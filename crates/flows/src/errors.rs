//! Errors an execution raises: an error name and a cause, as Step Functions reports them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `States.ALL`: matches every error except `States.Runtime` and `States.DataLimitExceeded`.
pub const ALL: &str = "States.ALL";
/// A task failed; as a matcher, every error except `States.Timeout`.
pub const TASK_FAILED: &str = "States.TaskFailed";
/// A task, a state or the execution ran longer than its `TimeoutSeconds`.
pub const TIMEOUT: &str = "States.Timeout";
/// A task sent no heartbeat within `HeartbeatSeconds`.
pub const HEARTBEAT_TIMEOUT: &str = "States.HeartbeatTimeout";
/// A definition or data problem at run time (a bad path, a wrong type); never caught.
pub const RUNTIME: &str = "States.Runtime";
/// An intrinsic function failed.
pub const INTRINSIC_FAILURE: &str = "States.IntrinsicFailure";
/// A Map state's failures went over its tolerated count or percentage.
pub const TOLERATED_FAILURE: &str = "States.ExceedToleratedFailureThreshold";
/// A payload went over the size limit; never caught.
pub const DATA_LIMIT: &str = "States.DataLimitExceeded";
/// A branch or iteration ended because a sibling failed.
pub const BRANCH_FAILED: &str = "States.BranchFailed";
/// The task's resource refused it (no permission).
pub const PERMISSIONS: &str = "States.Permissions";
/// The answer of a task could not be used (not JSON where JSON was needed).
pub const RESULT_WRITER: &str = "States.ResultWriterFailed";

/// An error with its cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}: {cause}")]
pub struct Failure {
    /// The error name (`States.TaskFailed`, `Bedrock.ValidationException`, a Fail state's).
    pub error: String,
    /// What happened.
    pub cause: String,
}

impl Failure {
    /// An error named `error` caused by `cause`.
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            cause: cause.into(),
        }
    }

    /// A `States.Runtime` error.
    pub fn runtime(cause: impl Into<String>) -> Self {
        Self::new(RUNTIME, cause)
    }

    /// A `States.IntrinsicFailure`.
    pub fn intrinsic(cause: impl Into<String>) -> Self {
        Self::new(INTRINSIC_FAILURE, cause)
    }

    /// Whether Retry and Catch may handle it (never `States.Runtime` or a data limit).
    pub fn catchable(&self) -> bool {
        self.error != RUNTIME && self.error != DATA_LIMIT
    }

    /// Whether an `ErrorEquals` list matches this error.
    pub fn matches(&self, names: &[String]) -> bool {
        if !self.catchable() {
            return false;
        }
        names
            .iter()
            .any(|n| n == &self.error || n == ALL || (n == TASK_FAILED && self.error != TIMEOUT))
    }

    /// The error output a Catch passes on: `{"Error": …, "Cause": …}`.
    pub fn output(&self) -> Value {
        json!({"Error": self.error, "Cause": self.cause})
    }
}
