//! Task resources: what a Task state's `Resource` does, in the shapes of the Step Functions
//! integrations users already write.
//!
//! | Resource | Does |
//! |---|---|
//! | `arn:aws:states:::bedrock:invokeModel` | InvokeModel through the gateway's pipeline (`ModelId`, `Body`) → `{"Body": …}` |
//! | `arn:aws:states:::aws-sdk:bedrockruntime:converse` | Converse (SDK-style PascalCase fields) |
//! | `arn:modelgate:states:::model:chat` | an OpenAI chat completion body → the completion |
//! | `arn:aws:states:::http:invoke` | an HTTP request (`ApiEndpoint`, `Method`, `Headers`, `QueryParameters`, `RequestBody`), internal addresses refused |
//! | `arn:aws:states:::dynamodb:putItem` / `getItem` / `deleteItem`, `arn:aws:states:::aws-sdk:dynamodb:query` | the built-in document store, tables keyed as `[[workflows.tables]]` says |
//! | `arn:aws:states:::aws-sdk:sesv2:sendEmail`, `arn:aws:states:::aws-sdk:ses:sendEmail`, `arn:modelgate:states:::email:send` | e-mail over `[workflows.smtp]` (the last with `minijinja` templates) |
//! | `arn:modelgate:states:::webhook:publish` | a signed webhook (`Url`, `Body`), as job callbacks are signed |
//! | `arn:aws:states:::states:startExecution` (`.sync`, `.sync:2`) | a child execution |
//!
//! Any of them ending in `.waitForTaskToken` sends its request and then waits for
//! `SendTaskSuccess` / `SendTaskFailure` with the token (`$$.Task.Token`). Model calls run as
//! the principal that started the execution, so its policies, limits, guardrails, routing and
//! accounting apply.

use std::sync::Arc;

use base64::Engine as _;
use modelgate_flows::{Failure, TaskCall};
use modelgate_store::{Document, ExecutionRecord};
use serde_json::{json, Map, Value};

use super::Flows;
use crate::jobs::{call_router, InProcess};

/// Who a task runs for.
#[derive(Debug, Clone)]
pub struct TaskEnv {
    /// The execution.
    pub arn: String,
    /// Its owner (document store scope).
    pub owner: String,
    /// Its principal and parent.
    pub meta: Value,
}

/// How a task ended (for now).
#[derive(Debug)]
pub enum Outcome {
    /// With this result.
    Done(Value),
    /// Its request is out; a `.waitForTaskToken` task now waits for its token.
    Submitted(Value),
    /// A child execution runs; its end brings the result.
    Pending,
}

/// What task tokens of an execution start with: the execution ARN, base64url, and a dot.
pub fn token_prefix(execution_arn: &str) -> String {
    format!(
        "{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(execution_arn)
    )
}

/// The execution a token belongs to.
pub fn execution_of_token(token: &str) -> Option<String> {
    let (prefix, secret) = token.split_once('.')?;
    if secret.len() < 16 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(prefix)
        .ok()?;
    String::from_utf8(bytes)
        .ok()
        .filter(|a| a.starts_with("arn:aws:states:"))
}

/// The base resource and its integration pattern (`""`, `.sync`, `.sync:2`,
/// `.waitForTaskToken`).
fn split_pattern(resource: &str) -> (&str, &str) {
    for suffix in [".waitForTaskToken", ".sync:2", ".sync"] {
        if let Some(base) = resource.strip_suffix(suffix) {
            return (base, suffix);
        }
    }
    (resource, "")
}

