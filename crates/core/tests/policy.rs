//! The policy evaluator, table-driven: the seeds' examples verbatim, then every operator and
//! edge case as IAM documents them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelgate_core::policy::{evaluate, wildcard, Policy, Request};
use serde_json::{json, Value};

const SONNET: &str =
    "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-sonnet-20240229-v1:0";
const HAIKU: &str =
    "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0";

fn invoke(resource: &str) -> Request {
    Request {
        actions: vec!["bedrock:InvokeModel".into(), "bedrock:Converse".into()],
        resource: resource.into(),
        context: Default::default(),
    }
}

fn decide(doc: &Value, req: &Request) -> (bool, Option<String>) {
    let p = Policy::parse(doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
    let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01T00:00:00Z
    let d = evaluate([&p], req, now);
    (d.allowed, d.statement)
}

/// Seed 000's least-privilege statement, verbatim (a bare statement).
fn seed_sonnet_only() -> Value {
    json!({
      "Effect": "Allow",
      "Action": [
        "bedrock:InvokeModel"
      ],
      "Resource": [
        "arn:aws:bedrock:*::foundation-model/anthropic.claude-3-sonnet*"
      ]
    })
}

/// Seed 002's resource-boundary policy, verbatim.
fn seed_boundaries() -> Value {
    json!({
      "Version": "2012-10-17",
      "Statement": [
        {
          "Effect": "Allow",
          "Action": [
            "bedrock:InvokeModel"
          ],
          "Resource": [
            "arn:aws:bedrock:*:*:model/anthropic.claude-3-sonnet-20240229-v1:0"
          ],
          "Condition": {
            "StringEquals": {
              "aws:ResourceAccount": "${AWS::AccountId}"
            }
          }
        },
        {
          "Effect": "Allow",
          "Action": [
            "bedrock:InvokeModel"
          ],
          "Resource": "*",
          "Condition": {
            "NumericLessThan": {
              "bedrock:MaxTokens": "2000"
            },
            "NumericLessThanEquals": {
              "bedrock:Temperature": "0.5"
            }
          }
        }
      ]
    })
}

#[test]
fn the_seeds_examples() {
    // Sonnet only: versioned Sonnet ids match the wildcard, Haiku does not.
    assert!(decide(&seed_sonnet_only(), &invoke(SONNET)).0);
    assert!(!decide(&seed_sonnet_only(), &invoke(HAIKU)).0);
    // …and only InvokeModel: a streaming call is another action.
    let stream = Request {
        actions: vec!["bedrock:InvokeModelWithResponseStream".into()],
        ..invoke(SONNET)
    };
    assert!(!decide(&seed_sonnet_only(), &stream).0);

    // MaxTokens < 2000 and Temperature <= 0.5.
    let with = |max: &str, t: &str| {
        invoke(SONNET)
            .with("bedrock:MaxTokens", max)
            .with("bedrock:Temperature", t)
    };
    let cases = [
        ("2000", "0.7", false),
        ("2000", "0.5", false),
        ("1999", "0.7", false),
        ("1999", "0.5", true),
        ("100", "0", true),
    ];
    for (max, t, allowed) in cases {
        let (got, sid) = decide(&seed_boundaries(), &with(max, t));
        assert_eq!(got, allowed, "max_tokens {max}, temperature {t}");
        if allowed {
            assert_eq!(sid.as_deref(), Some("Statement[1]"));
        }
    }
    // No max_tokens in the request: the numeric condition has nothing to compare, so it fails.
    assert!(
        !decide(
            &seed_boundaries(),
            &invoke(SONNET).with("bedrock:Temperature", "0.1")
        )
        .0
    );
    // The first statement's `${AWS::AccountId}` is the gateway's account id.
    let model_arn =
        "arn:aws:bedrock:us-east-1:000000000000:model/anthropic.claude-3-sonnet-20240229-v1:0";
    assert!(
        decide(
            &seed_boundaries(),
            &invoke(model_arn)
                .with("aws:ResourceAccount", "000000000000")
                .with("aws:PrincipalAccount", "000000000000")
        )
        .0
    );
    assert!(
        !decide(
            &seed_boundaries(),
            &invoke(model_arn)
                .with("aws:ResourceAccount", "111111111111")
                .with("aws:PrincipalAccount", "000000000000")
        )
        .0
    );
}

#[test]
fn explicit_deny_beats_allow_and_no_allow_is_deny() {
    let doc = json!({"Statement": [
        {"Sid": "All", "Effect": "Allow", "Action": "bedrock:*", "Resource": "*"},
        {"Sid": "NoHaiku", "Effect": "Deny", "Action": "bedrock:InvokeModel", "Resource": "*haiku*"}
    ]});
    assert_eq!(
        decide(&doc, &invoke(HAIKU)),
        (false, Some("NoHaiku".into()))
    );
    assert_eq!(decide(&doc, &invoke(SONNET)), (true, Some("All".into())));
    let none =
        json!({"Statement": {"Effect": "Allow", "Action": "bedrock:CountTokens", "Resource": "*"}});
    assert_eq!(decide(&none, &invoke(SONNET)), (false, None));
    // Deny across policies: a deny in one beats an allow in another.
    let allow =
        Policy::parse(&json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
            .unwrap();
    let deny = Policy::parse(&json!({"Statement": [{"Sid": "D", "Effect": "Deny", "Action": "bedrock:Converse*", "Resource": "*"}]})).unwrap();
    let d = evaluate([&allow, &deny], &invoke(SONNET), SystemTime::now());
    assert_eq!((d.allowed, d.statement.as_deref()), (false, Some("D")));
}

#[test]
fn actions_and_resources_with_wildcards_and_negation() {
    let cases: &[(Value, &str, bool)] = &[
        (
            json!({"Effect": "Allow", "Action": "BEDROCK:invokemodel", "Resource": "*"}),
            SONNET,
            true,
        ),
        (
            json!({"Effect": "Allow", "Action": "bedrock:Invoke*", "Resource": "*"}),
            SONNET,
            true,
        ),
        (
            json!({"Effect": "Allow", "Action": "bedrock:InvokeMode?", "Resource": "*"}),
            SONNET,
            true,
        ),
        (
            json!({"Effect": "Allow", "Action": "bedrock:InvokeModel?", "Resource": "*"}),
            SONNET,
            false,
        ),
        (
            json!({"Effect": "Allow", "NotAction": "bedrock:CountTokens", "Resource": "*"}),
            SONNET,
            true,
        ),
        (
            json!({"Effect": "Allow", "NotAction": ["bedrock:InvokeModel", "bedrock:Converse"], "Resource": "*"}),
            SONNET,
            false,
        ),
        (
            json!({"Effect": "Allow", "Action": "*", "NotResource": "*haiku*"}),
            SONNET,
            true,
        ),
        (
            json!({"Effect": "Allow", "Action": "*", "NotResource": "*haiku*"}),
            HAIKU,
            false,
        ),
        // Resources are case-sensitive.
        (
            json!({"Effect": "Allow", "Action": "*", "Resource": "*CLAUDE-3-SONNET*"}),
            SONNET,
            false,
        ),
        (
            json!({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:bedrock:us-?ast-1::foundation-model/*"}),
            SONNET,
            true,
        ),
    ];
    for (i, (doc, resource, want)) in cases.iter().enumerate() {
        assert_eq!(decide(doc, &invoke(resource)).0, *want, "case {i}: {doc}");
    }
    assert!(wildcard("a*b*c", "aXXbYYc", false));
    assert!(!wildcard("a*b*c", "aXXbYY", false));
    assert!(wildcard("*", "", false));
    assert!(wildcard("a?c*", "abcdef", false));
}

#[test]
fn every_condition_operator() {
    let allow_if = |cond: Value| json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": cond}]});
    let r = invoke(SONNET)
        .with("aws:SourceIp", "10.1.2.3")
        .with("aws:PrincipalTag/team", "Search")
        .with("bedrock:MaxTokens", "512")
        .with("modelgate:Flag", "true")
        .with("modelgate:Groups", "a")
        .with("modelgate:Groups", "b");
    let cases: Vec<(Value, bool)> = vec![
        (
            json!({"StringEquals": {"aws:PrincipalTag/team": "Search"}}),
            true,
        ),
        (
            json!({"StringEquals": {"aws:principaltag/team": ["x", "Search"]}}),
            true,
        ),
        (
            json!({"StringEquals": {"aws:PrincipalTag/team": "search"}}),
            false,
        ),
        (
            json!({"StringNotEquals": {"aws:PrincipalTag/team": "Ads"}}),
            true,
        ),
        (
            json!({"StringNotEquals": {"aws:PrincipalTag/team": ["Ads", "Search"]}}),
            false,
        ),
        (
            json!({"StringEqualsIgnoreCase": {"aws:PrincipalTag/team": "SEARCH"}}),
            true,
        ),
        (
            json!({"StringNotEqualsIgnoreCase": {"aws:PrincipalTag/team": "SEARCH"}}),
            false,
        ),
        (
            json!({"StringLike": {"aws:PrincipalTag/team": "Se*"}}),
            true,
        ),
        (
            json!({"StringNotLike": {"aws:PrincipalTag/team": "Se*"}}),
            false,
        ),
        (json!({"NumericEquals": {"bedrock:MaxTokens": "512"}}), true),
        (
            json!({"NumericNotEquals": {"bedrock:MaxTokens": "512"}}),
            false,
        ),
        (
            json!({"NumericLessThan": {"bedrock:MaxTokens": 512}}),
            false,
        ),
        (
            json!({"NumericLessThanEquals": {"bedrock:MaxTokens": 512}}),
            true,
        ),
        (
            json!({"NumericGreaterThan": {"bedrock:MaxTokens": "511.5"}}),
            true,
        ),
        (
            json!({"NumericGreaterThanEquals": {"bedrock:MaxTokens": "513"}}),
            false,
        ),
        (
            json!({"DateLessThan": {"aws:CurrentTime": "2026-06-01T00:00:00Z"}}),
            true,
        ),
        (
            json!({"DateGreaterThan": {"aws:CurrentTime": "2026-06-01"}}),
            false,
        ),
        (
            json!({"DateLessThanEquals": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}}),
            true,
        ),
        (
            json!({"DateGreaterThanEquals": {"aws:CurrentTime": "1767225600"}}),
            true,
        ),
        (
            json!({"DateEquals": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}}),
            true,
        ),
        (
            json!({"DateNotEquals": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}}),
            false,
        ),
        (
            json!({"NumericLessThan": {"aws:EpochTime": "1767225601"}}),
            true,
        ),
        (json!({"Bool": {"modelgate:Flag": "true"}}), true),
        (json!({"Bool": {"modelgate:Flag": false}}), false),
        (json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}), true),
        (
            json!({"IpAddress": {"aws:SourceIp": ["192.168.0.0/16", "10.1.2.3"]}}),
            true,
        ),
        (
            json!({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
            false,
        ),
        (
            json!({"NotIpAddress": {"aws:SourceIp": "192.168.0.0/16"}}),
            true,
        ),
        (json!({"Null": {"bedrock:Temperature": "true"}}), true),
        (json!({"Null": {"bedrock:MaxTokens": "true"}}), false),
        // Missing keys: false, except …IfExists and the negated operators.
        (
            json!({"StringEquals": {"aws:PrincipalTag/cost-center": "x"}}),
            false,
        ),
        (
            json!({"StringEqualsIfExists": {"aws:PrincipalTag/cost-center": "x"}}),
            true,
        ),
        (
            json!({"NumericLessThanIfExists": {"bedrock:Temperature": "0.5"}}),
            true,
        ),
        (
            json!({"NumericLessThanIfExists": {"bedrock:MaxTokens": "100"}}),
            false,
        ),
        (
            json!({"StringNotEquals": {"aws:PrincipalTag/cost-center": "x"}}),
            true,
        ),
        // Multi-valued keys.
        (
            json!({"ForAnyValue:StringEquals": {"modelgate:Groups": ["b", "z"]}}),
            true,
        ),
        (
            json!({"ForAnyValue:StringEquals": {"modelgate:Groups": ["z"]}}),
            false,
        ),
        (
            json!({"ForAllValues:StringEquals": {"modelgate:Groups": ["a", "b", "c"]}}),
            true,
        ),
        (
            json!({"ForAllValues:StringEquals": {"modelgate:Groups": ["a"]}}),
            false,
        ),
        (
            json!({"ForAllValues:StringEquals": {"modelgate:Missing": ["a"]}}),
            true,
        ),
        (
            json!({"ForAnyValue:StringEquals": {"modelgate:Missing": ["a"]}}),
            false,
        ),
        // Several keys under one operator, several operators: all must hold.
        (
            json!({"StringEquals": {"aws:PrincipalTag/team": "Search", "modelgate:Flag": "true"}}),
            true,
        ),
        (
            json!({"StringEquals": {"aws:PrincipalTag/team": "Search"}, "IpAddress": {"aws:SourceIp": "8.8.8.8/32"}}),
            false,
        ),
        // Policy variables.
        (
            json!({"StringEquals": {"aws:PrincipalTag/team": "${aws:PrincipalTag/team}"}}),
            true,
        ),
        (
            json!({"StringEquals": {"aws:PrincipalTag/team": "${aws:PrincipalTag/none}"}}),
            false,
        ),
    ];
    for (i, (cond, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            decide(&allow_if(cond.clone()), &r).0,
            want,
            "case {i}: {cond}"
        );
    }
}

#[test]
fn malformed_policies_are_refused_naming_statement_and_field() {
    let cases: &[(Value, &[&str])] = &[
        (
            json!({"Statement": [{"Sid": "S1", "Effect": "Permit", "Action": "*"}]}),
            &["S1", "Effect"],
        ),
        (
            json!({"Statement": [{"Sid": "S2", "Effect": "Allow", "Action": "*", "Condition": {"NumericLessThen": {"bedrock:MaxTokens": "1"}}}]}),
            &["S2", "Condition", "NumericLessThen"],
        ),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": "*", "Condition": {"NumericLessThan": {"bedrock:MaxTokens": "many"}}}]}),
            &["Statement[0]", "many"],
        ),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/99"}}}]}),
            &["10.0.0.0/99"],
        ),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": "*", "Condition": {"DateLessThan": {"aws:CurrentTime": "tomorrow"}}}]}),
            &["tomorrow"],
        ),
        (
            json!({"Statement": [{"Sid": "W", "Effect": "Allow", "Action": "bedrock:**", "Resource": "*"}]}),
            &["W", "Action", "**"],
        ),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": "InvokeModel"}]}),
            &["service:Action"],
        ),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": "*", "NotAction": "x:y"}]}),
            &["not both"],
        ),
        (json!({"Statement": [{"Effect": "Allow"}]}), &["Action"]),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resources": "*"}]}),
            &["Resources", "unknown"],
        ),
        (
            json!({"Version": "2020-01-01", "Statement": []}),
            &["Version"],
        ),
        (json!({"Statement": []}), &["Statement"]),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}),
            &["empty"],
        ),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": "*", "Condition": {"NullIfExists": {"a:b": "true"}}}]}),
            &["NullIfExists"],
        ),
        (json!([1, 2]), &["object"]),
    ];
    for (doc, words) in cases {
        let e = Policy::parse(doc).expect_err(&doc.to_string()).to_string();
        for w in *words {
            assert!(e.contains(w), "error for {doc} should name {w}: {e}");
        }
    }
}
