//! `modelgate flows …`: deploy state machines, start executions, read them, approve waiting
//! tasks — against a running gateway, through its Step Functions API.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::jobs::cli::Remote;

/// Call a Step Functions operation.
pub async fn call(remote: &Remote, op: &str, body: Value) -> anyhow::Result<Value> {
    call_aws_json(remote, super::api::TARGET, "1.0", op, body).await
}

/// Call an operation of an AWS JSON-protocol service (`target` is its prefix, such as
/// `AWSEvents.`; `version` the protocol's, `1.0` or `1.1`).
pub async fn call_aws_json(
    remote: &Remote,
    target: &str,
    version: &str,
    op: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let request = remote
        .request(&client, reqwest::Method::POST, "/")
        .header("x-amz-target", format!("{target}{op}"))
        .header("content-type", format!("application/x-amz-json-{version}"))
        .body(body.to_string());
    let (status, v) = crate::jobs::cli::send(remote, request).await?;
    if !status.is_success() {
        let code = v["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .or_else(|| v["error"]["type"].as_str().map(String::from))
            .unwrap_or_else(|| status.to_string());
        anyhow::bail!("{code}: {}", crate::jobs::cli::error_message(&v));
    }
    Ok(v)
}

/// The ARN of a state machine given by name or ARN.
async fn machine_arn(remote: &Remote, name_or_arn: &str) -> anyhow::Result<String> {
    if name_or_arn.starts_with("arn:") {
        return Ok(name_or_arn.to_string());
    }
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"maxResults": 1000});
        if let Some(t) = &token {
            body["nextToken"] = Value::from(t.as_str());
        }
        let page = call(remote, "ListStateMachines", body).await?;
        if let Some(m) = page["stateMachines"]
            .as_array()
            .and_then(|l| l.iter().find(|m| m["name"] == name_or_arn))
        {
            return Ok(m["stateMachineArn"]
                .as_str()
                .unwrap_or_default()
                .to_string());
        }
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => anyhow::bail!("no state machine is named '{name_or_arn}'"),
        }
    }
}

/// `flows deploy FILE --name NAME`: create the state machine, or update it when it exists.
pub async fn deploy(
    remote: &Remote,
    file: &Path,
    name: &str,
    role_arn: &str,
    express: bool,
) -> anyhow::Result<()> {
    let definition =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let check = call(
        remote,
        "ValidateStateMachineDefinition",
        json!({"definition": definition}),
    )
    .await?;
    if check["result"] == "FAIL" {
        for d in check["diagnostics"].as_array().into_iter().flatten() {
            eprintln!(
                "{} {}: {} at {}",
                d["severity"].as_str().unwrap_or(""),
                d["code"].as_str().unwrap_or(""),
                d["message"].as_str().unwrap_or(""),
                d["location"].as_str().unwrap_or("")
            );
        }
        anyhow::bail!("{} is not a valid state machine definition", file.display());
    }
    if let Ok(arn) = machine_arn(remote, name).await {
        let v = call(
            remote,
            "UpdateStateMachine",
            json!({"stateMachineArn": arn, "definition": definition, "roleArn": role_arn}),
        )
        .await?;
        println!(
            "updated {arn} (revision {})",
            v["revisionId"].as_str().unwrap_or_default()
        );
        return Ok(());
    }
    let body = json!({
        "name": name,
        "definition": definition,
        "roleArn": role_arn,
        "type": if express { "EXPRESS" } else { "STANDARD" },
    });
    let v = call(remote, "CreateStateMachine", body).await?;
    println!(
        "created {}",
        v["stateMachineArn"].as_str().unwrap_or_default()
    );
    Ok(())
}

