//! Model identifiers as AWS clients send them.
//!
//! Bedrock callers name a model by a plain id with a version suffix
//! (`anthropic.claude-3-haiku-20240307-v1:0`), by a cross-region inference profile id
//! (`us.anthropic.claude-3-haiku-20240307-v1:0`) or by an ARN
//! (`arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0`,
//! `arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.…`). All of them name
//! the same model; [`candidates`] lists the names to look up, most specific first, so a model
//! configured once under its plain id answers to every form.

/// Geography prefixes of Bedrock's cross-region (system-defined) inference profiles.
const PROFILE_PREFIXES: &[&str] = &[
    "us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "ca.", "global.",
];

/// The resource id inside a Bedrock ARN (`arn:<partition>:bedrock:<region>:<account>:<type>/<id>`),
/// or `None` when `id` is not a Bedrock ARN.
pub fn arn_resource(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let _partition = parts.next()?;
    if parts.next()? != "bedrock" {
        return None;
    }
    let _region = parts.next()?;
    let _account = parts.next()?;
    let resource = parts.next()?;
    let (_kind, name) = resource.split_once('/')?;
    (!name.is_empty()).then_some(name)
}

/// `id` without a cross-region inference profile prefix (`us.`, `eu.`, `global.` …).
pub fn without_profile_prefix(id: &str) -> &str {
    PROFILE_PREFIXES
        .iter()
        .find_map(|p| id.strip_prefix(p))
        .filter(|rest| rest.contains('.'))
        .unwrap_or(id)
}

/// The names to look `id` up by, most specific first, without repeats: the id as given, the ARN's
/// resource id, and that id without its inference-profile prefix.
pub fn candidates(id: &str) -> Vec<&str> {
    let resource = arn_resource(id).unwrap_or(id);
    let base = without_profile_prefix(resource);
    let mut out = vec![id];
    for name in [resource, base] {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The model family of a Bedrock id: the provider part before the first `.` once ARN and
/// profile prefix are gone (`anthropic`, `amazon`, `meta`, `mistral`, `cohere` …), and the rest.
pub fn family(id: &str) -> Option<(&str, &str)> {
    let base = without_profile_prefix(arn_resource(id).unwrap_or(id));
    base.split_once('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_reduces_to_the_plain_id() {
        let plain = "anthropic.claude-3-haiku-20240307-v1:0";
        assert_eq!(candidates(plain), vec![plain]);
        assert_eq!(
            candidates("us.anthropic.claude-3-haiku-20240307-v1:0"),
            vec!["us.anthropic.claude-3-haiku-20240307-v1:0", plain]
        );
        assert_eq!(
            candidates("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"),
            vec!["arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0", plain]
        );
        let profile_arn =
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0";
        assert_eq!(
            candidates(profile_arn),
            vec![
                profile_arn,
                "eu.anthropic.claude-3-haiku-20240307-v1:0",
                plain
            ]
        );
        assert_eq!(
            arn_resource(
                "arn:aws-us-gov:bedrock:us-gov-west-1:1:application-inference-profile/abc123"
            ),
            Some("abc123")
        );
    }

    #[test]
    fn non_arns_and_short_names_are_left_alone() {
        assert_eq!(arn_resource("arn:aws:s3:::bucket/key"), None);
        assert_eq!(
            arn_resource("arn:aws:bedrock:us-east-1::foundation-model/"),
            None
        );
        assert_eq!(arn_resource("local.smollm2-135m-instruct"), None);
        // A name that merely starts like a prefix keeps it.
        assert_eq!(without_profile_prefix("us.gpt"), "us.gpt");
        assert_eq!(
            without_profile_prefix("global.amazon.nova-lite-v1:0"),
            "amazon.nova-lite-v1:0"
        );
    }

    #[test]
    fn family_of_each_form() {
        assert_eq!(
            family("meta.llama3-8b-instruct-v1:0"),
            Some(("meta", "llama3-8b-instruct-v1:0"))
        );
        assert_eq!(
            family("arn:aws:bedrock:us-west-2::foundation-model/amazon.titan-embed-text-v2:0"),
            Some(("amazon", "titan-embed-text-v2:0"))
        );
        assert_eq!(
            family("us.mistral.mistral-large-2407-v1:0").map(|f| f.0),
            Some("mistral")
        );
        assert_eq!(family("gpt4"), None);
    }
}
