//! The Modelgate server: HTTP front doors over the core gateway.
//!
//! The `modelgate` binary (`main.rs`) is the CLI around this library; integration tests start
//! the same router in-process.

pub mod admin;
pub mod anthropic;
pub mod app;
pub mod auth;
pub mod bedrock;
pub mod completions;
pub mod endpoints;
pub mod errors;
pub mod events;
pub mod flows;
pub mod guardrails;
pub mod jobs;
pub mod jwt;
pub mod native;
pub mod openai;
pub mod prompts;
pub mod responses;
pub mod sigv4;
pub mod state;
pub mod streaming;
