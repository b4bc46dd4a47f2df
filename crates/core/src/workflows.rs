//! The `[workflows]` settings: Step Functions-compatible state machines run by the gateway
//! (the engine is `modelgate_flows`, the runtime and API are in the server).

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// `[workflows]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowsConfig {
    /// Serve the Step Functions API and run executions in this process.
    pub enabled: bool,
    /// How long a replica holds the tasks of an execution it runs; it renews the lease every
    /// third of this, and another replica takes over the execution (running the unfinished
    /// tasks again) when a crashed replica stops renewing.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often a replica looks for executions whose wait, retry backoff or timeout is due,
    /// and for executions whose lease lapsed.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Tasks run at once by this process (model calls, HTTP calls, e-mails).
    pub max_running_tasks: usize,
    /// A task with no `TimeoutSeconds` is stopped after this (Step Functions' own default is a
    /// year; a gateway wants a bound).
    #[serde(with = "humantime_serde")]
    pub default_task_timeout: Duration,
    /// History events one execution may have; going over fails it (Step Functions: 25,000).
    pub max_history_events: u64,
    /// Networks `http:invoke` tasks may reach although they are private, loopback or
    /// link-local (CIDRs); everything else internal is refused.
    pub http_allow: Vec<IpNet>,
    /// `[workflows.smtp]`: the mail server e-mail tasks send through.
    pub smtp: Option<SmtpConfig>,
    /// `[[workflows.tables]]`: the key attributes of the document-store tables that DynamoDB
    /// `putItem` / `getItem` / `deleteItem` tasks use (a table not listed here is refused).
    pub tables: Vec<TableConfig>,
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lease: Duration::from_secs(15),
            poll: Duration::from_millis(250),
            max_running_tasks: 64,
            default_task_timeout: Duration::from_secs(3600),
            max_history_events: 25_000,
            http_allow: Vec::new(),
            smtp: None,
            tables: Vec::new(),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain text (a local relay or a test server).
    None,
    /// Plain, upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the start (port 465).
    Tls,
}

/// `[workflows.smtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The server's host name.
    pub host: String,
    /// Its port (default: 25 without TLS, 587 with STARTTLS, 465 with TLS).
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The user to log in as (no login without one).
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The sender when a task names none (`Modelgate <flows@example.com>`).
    pub from: String,
    /// How long one send may take.
    #[serde(default = "smtp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn smtp_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[[workflows.tables]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The table name tasks use (`TableName`).
    pub name: String,
    /// The partition key attribute.
    pub partition_key: String,
    /// The sort key attribute, if the table has one.
    pub sort_key: Option<String>,
}

impl WorkflowsConfig {
    /// Check the settings, naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease < Duration::from_secs(1) {
            return Err("workflows.lease must be at least 1s".into());
        }
        if self.poll.is_zero() || self.poll > self.lease {
            return Err("workflows.poll must be more than 0 and at most workflows.lease".into());
        }
        if self.max_running_tasks == 0 {
            return Err("workflows.max_running_tasks must be at least 1".into());
        }
        if self.max_history_events < 100 {
            return Err("workflows.max_history_events must be at least 100".into());
        }
        if let Some(s) = &self.smtp {
            if s.host.trim().is_empty() {
                return Err("workflows.smtp.host must not be empty".into());
            }
            if !s.from.contains('@') {
                return Err("workflows.smtp.from must be an e-mail address".into());
            }
            if s.password_env.is_some() && s.username.is_none() {
                return Err("workflows.smtp.password_env needs workflows.smtp.username".into());
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tables {
            if t.name.is_empty() || t.partition_key.is_empty() {
                return Err("workflows.tables: name and partition_key must not be empty".into());
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!(
                    "workflows.tables: the table '{}' is listed twice",
                    t.name
                ));
            }
        }
        Ok(())
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
    }
}
