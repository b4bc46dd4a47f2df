//! Modelgate's core: configuration (parse → validate → build), the embedded model files, the
//! model registry, and the request pipeline every model call goes through.
//!
//! The pipeline's layers are listed, in order, in [`pipeline::build`]. A call carries its
//! [`CallContext`] through them and ends in exactly one [`Outcome`].

pub mod access;
pub mod alerts;
pub mod cache;
mod chain;
pub mod config;
pub mod context;
mod degraded;
pub mod endpoints;
pub mod gateway;
pub mod guardrails;
pub mod hooks;
pub mod invocations;
pub mod jobs;
pub mod keys;
pub mod local;
pub mod metrics;
pub mod model_id;
pub mod models;
pub mod outcome;
pub mod paging;
pub mod pipeline;
pub mod policy;
pub mod prompts;
pub mod registry;
pub mod resilience;
pub mod retention;
pub mod routing;
pub mod semantic;
mod stream;
pub mod traces;
pub mod upstream;
pub mod usage;
mod validate;
pub mod workflows;

pub use config::{Config, ConfigError};
pub use context::{CallContext, Dialect, Principal};
pub use gateway::{Gateway, GatewayBuilder};
pub use outcome::{Outcome, OutcomeSink};
pub use pipeline::{Answer, Call, Layer, Next, Operation, Served, ServedBy};
pub use registry::{EndpointStatus, ModelInfo, ModelPolicy, ServedModel};
pub use validate::validate_chat;
