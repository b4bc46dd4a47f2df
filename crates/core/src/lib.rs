//! Modelgate's core: configuration (parse → validate → build), the embedded model files, and
//! the [`Gateway`] that runs every request through the policy pipeline to a provider.

pub mod config;
pub mod gateway;
pub mod local;
pub mod model_id;
pub mod models;
pub mod resilience;
pub mod upstream;

pub use config::{Config, ConfigError};
pub use gateway::{EndpointStatus, Gateway, ModelInfo, ModelPolicy, Served, ServedModel};
