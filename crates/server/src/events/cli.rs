//! `modelgate events …`: put events, read rules and targets, follow events and their
//! deliveries — against a running gateway, through its EventBridge API and `/admin/events`.

use serde_json::{json, Value};

use crate::jobs::cli::Remote;

/// Call an EventBridge operation.
pub async fn call(remote: &Remote, op: &str, body: Value) -> anyhow::Result<Value> {
    crate::flows::cli::call_aws_json(remote, super::api::TARGET, "1.1", op, body).await
}

/// `events put`: one event; prints its id.
pub async fn put(
    remote: &Remote,
    source: &str,
    detail_type: &str,
    detail: &str,
    bus: Option<&str>,
) -> anyhow::Result<()> {
    let mut entry = json!({"Source": source, "DetailType": detail_type, "Detail": detail});
    if let Some(b) = bus {
        entry["EventBusName"] = json!(b);
    }
    let v = call(remote, "PutEvents", json!({"Entries": [entry]})).await?;
    let e = &v["Entries"][0];
    match e["EventId"].as_str() {
        Some(id) => println!("{id}"),
        None => anyhow::bail!(
            "{}: {}",
            e["ErrorCode"].as_str().unwrap_or("refused"),
            e["ErrorMessage"].as_str().unwrap_or_default()
        ),
    }
    Ok(())
}

/// `events rules`: the rules of a bus.
pub async fn rules(remote: &Remote, bus: Option<&str>) -> anyhow::Result<()> {
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"Limit": 100});
        if let Some(b) = bus {
            body["EventBusName"] = json!(b);
        }
        if let Some(t) = &token {
            body["NextToken"] = json!(t);
        }
        let page = call(remote, "ListRules", body).await?;
        for r in page["Rules"].as_array().into_iter().flatten() {
            println!(
                "{}\t{}\t{}",
                r["Name"].as_str().unwrap_or_default(),
                r["State"].as_str().unwrap_or_default(),
                r["EventPattern"].as_str().unwrap_or_default()
            );
        }
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(()),
        }
    }
}

/// `events targets RULE`: a rule's targets.
pub async fn targets(remote: &Remote, rule: &str, bus: Option<&str>) -> anyhow::Result<()> {
    let mut body = json!({"Rule": rule});
    if let Some(b) = bus {
        body["EventBusName"] = json!(b);
    }
    let v = call(remote, "ListTargetsByRule", body).await?;
    for t in v["Targets"].as_array().into_iter().flatten() {
        println!(
            "{}\t{}",
            t["Id"].as_str().unwrap_or_default(),
            t["Arn"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// `events tail`: stored events and their deliveries, oldest first; with `follow`, new ones
/// as they come (and each delivery's state as it is when the event is printed).
pub async fn tail(
    remote: &Remote,
    bus: Option<&str>,
    since_ms: Option<i64>,
    follow: bool,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut after: Option<String> = None;
    loop {
        let mut query: Vec<(&str, String)> = vec![("limit", "100".into())];
        if let Some(b) = bus {
            query.push(("bus", b.to_string()));
        }
        if let Some(s) = since_ms {
            query.push(("since_ms", s.to_string()));
        }
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let request = remote
            .request(&client, reqwest::Method::GET, "/admin/events")
            .query(&query);
        let (status, page) = crate::jobs::cli::send(remote, request).await?;
        if !status.is_success() {
            anyhow::bail!("{status}: {}", crate::jobs::cli::error_message(&page));
        }
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            println!("{e}");
            after = Some(format!(
                "{}:{}",
                e["received_ms"].as_i64().unwrap_or_default(),
                e["id"].as_str().unwrap_or_default()
            ));
        }
        if events.len() < 100 {
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

/// `events replay ARCHIVE`: put the archive's events of a time range on its bus again (to
/// every rule, or only to `rules`), wait for the end and print how it ended.
pub async fn replay(
    remote: &Remote,
    archive: &str,
    name: Option<&str>,
    start_ms: i64,
    end_ms: i64,
    rules: &[String],
) -> anyhow::Result<()> {
    let a = call(remote, "DescribeArchive", json!({"ArchiveName": archive})).await?;
    let mut destination = json!({"Arn": a["EventSourceArn"]});
    if !rules.is_empty() {
        let bus = a["EventSourceArn"]
            .as_str()
            .and_then(|s| s.rsplit_once(":event-bus/"))
            .map_or("default", |(_, b)| b);
        let mut arns = Vec::new();
        for r in rules {
            let d = call(
                remote,
                "DescribeRule",
                json!({"Name": r, "EventBusName": bus}),
            )
            .await?;
            arns.push(d["Arn"].clone());
        }
        destination["FilterArns"] = json!(arns);
    }
    let name = name.map_or_else(
        || format!("{archive}-{}", uuid::Uuid::new_v4().simple()),
        str::to_string,
    );
    call(
        remote,
        "StartReplay",
        json!({
            "ReplayName": name, "EventSourceArn": a["ArchiveArn"], "Destination": destination,
            "EventStartTime": start_ms as f64 / 1000.0, "EventEndTime": end_ms as f64 / 1000.0,
        }),
    )
    .await?;
    loop {
        let r = call(remote, "DescribeReplay", json!({"ReplayName": name})).await?;
        let state = r["State"].as_str().unwrap_or_default();
        if matches!(state, "COMPLETED" | "CANCELLED" | "FAILED") {
            println!(
                "{name}\t{state}\t{}",
                r["StateReason"].as_str().unwrap_or_default()
            );
            if state == "FAILED" {
                anyhow::bail!("the replay failed");
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