/// Whether this gateway runs `resource` (checked when a state machine is created).
pub fn supported(resource: &str) -> Result<(), String> {
    let (base, pattern) = split_pattern(resource);
    let ok = match base {
        "arn:aws:states:::bedrock:invokeModel"
        | "arn:aws:states:::aws-sdk:bedrockruntime:converse"
        | "arn:modelgate:states:::model:chat"
        | "arn:aws:states:::http:invoke"
        | "arn:aws:states:::aws-sdk:sesv2:sendEmail"
        | "arn:aws:states:::aws-sdk:ses:sendEmail"
        | "arn:modelgate:states:::email:send"
        | "arn:modelgate:states:::webhook:publish" => {
            pattern.is_empty() || pattern == ".waitForTaskToken"
        }
        "arn:aws:states:::dynamodb:putItem"
        | "arn:aws:states:::dynamodb:getItem"
        | "arn:aws:states:::dynamodb:deleteItem"
        | "arn:aws:states:::aws-sdk:dynamodb:query" => pattern.is_empty(),
        "arn:aws:states:::states:startExecution" => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "The resource '{resource}' is not supported by this gateway (model calls, http:invoke, webhook:publish, DynamoDB putItem/getItem/deleteItem/query, SES/SESv2 sendEmail, email:send, startExecution; .waitForTaskToken on calls, webhooks and e-mail)"
        ))
    }
}

/// Run a task.
pub async fn run(flows: &Arc<Flows>, env: &TaskEnv, call: &TaskCall) -> Result<Outcome, Failure> {
    let (base, pattern) = split_pattern(&call.resource);
    let p = &call.params;
    let result = match base {
        "arn:aws:states:::bedrock:invokeModel" => invoke_model(flows, env, p).await?,
        "arn:aws:states:::aws-sdk:bedrockruntime:converse" => converse(flows, env, p).await?,
        "arn:modelgate:states:::model:chat" => chat(flows, env, p).await?,
        "arn:aws:states:::http:invoke" => http_invoke(flows, p).await?,
        "arn:aws:states:::dynamodb:putItem" => put_item(flows, env, p).await?,
        "arn:aws:states:::dynamodb:getItem" => get_item(flows, env, p).await?,
        "arn:aws:states:::dynamodb:deleteItem" => delete_item(flows, env, p).await?,
        "arn:aws:states:::aws-sdk:dynamodb:query" => query(flows, env, p).await?,
        "arn:aws:states:::aws-sdk:sesv2:sendEmail"
        | "arn:aws:states:::aws-sdk:ses:sendEmail"
        | "arn:modelgate:states:::email:send" => send_email(flows, base, p).await?,
        "arn:modelgate:states:::webhook:publish" => publish(flows, env, call).await?,
        "arn:aws:states:::states:startExecution" => {
            return start_child(flows, env, call, pattern).await;
        }
        _ => {
            return Err(Failure::new(
                "States.Runtime",
                supported(&call.resource).err().unwrap_or_default(),
            ))
        }
    };
    Ok(if pattern == ".waitForTaskToken" {
        Outcome::Submitted(result)
    } else {
        Outcome::Done(result)
    })
}

fn param<'a>(p: &'a Value, name: &str, resource: &str) -> Result<&'a Value, Failure> {
    p.get(name).filter(|v| !v.is_null()).ok_or_else(|| {
        Failure::new(
            "States.Runtime",
            format!("The field '{name}' is required in the parameters of {resource}"),
        )
    })
}

fn str_param<'a>(p: &'a Value, name: &str, resource: &str) -> Result<&'a str, Failure> {
    param(p, name, resource)?.as_str().ok_or_else(|| {
        Failure::new(
            "States.Runtime",
            format!("The field '{name}' of {resource} must be a string"),
        )
    })
}

/// AWS's exception name for an HTTP status, when the answer names none.
fn exception_for(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "ValidationException",
        401 | 403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 | 504 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// A model call through the router as the execution's principal: the answer, or the
/// failure named `<prefix>.<Exception>`.
async fn model_call(
    flows: &Arc<Flows>,
    env: &TaskEnv,
    path: &str,
    body: &Value,
    prefix: &str,
) -> Result<Value, Failure> {
    let router = flows.router.get().cloned().ok_or_else(|| {
        Failure::new(
            format!("{prefix}.ServiceUnavailableException"),
            "The gateway is still starting.",
        )
    })?;
    let principal = flows
        .principal_of(&env.meta)
        .await
        .map_err(|why| Failure::new(format!("{prefix}.AccessDeniedException"), why))?;
    let headers = vec![("x-modelgate-workflow".to_string(), env.arn.clone())];
    match call_router(router, principal, &env.arn, path, body, &headers).await {
        Ok(InProcess::Answer(status, _, answer)) if (200..300).contains(&status) => Ok(answer),
        Ok(InProcess::Answer(status, headers, answer)) => {
            let name = headers
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(':').next().unwrap_or(v).to_string())
                .unwrap_or_else(|| exception_for(status).to_string());
            let message = answer["message"]
                .as_str()
                .or_else(|| answer["error"]["message"].as_str())
                .map_or_else(|| answer.to_string(), String::from);
            Err(Failure::new(format!("{prefix}.{name}"), message))
        }
        Ok(InProcess::Unusable(why)) => {
            Err(Failure::new(format!("{prefix}.ValidationException"), why))
        }
        Err(why) => Err(Failure::new(
            format!("{prefix}.ServiceUnavailableException"),
            why,
        )),
    }
}

