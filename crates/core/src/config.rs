//! The configuration file: one TOML document, every key optional, unknown keys rejected.
//!
//! Loading is parse (serde, `deny_unknown_fields`) then validate (pure, no IO); a failure is one
//! message naming the file, the key and the reason. With no file the defaults below serve the
//! embedded models on `127.0.0.1:8080`. `docs/configuration.md` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use modelgate_providers::{LocalEmbedderSettings, LocalLlamaSettings};
use serde::Deserialize;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// The embedded (in-process) models.
    pub local: LocalConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger gets 413. Default 20 MiB.
    pub max_body_bytes: usize,
    /// How long in-flight requests and streams may take to finish after SIGTERM/SIGINT.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 20 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (human) or `json` (one object per line). Default `text`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `modelgate=debug,info`. `RUST_LOG` overrides it.
    /// Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[local]`: the embedded models.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Serve the embedded models. Default `true`.
    pub enabled: bool,
    /// Download missing model files when `serve` starts. Default `true`.
    pub auto_pull: bool,
    /// `[local.chat]`: SmolLM2-135M-Instruct via llama.cpp.
    pub chat: LocalLlamaSettings,
    /// `[local.embeddings]`: all-MiniLM-L6-v2 via candle.
    pub embeddings: LocalEmbedderSettings,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auto_pull: true,
            chat: LocalLlamaSettings::default(),
            embeddings: LocalEmbedderSettings::default(),
        }
    }
}

/// A configuration that cannot be used; the message names file, key and reason.
#[derive(Debug, thiserror::Error)]
#[error("configuration error in {file}: {reason}")]
pub struct ConfigError {
    /// The file (or `<defaults>`).
    pub file: String,
    /// What is wrong, naming the key.
    pub reason: String,
}

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            reason: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parse and validate TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.into(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        config.validate().map_err(|reason| ConfigError {
            file: file.into(),
            reason,
        })?;
        Ok(config)
    }

    /// Cross-field checks. Pure: no IO.
    pub fn validate(&self) -> Result<(), String> {
        if self.server.max_body_bytes == 0 {
            return Err("key `server.max_body_bytes` must be greater than 0".into());
        }
        self.local.chat.validate()?;
        self.local.embeddings.validate()
    }
}

/// Where models and state live: `$MODELGATE_HOME`, else `~/.local/share/modelgate`.
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("MODELGATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("modelgate");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/modelgate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", "x.toml").unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert!(c.local.enabled);
        assert_eq!(c.local.chat.parallel, 4);
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
            [server]
            listen = "0.0.0.0:9000"
            max_body_bytes = 1024
            shutdown_grace = "5s"
            [log]
            format = "json"
            level = "debug"
            [local]
            auto_pull = false
            [local.chat]
            parallel = 2
            context_size = 2048
            [local.embeddings]
            batch_size = 8
            "#,
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.local.chat.parallel, 2);
        assert_eq!(c.local.embeddings.batch_size, 8);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = Config::parse("[server]\nlisten_addr = \"x\"\n", "gw.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("gw.toml"), "{msg}");
        assert!(msg.contains("listen_addr"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn bad_values_are_rejected_with_key() {
        let e = Config::parse("[local.chat]\nparallel = 0\n", "gw.toml").unwrap_err();
        assert!(e.to_string().contains("local.chat.parallel"), "{e}");
        let e = Config::parse("[server]\nshutdown_grace = \"soon\"\n", "gw.toml").unwrap_err();
        assert!(e.to_string().contains("shutdown_grace"), "{e}");
        let e = Config::parse("[local.chat]\ncontext_size = 100000\n", "gw.toml").unwrap_err();
        assert!(e.to_string().contains("local.chat.context_size"), "{e}");
    }
}
