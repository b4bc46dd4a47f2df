//! E-mail for workflow tasks: SMTP through `lettre` (plain, STARTTLS or TLS; optional login)
//! and `minijinja` templates for the gateway's own `email:send` resource.

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use modelgate_core::workflows::{SmtpConfig, SmtpSecurity};
use modelgate_flows::Failure;
use serde_json::Value;

/// One message.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// The sender (default: `workflows.smtp.from`).
    pub from: Option<String>,
    /// Recipients.
    pub to: Vec<String>,
    /// Copies.
    pub cc: Vec<String>,
    /// Blind copies.
    pub bcc: Vec<String>,
    /// Reply-To.
    pub reply_to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Plain text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
}

/// Sends mail through the configured server.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

fn mailbox(s: &str, field: &str) -> Result<Mailbox, Failure> {
    s.parse::<Mailbox>().map_err(|e| {
        Failure::new(
            "Email.InvalidAddress",
            format!("{field}: '{s}' is not an e-mail address: {e}"),
        )
    })
}

/// Render a template with `vars` (a missing variable is an error, not an empty string).
pub fn render(template: &str, vars: &Value) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.render_str(template, vars).map_err(|e| e.to_string())
}

impl Mailer {
    /// A mailer for `[workflows.smtp]`.
    pub fn new(c: &SmtpConfig) -> anyhow::Result<Self> {
        let builder = match c.security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
                .port(c.port.unwrap_or(25)),
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)?
                    .port(c.port.unwrap_or(587))
            }
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)?.port(c.port.unwrap_or(465))
            }
        };
        let mut builder = builder.timeout(Some(c.timeout));
        if let Some(user) = &c.username {
            let password = match &c.password_env {
                Some(var) => std::env::var(var).map_err(|_| {
                    anyhow::anyhow!("workflows.smtp.password_env: {var} is not set")
                })?,
                None => String::new(),
            };
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from = c
            .from
            .parse::<Mailbox>()
            .map_err(|e| anyhow::anyhow!("workflows.smtp.from: {e}"))?;
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }

    /// Send `mail`; its message id.
    pub async fn send(&self, mail: Mail) -> Result<String, Failure> {
        if mail.to.is_empty() && mail.cc.is_empty() && mail.bcc.is_empty() {
            return Err(Failure::new(
                "Email.InvalidAddress",
                "The message has no recipient",
            ));
        }
        let mut b = Message::builder().subject(mail.subject.clone());
        b = b.from(match &mail.from {
            Some(f) => mailbox(f, "From")?,
            None => self.from.clone(),
        });
        for a in &mail.to {
            b = b.to(mailbox(a, "To")?);
        }
        for a in &mail.cc {
            b = b.cc(mailbox(a, "Cc")?);
        }
        for a in &mail.bcc {
            b = b.bcc(mailbox(a, "Bcc")?);
        }
        for a in &mail.reply_to {
            b = b.reply_to(mailbox(a, "ReplyTo")?);
        }
        let id = format!("<{}@modelgate>", uuid::Uuid::new_v4().simple());
        b = b.message_id(Some(id.clone()));
        let built = match (mail.text, mail.html) {
            (Some(t), Some(h)) => b.multipart(MultiPart::alternative_plain_html(t, h)),
            (None, Some(h)) => {
                b.singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(h))
            }
            (t, None) => b.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(t.unwrap_or_default()),
            ),
        }
        .map_err(|e| Failure::new("Email.InvalidMessage", e.to_string()))?;
        self.transport.send(built).await.map_err(|e| {
            Failure::new(
                "Email.SendFailed",
                format!("the mail server refused or could not be reached: {e}"),
            )
        })?;
        Ok(id.trim_matches(['<', '>']).to_string())
    }
}