fn model_path(model: &str, op: &str) -> String {
    format!(
        "/model/{}/{op}",
        percent_encoding::utf8_percent_encode(model, percent_encoding::NON_ALPHANUMERIC)
    )
}

async fn invoke_model(flows: &Arc<Flows>, env: &TaskEnv, p: &Value) -> Result<Value, Failure> {
    const R: &str = "bedrock:invokeModel";
    let model = str_param(p, "ModelId", R)?;
    let body = match param(p, "Body", R)? {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            Failure::new(
                "Bedrock.ValidationException",
                format!("Body is not JSON: {e}"),
            )
        })?,
        other => other.clone(),
    };
    if p.get("Input").is_some() || p.get("Output").is_some() {
        return Err(Failure::new(
            "Bedrock.ValidationException",
            "Input and Output (S3 payloads) are not supported here; pass Body",
        ));
    }
    let answer = model_call(flows, env, &model_path(model, "invoke"), &body, "Bedrock").await?;
    Ok(json!({"Body": answer, "ContentType": "application/json"}))
}

/// Rename object keys: the first letter up (`upper`) or down, through nested objects and
/// arrays — AWS SDK integrations write API fields in PascalCase. Document values (tool
/// inputs) keep their keys.
fn recase(v: &Value, upper: bool) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let mut c = k.chars();
                    let key = c.next().map_or_else(String::new, |f| {
                        let f = if upper {
                            f.to_ascii_uppercase()
                        } else {
                            f.to_ascii_lowercase()
                        };
                        format!("{f}{}", c.as_str())
                    });
                    let keep = matches!(
                        k.as_str(),
                        "input"
                            | "Input"
                            | "json"
                            | "Json"
                            | "additionalModelRequestFields"
                            | "AdditionalModelRequestFields"
                    );
                    (key, if keep { v.clone() } else { recase(v, upper) })
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| recase(v, upper)).collect()),
        other => other.clone(),
    }
}

async fn converse(flows: &Arc<Flows>, env: &TaskEnv, p: &Value) -> Result<Value, Failure> {
    let model = str_param(p, "ModelId", "bedrockruntime:converse")?;
    let mut body = recase(p, false);
    if let Value::Object(m) = &mut body {
        m.remove("modelId");
    }
    let answer = model_call(
        flows,
        env,
        &model_path(model, "converse"),
        &body,
        "BedrockRuntime",
    )
    .await?;
    Ok(recase(&answer, true))
}

async fn chat(flows: &Arc<Flows>, env: &TaskEnv, p: &Value) -> Result<Value, Failure> {
    if !p.is_object() || p.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(Failure::new(
            "Modelgate.ValidationException",
            "model:chat takes an OpenAI chat completion body without stream",
        ));
    }
    model_call(flows, env, "/v1/chat/completions", p, "Modelgate").await
}