/// `flows start MACHINE`: start an execution; with `wait`, follow it to its end.
pub async fn start(
    remote: &Remote,
    machine: &str,
    input: Option<&str>,
    name: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    let arn = machine_arn(remote, machine).await?;
    let input = match input {
        Some(i) if i.starts_with('@') => {
            std::fs::read_to_string(&i[1..]).with_context(|| format!("reading {}", &i[1..]))?
        }
        Some(i) => i.to_string(),
        None => "{}".to_string(),
    };
    serde_json::from_str::<Value>(&input).context("the input is not JSON")?;
    let mut body = json!({"stateMachineArn": arn, "input": input});
    if let Some(n) = name {
        body["name"] = Value::from(n);
    }
    let v = call(remote, "StartExecution", body).await?;
    let exec = v["executionArn"].as_str().unwrap_or_default().to_string();
    println!("{exec}");
    if wait {
        loop {
            let d = call(remote, "DescribeExecution", json!({"executionArn": exec})).await?;
            if d["status"] != "RUNNING" {
                print_execution(&d);
                if d["status"] != "SUCCEEDED" {
                    anyhow::bail!(
                        "the execution ended {}",
                        d["status"].as_str().unwrap_or_default()
                    );
                }
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

fn print_execution(d: &Value) {
    println!("status:  {}", d["status"].as_str().unwrap_or_default());
    for (k, label) in [
        ("output", "output:  "),
        ("error", "error:   "),
        ("cause", "cause:   "),
    ] {
        if let Some(v) = d[k].as_str() {
            println!("{label}{v}");
        }
    }
}

/// `flows describe EXECUTION`.
pub async fn describe(remote: &Remote, execution: &str) -> anyhow::Result<()> {
    let d = call(
        remote,
        "DescribeExecution",
        json!({"executionArn": execution}),
    )
    .await?;
    println!(
        "execution: {}",
        d["executionArn"].as_str().unwrap_or_default()
    );
    println!(
        "machine:   {}",
        d["stateMachineArn"].as_str().unwrap_or_default()
    );
    println!("input:     {}", d["input"].as_str().unwrap_or_default());
    print_execution(&d);
    Ok(())
}

/// One line of the timeline: what the event says that matters.
fn summary(e: &Value) -> String {
    let details = e
        .as_object()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.ends_with("EventDetails"))
                .map(|(_, v)| v.clone())
        })
        .unwrap_or(Value::Null);
    let mut parts = Vec::new();
    if let Some(n) = details["name"].as_str() {
        parts.push(n.to_string());
    }
    if let Some(r) = details["resource"].as_str() {
        parts.push(format!(
            "{}:{r}",
            details["resourceType"].as_str().unwrap_or_default()
        ));
    }
    if let Some(i) = details["index"].as_u64() {
        parts.push(format!("item {i}"));
    }
    if let Some(err) = details["error"].as_str() {
        parts.push(format!(
            "error {err}: {}",
            details["cause"].as_str().unwrap_or_default()
        ));
    }
    for k in ["input", "output", "parameters"] {
        if let Some(v) = details[k].as_str() {
            let short: String = v.chars().take(120).collect();
            let more = if v.chars().count() > 120 { "…" } else { "" };
            parts.push(format!("{k} {short}{more}"));
        }
    }
    parts.join("  ")
}

/// `flows history EXECUTION`: the history as a timeline.
pub async fn history(remote: &Remote, execution: &str) -> anyhow::Result<()> {
    let mut token: Option<String> = None;
    let mut start: Option<f64> = None;
    loop {
        let mut body = json!({"executionArn": execution, "maxResults": 1000});
        if let Some(t) = &token {
            body["nextToken"] = Value::from(t.as_str());
        }
        let page = call(remote, "GetExecutionHistory", body).await?;
        for e in page["events"].as_array().into_iter().flatten() {
            let t = e["timestamp"].as_f64().unwrap_or_default();
            let t0 = *start.get_or_insert(t);
            println!(
                "{:>9.3}s  #{:<4} {:<26} {}",
                t - t0,
                e["id"].as_u64().unwrap_or_default(),
                e["type"].as_str().unwrap_or_default(),
                summary(e)
            );
        }
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(()),
        }
    }
}

/// `flows approve TOKEN`: answer a waiting task (`--reject` fails it).
pub async fn approve(
    remote: &Remote,
    token: &str,
    output: Option<&str>,
    reject: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    match reject {
        Some((error, cause)) => {
            call(
                remote,
                "SendTaskFailure",
                json!({"taskToken": token, "error": error, "cause": cause}),
            )
            .await?;
            println!("rejected");
        }
        None => {
            let output = output.unwrap_or("{\"approved\": true}");
            serde_json::from_str::<Value>(output).context("the output is not JSON")?;
            call(
                remote,
                "SendTaskSuccess",
                json!({"taskToken": token, "output": output}),
            )
            .await?;
            println!("approved");
        }
    }
    Ok(())
}

/// `flows list [MACHINE]`: state machines, or a machine's executions.
pub async fn list(remote: &Remote, machine: Option<&str>) -> anyhow::Result<()> {
    match machine {
        None => {
            let v = call(remote, "ListStateMachines", json!({"maxResults": 1000})).await?;
            for m in v["stateMachines"].as_array().into_iter().flatten() {
                println!(
                    "{:<40} {:<9} {}",
                    m["name"].as_str().unwrap_or_default(),
                    m["type"].as_str().unwrap_or_default(),
                    m["stateMachineArn"].as_str().unwrap_or_default()
                );
            }
        }
        Some(m) => {
            let arn = machine_arn(remote, m).await?;
            let v = call(
                remote,
                "ListExecutions",
                json!({"stateMachineArn": arn, "maxResults": 1000}),
            )
            .await?;
            for e in v["executions"].as_array().into_iter().flatten() {
                println!(
                    "{:<10} {}",
                    e["status"].as_str().unwrap_or_default(),
                    e["executionArn"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
