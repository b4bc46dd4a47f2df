//! The workflow engine: Amazon States Language (ASL) state machines as AWS Step Functions runs
//! them.
//!
//! - [`definition`] parses and validates a definition (errors name the state and field).
//! - [`paths`] is the JSONPath data flow: InputPath → Parameters → result → ResultSelector →
//!   ResultPath → OutputPath, payload templates (`"x.$"`), the context object (`$$`) and
//!   variables (`$name`).
//! - [`intrinsics`] evaluates the `States.*` intrinsic functions.
//! - [`jsonata`] evaluates `{% %}` expressions of the JSONata query language (`seuil`).
//! - [`choice`] evaluates Choice rules.
//! - [`engine`] is the deterministic core: a [`engine::Run`] is the whole state of an
//!   execution; applying an event (start, a task's result, the clock) changes it, appends
//!   history events and returns the tasks to run. It does no IO and reads no clock: the
//!   runtime (in the server) runs tasks, persists the run and its history, and feeds results
//!   back.

pub mod choice;
pub mod definition;
pub mod engine;
pub mod errors;
pub mod intrinsics;
pub mod jsonata;
pub mod paths;

pub use definition::{Definition, DefinitionError};
pub use engine::{Action, HistoryEvent, Run, RunStatus, TaskCall};
pub use errors::Failure;