async fn http_invoke(flows: &Arc<Flows>, p: &Value) -> Result<Value, Failure> {
    const R: &str = "http:invoke";
    let endpoint = str_param(p, "ApiEndpoint", R)?;
    let method = p["Method"].as_str().unwrap_or("GET").to_ascii_uppercase();
    modelgate_core::jobs::check_callback_url(endpoint)
        .map_err(|e| Failure::new("States.Http.InvalidEndpoint", e))?;
    let mut url = reqwest::Url::parse(endpoint)
        .map_err(|e| Failure::new("States.Http.InvalidEndpoint", e.to_string()))?;
    if let Some(ip) = crate::jobs::webhook::literal_ip(&url) {
        if let Some(why) = modelgate_core::jobs::forbidden_target(ip, &flows.config.http_allow) {
            return Err(Failure::new(
                "States.Http.Forbidden",
                format!("{ip} is {why}; add it to workflows.http_allow to allow it"),
            ));
        }
    }
    if let Some(q) = p["QueryParameters"].as_object() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in q {
            let v = v.as_str().map_or_else(|| v.to_string(), String::from);
            pairs.append_pair(k, &v);
        }
    }
    let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| {
        Failure::new(
            "States.Runtime",
            format!("'{method}' is not an HTTP method"),
        )
    })?;
    let mut req = flows.http.request(m, url);
    if let Some(h) = p["Headers"].as_object() {
        for (k, v) in h {
            let v = v.as_str().map_or_else(|| v.to_string(), String::from);
            req = req.header(k.as_str(), v);
        }
    }
    match &p["RequestBody"] {
        Value::Null => {}
        Value::String(s) => req = req.body(s.clone()),
        other => req = req.json(other),
    }
    let resp = req.send().await.map_err(|e| {
        let name = if e.is_timeout() {
            "States.Http.Timeout"
        } else {
            "States.Http.Socket"
        };
        Failure::new(name, format!("{e:#}"))
    })?;
    let status = resp.status();
    let mut headers = Map::new();
    for (k, v) in resp.headers() {
        headers.insert(k.to_string(), json!([v.to_str().unwrap_or_default()]));
    }
    let text = resp
        .text()
        .await
        .map_err(|e| Failure::new("States.Http.Socket", e.to_string()))?;
    let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    let out = json!({
        "Headers": headers,
        "ResponseBody": body,
        "StatusCode": status.as_u16().to_string(),
        "StatusText": status.canonical_reason().unwrap_or_default(),
    });
    if status.is_success() {
        Ok(out)
    } else {
        Err(Failure::new(
            format!("States.Http.StatusCode.{}", status.as_u16()),
            out.to_string(),
        ))
    }
}

/// The key string of a DynamoDB attribute value (`{"S": "a"}` → `a`, `{"N": "1"}` → `1`).
fn attr_key(v: &Value) -> String {
    match v.as_object().and_then(|m| m.iter().next()) {
        Some((t, x)) if t == "S" || t == "N" || t == "B" => {
            x.as_str().map_or_else(|| x.to_string(), String::from)
        }
        _ => v.to_string(),
    }
}

fn table_keys<'a>(
    flows: &'a Flows,
    name: &str,
) -> Result<&'a modelgate_core::workflows::TableConfig, Failure> {
    flows.config.table(name).ok_or_else(|| {
        Failure::new(
            "DynamoDB.ResourceNotFoundException",
            format!("Requested resource not found: Table: {name} not found (declare it in [[workflows.tables]])"),
        )
    })
}

fn keys_of(
    t: &modelgate_core::workflows::TableConfig,
    item: &Value,
    what: &str,
) -> Result<(String, String), Failure> {
    let missing = |k: &str| {
        Failure::new(
            "DynamoDB.ValidationException",
            format!("One or more parameter values were invalid: Missing the key {k} in the {what}"),
        )
    };
    let pk = item
        .get(&t.partition_key)
        .ok_or_else(|| missing(&t.partition_key))?;
    let sk = match &t.sort_key {
        Some(s) => attr_key(item.get(s).ok_or_else(|| missing(s))?),
        None => String::new(),
    };
    Ok((attr_key(pk), sk))
}

fn store_failure(e: modelgate_store::StoreError) -> Failure {
    Failure::new("DynamoDB.InternalServerError", e.to_string())
}

async fn put_item(flows: &Arc<Flows>, env: &TaskEnv, p: &Value) -> Result<Value, Failure> {
    const R: &str = "dynamodb:putItem";
    let table = str_param(p, "TableName", R)?;
    let item = param(p, "Item", R)?;
    if !item.is_object() {
        return Err(Failure::new(
            "DynamoDB.ValidationException",
            "Item must be a map of attribute values",
        ));
    }
    let t = table_keys(flows, table)?;
    let (pk, sk) = keys_of(t, item, "item")?;
    let doc = Document {
        table: table.to_string(),
        pk,
        sk,
        item: item.clone(),
        updated_ms: modelgate_core::keys::now_ms(),
    };
    flows
        .store
        .put_document(&env.owner, &doc)
        .await
        .map_err(store_failure)?;
    Ok(json!({}))
}

async fn get_item(flows: &Arc<Flows>, env: &TaskEnv, p: &Value) -> Result<Value, Failure> {
    const R: &str = "dynamodb:getItem";
    let table = str_param(p, "TableName", R)?;
    let t = table_keys(flows, table)?;
    let (pk, sk) = keys_of(t, param(p, "Key", R)?, "key")?;
    let doc = flows
        .store
        .document(&env.owner, table, &pk, &sk)
        .await
        .map_err(store_failure)?;
    Ok(doc.map_or_else(|| json!({}), |d| json!({"Item": d.item})))
}

async fn delete_item(flows: &Arc<Flows>, env: &TaskEnv, p: &Value) -> Result<Value, Failure> {
    const R: &str = "dynamodb:deleteItem";
    let table = str_param(p, "TableName", R)?;
    let t = table_keys(flows, table)?;
    let (pk, sk) = keys_of(t, param(p, "Key", R)?, "key")?;
    flows
        .store
        .delete_document(&env.owner, table, &pk, &sk)
        .await
        .map_err(store_failure)?;
    Ok(json!({}))
}

/// `KeyConditionExpression` of the forms `pk = :v` and `pk = :v AND begins_with(sk, :p)`
/// (or `sk = :s`), with `#names` from `ExpressionAttributeNames`.
async fn query(flows: &Arc<Flows>, env: &TaskEnv, p: &Value) -> Result<Value, Failure> {
    const R: &str = "dynamodb:query";
    let table = str_param(p, "TableName", R)?;
    let t = table_keys(flows, table)?;
    let expr = str_param(p, "KeyConditionExpression", R)?;
    let names = p["ExpressionAttributeNames"].as_object();
    let values = p["ExpressionAttributeValues"].as_object();
    let bad = |why: &str| {
        Failure::new(
            "DynamoDB.ValidationException",
            format!("Invalid KeyConditionExpression: {why}"),
        )
    };
    let name = |n: &str| -> String {
        let n = n.trim();
        names
            .and_then(|m| m.get(n))
            .and_then(Value::as_str)
            .map_or_else(|| n.to_string(), String::from)
    };
    let value = |v: &str| -> Result<String, Failure> {
        values
            .and_then(|m| m.get(v.trim()))
            .map(attr_key)
            .ok_or_else(|| {
                bad(&format!(
                    "the value {} is not in ExpressionAttributeValues",
                    v.trim()
                ))
            })
    };
    let lower = expr.to_ascii_lowercase();
    let (first, second) = match lower.find(" and ") {
        Some(i) => (&expr[..i], Some(&expr[i + 5..])),
        None => (expr, None),
    };
    let (k, v) = first
        .split_once('=')
        .ok_or_else(|| bad("expected 'partitionKey = :value'"))?;
    if name(k) != t.partition_key {
        return Err(bad(&format!(
            "the partition key of {table} is {}",
            t.partition_key
        )));
    }
    let pk = value(v)?;
    let (prefix, exact) = match second {
        None => (String::new(), None),
        Some(s) => {
            let s = s.trim();
            if let Some(args) = s
                .strip_prefix("begins_with(")
                .and_then(|r| r.strip_suffix(')'))
            {
                let (_, v) = args
                    .split_once(',')
                    .ok_or_else(|| bad("begins_with takes two arguments"))?;
                (value(v)?, None)
            } else if let Some((_, v)) = s.split_once('=') {
                (String::new(), Some(value(v)?))
            } else {
                return Err(bad(
                    "only '=' and begins_with are supported on the sort key",
                ));
            }
        }
    };
    let limit = p["Limit"]
        .as_u64()
        .map_or(1000, |l| usize::try_from(l).unwrap_or(1000));
    let mut docs = flows
        .store
        .query_documents(&env.owner, table, &pk, &prefix, limit)
        .await
        .map_err(store_failure)?;
    if let Some(e) = exact {
        docs.retain(|d| d.sk == e);
    }
    if p["ScanIndexForward"].as_bool() == Some(false) {
        docs.reverse();
    }
    let items: Vec<Value> = docs.into_iter().map(|d| d.item).collect();
    Ok(json!({"Count": items.len(), "ScannedCount": items.len(), "Items": items}))
}

fn addresses(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

async fn send_email(flows: &Arc<Flows>, base: &str, p: &Value) -> Result<Value, Failure> {
    let mailer = flows.mailer.as_ref().ok_or_else(|| {
        Failure::new(
            "Email.NotConfigured",
            "This gateway has no mail server: set [workflows.smtp]",
        )
    })?;
    let mail = match base {
        "arn:aws:states:::aws-sdk:sesv2:sendEmail" => {
            let simple = &p["Content"]["Simple"];
            if simple.is_null() {
                return Err(Failure::new(
                    "SesV2.BadRequestException",
                    "Content.Simple is required (templates by name are not supported)",
                ));
            }
            super::email::Mail {
                from: p["FromEmailAddress"].as_str().map(String::from),
                to: addresses(&p["Destination"]["ToAddresses"]),
                cc: addresses(&p["Destination"]["CcAddresses"]),
                bcc: addresses(&p["Destination"]["BccAddresses"]),
                reply_to: addresses(&p["ReplyToAddresses"]),
                subject: simple["Subject"]["Data"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                text: simple["Body"]["Text"]["Data"].as_str().map(String::from),
                html: simple["Body"]["Html"]["Data"].as_str().map(String::from),
            }
        }
        "arn:aws:states:::aws-sdk:ses:sendEmail" => super::email::Mail {
            from: p["Source"].as_str().map(String::from),
            to: addresses(&p["Destination"]["ToAddresses"]),
            cc: addresses(&p["Destination"]["CcAddresses"]),
            bcc: addresses(&p["Destination"]["BccAddresses"]),
            reply_to: addresses(&p["ReplyToAddresses"]),
            subject: p["Message"]["Subject"]["Data"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            text: p["Message"]["Body"]["Text"]["Data"]
                .as_str()
                .map(String::from),
            html: p["Message"]["Body"]["Html"]["Data"]
                .as_str()
                .map(String::from),
        },
        _ => {
            let vars = p.get("Variables").cloned().unwrap_or_else(|| json!({}));
            let render = |field: &str| -> Result<Option<String>, Failure> {
                match p.get(field).and_then(Value::as_str) {
                    None => Ok(None),
                    Some(t) => super::email::render(t, &vars)
                        .map(Some)
                        .map_err(|e| Failure::new("Email.TemplateError", format!("{field}: {e}"))),
                }
            };
            super::email::Mail {
                from: p["From"].as_str().map(String::from),
                to: addresses(&p["To"]),
                cc: addresses(&p["Cc"]),
                bcc: addresses(&p["Bcc"]),
                reply_to: addresses(&p["ReplyTo"]),
                subject: render("Subject")?.unwrap_or_default(),
                text: render("Text")?,
                html: render("Html")?,
            }
        }
    };
    let id = mailer.send(mail).await?;
    Ok(json!({"MessageId": id}))
}

/// `webhook:publish`: POST `Body` to `Url`, signed like job callbacks (`modelgate-signature`,
/// internal addresses refused unless `jobs.webhook_allow` lists them). A status other than
/// 2xx fails the task with `Webhook.StatusCode.<n>`; the state's Retry retries it.
async fn publish(flows: &Arc<Flows>, env: &TaskEnv, call: &TaskCall) -> Result<Value, Failure> {
    const R: &str = "webhook:publish";
    let url = str_param(&call.params, "Url", R)?;
    let deliverer = flows.webhooks.as_ref().ok_or_else(|| {
        Failure::new(
            "Webhook.NotConfigured",
            "This gateway cannot sign webhooks: set jobs.webhook_secret_env",
        )
    })?;
    modelgate_core::jobs::check_callback_url(url)
        .map_err(|e| Failure::new("Webhook.InvalidUrl", e))?;
    let body =
        serde_json::to_vec(call.params.get("Body").unwrap_or(&Value::Null)).unwrap_or_default();
    let id = format!("{}:{}", env.arn, call.task);
    match deliverer.post(url, &id, 1, &body).await {
        Ok(status) if (200..300).contains(&status) => Ok(json!({"StatusCode": status})),
        Ok(status) => Err(Failure::new(
            format!("Webhook.StatusCode.{status}"),
            format!("The receiver answered {status}"),
        )),
        Err(why) => Err(Failure::new("Webhook.DeliveryFailed", why)),
    }
}

/// What a `startExecution.sync` task gets when its child ends (`.sync:2`: the output as
/// JSON rather than text).
pub fn child_result(rec: &ExecutionRecord, v2: bool) -> Result<Value, Failure> {
    let output = match (&rec.output, v2) {
        (Some(o), true) => serde_json::from_str(o).unwrap_or(Value::Null),
        (Some(o), false) => Value::String(o.clone()),
        (None, _) => Value::Null,
    };
    let input = if v2 {
        serde_json::from_str(&rec.input).unwrap_or(Value::Null)
    } else {
        Value::String(rec.input.clone())
    };
    let view = json!({
        "ExecutionArn": rec.arn,
        "StateMachineArn": rec.machine_arn,
        "Name": rec.name,
        "Status": rec.status,
        "StartDate": rec.start_ms,
        "StopDate": rec.stop_ms,
        "Input": input,
        "Output": output,
    });
    if rec.status == "SUCCEEDED" {
        Ok(view)
    } else {
        Err(Failure::new("States.TaskFailed", view.to_string()))
    }
}

async fn start_child(
    flows: &Arc<Flows>,
    env: &TaskEnv,
    call: &TaskCall,
    pattern: &str,
) -> Result<Outcome, Failure> {
    const R: &str = "states:startExecution";
    let machine_arn = str_param(&call.params, "StateMachineArn", R)?;
    let machine = flows
        .store
        .machine(machine_arn)
        .await
        .map_err(|e| Failure::new("StepFunctions.ServiceUnavailable", e.to_string()))?
        .filter(|m| m.owner == env.owner)
        .ok_or_else(|| {
            Failure::new(
                "StepFunctions.StateMachineDoesNotExistException",
                format!("State Machine Does Not Exist: '{machine_arn}'"),
            )
        })?;
    let input = match &call.params["Input"] {
        Value::Null => "{}".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    // A name fixed by the parent task, so a task run again after a crash finds its child.
    let name = call.params["Name"].as_str().map_or_else(
        || {
            let parent = env.arn.rsplit(':').next().unwrap_or_default();
            let n = format!("{parent}-{}-{}", call.state, call.task);
            n.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .take(80)
                .collect()
        },
        String::from,
    );
    let sync = pattern.starts_with(".sync");
    let parent =
        sync.then(|| json!({"execution": env.arn, "task": call.task, "v2": pattern == ".sync:2"}));
    let meta = Flows::meta(env.meta["principal"].clone(), &env.owner, parent, None);
    let (rec, _) = match flows
        .start(
            &machine.arn,
            &machine.name,
            &machine.definition,
            &machine.role_arn,
            &env.owner,
            &name,
            &input,
            meta,
        )
        .await
    {
        Ok(r) => r,
        Err(e) if e.code == "ExecutionAlreadyExists" && sync => {
            // Run again after a crash: the child is there already.
            let arn = flows.execution_arn(&machine.name, &name);
            let rec = flows
                .store
                .execution(&arn)
                .await
                .map_err(|e| Failure::new("StepFunctions.ServiceUnavailable", e.to_string()))?
                .ok_or_else(|| {
                    Failure::new(
                        "StepFunctions.ExecutionAlreadyExistsException",
                        e.message.clone(),
                    )
                })?;
            (rec, false)
        }
        Err(e) => {
            return Err(Failure::new(
                format!("StepFunctions.{}Exception", e.code),
                e.message,
            ))
        }
    };
    if sync {
        if rec.status == "RUNNING" {
            return Ok(Outcome::Pending);
        }
        return child_result(&rec, pattern == ".sync:2").map(Outcome::Done);
    }
    let out = json!({"ExecutionArn": rec.arn, "StartDate": rec.start_ms});
    Ok(if pattern == ".waitForTaskToken" {
        Outcome::Submitted(out)
    } else {
        Outcome::Done(out)
    })
}
