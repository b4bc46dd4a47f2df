//! Structured output and tool use for the embedded chat model.
//!
//! The embedded model cannot be trusted to follow a format from instructions alone (it has 135M
//! parameters), so the format is enforced while sampling: a llama.cpp grammar (GBNF) built from
//! the JSON schema masks every token that could not continue a valid answer. This module
//! checks schemas (keywords the grammar cannot enforce are refused, naming them), builds the
//! grammar for a request, describes the tools in the prompt, renders earlier tool calls and
//! results as text, and turns the model's `<tool_call>` text back into tool-use blocks.
//!
//! Tool calls use the convention of the Hermes and Qwen chat templates, since the GGUF's own
//! template (ChatML) has no tool section: `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`.
//! With `tool_choice` auto the grammar is lazy — the model writes freely and the grammar takes
//! over from the moment it opens `<tool_call>`; with `any` or a named tool the answer must be
//! one call. The model makes at most one call per turn.

use modelgate_types::{
    ChatRequest, ContentBlock, Error, ResponseFormat, ToolChoice, ToolResultContent, ToolSpec,
};
use serde_json::{json, Value};

/// Opens a tool call in the model's output.
pub(crate) const TOOL_OPEN: &str = "<tool_call>";
/// Closes it.
pub(crate) const TOOL_CLOSE: &str = "</tool_call>";

/// JSON Schema keywords the grammar enforces.
const ENFORCED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
];

/// Assertions JSON Schema defines that the grammar cannot enforce: refused rather than
/// silently ignored, so an answer never fails a schema the caller believed was applied.
/// Anything else (annotations such as `title`, `description`, `default`, `examples`, vendor
/// extensions) constrains nothing and is accepted.
const UNSUPPORTED: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "multipleOf",
    "$dynamicRef",
    "$recursiveRef",
];

/// Refuse a schema that uses a keyword the grammar cannot enforce; `what` names the schema in
/// the message (`response_format.json_schema.schema`, `tools[get_weather].parameters`).
pub(crate) fn check_schema(schema: &Value, what: &str) -> Result<(), Error> {
    walk(schema, what, "")
}

fn walk(schema: &Value, what: &str, at: &str) -> Result<(), Error> {
    let Value::Object(map) = schema else {
        // `true` / `false` schemas are fine; anything else is not a schema.
        return match schema {
            Value::Bool(_) => Ok(()),
            _ => Err(refuse(what, at, "a schema must be an object or a boolean")),
        };
    };
    for (key, value) in map {
        if UNSUPPORTED.contains(&key.as_str()) {
            return Err(refuse(
                what,
                at,
                &format!(
                    "the keyword '{key}' is not supported by the embedded model's constrained decoding (supported: {})",
                    ENFORCED.join(", ")
                ),
            ));
        }
        let here = format!("{at}/{key}");
        match key.as_str() {
            "$ref" if !value.as_str().is_some_and(|r| r.starts_with('#')) => {
                return Err(refuse(
                    what,
                    at,
                    "only references into the same schema ('#/…') are supported in '$ref'",
                ));
            }
            "properties" | "$defs" | "definitions" => {
                if let Value::Object(children) = value {
                    for (name, child) in children {
                        walk(child, what, &format!("{here}/{name}"))?;
                    }
                }
            }
            "items" | "additionalProperties" => walk(value, what, &here)?,
            "prefixItems" | "anyOf" | "oneOf" | "allOf" => {
                let Value::Array(children) = value else {
                    return Err(refuse(what, &here, "must be an array of schemas"));
                };
                for (i, child) in children.iter().enumerate() {
                    walk(child, what, &format!("{here}/{i}"))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn refuse(what: &str, at: &str, why: &str) -> Error {
    let location = if at.is_empty() {
        String::new()
    } else {
        format!(" at {at}")
    };
    Error::validation(format!("{what}{location}: {why}")).with_code("unsupported_schema")
}

/// A GBNF grammar for a JSON schema, with llama.cpp's converter.
fn schema_grammar(schema: &Value, what: &str) -> Result<String, Error> {
    check_schema(schema, what)?;
    convert(schema, what)
}

/// llama.cpp's conversion of a schema already checked.
fn convert(schema: &Value, what: &str) -> Result<String, Error> {
    llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
        Error::validation(format!(
            "{what}: the schema cannot be turned into a grammar ({e})"
        ))
        .with_code("unsupported_schema")
    })
}

/// How sampling is constrained for one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Constraint {
    /// The GBNF grammar; its start rule is `root`.
    pub grammar: String,
    /// Apply the grammar only from this text on (lazy grammar), `None` from the first token.
    pub trigger: Option<&'static str>,
    /// The output may hold tool calls (to be split off the text).
    pub calls: bool,
}

/// What the request asks of the output, as a grammar; `None` when the output is free text.
pub(crate) fn constraint(request: &ChatRequest) -> Result<Option<Constraint>, Error> {
    let answer = match &request.response_format {
        None => None,
        Some(ResponseFormat::JsonObject) => Some(schema_grammar(
            &json!({"type": "object"}),
            "response_format",
        )?),
        Some(ResponseFormat::JsonSchema { name, schema, .. }) => Some(schema_grammar(
            schema,
            &format!("the response schema '{name}'"),
        )?),
    };
    let calls = match tool_grammar(request)? {
        None => {
            return Ok(answer.map(|grammar| Constraint {
                grammar,
                trigger: None,
                calls: false,
            }))
        }
        Some(calls) => calls,
    };
    let forced = matches!(
        request.tools.as_ref().and_then(|t| t.tool_choice.as_ref()),
        Some(ToolChoice::Any(_) | ToolChoice::Tool { .. })
    );
    Ok(Some(match (forced, answer) {
        (true, _) => Constraint {
            grammar: calls,
            trigger: None,
            calls: true,
        },
        // The model may answer in text or call: the grammar takes over once a call opens.
        (false, None) => Constraint {
            grammar: calls,
            trigger: Some(TOOL_OPEN),
            calls: true,
        },
        // Either a JSON answer or a call, from the first token.
        (false, Some(answer)) => Constraint {
            grammar: format!(
                "root ::= answer-root | call-root\n{}{}",
                prefix_rules(&answer, "answer-"),
                prefix_rules(&calls, "call-")
            ),
            trigger: None,
            calls: true,
        },
    }))
}

/// The tools the model may call now: `None` when there are none or `tool_choice` is none.
fn callable(request: &ChatRequest) -> Option<Vec<&ToolSpec>> {
    let config = request.tools.as_ref()?;
    let specs: Vec<&ToolSpec> = config.tools.iter().filter_map(|t| t.spec()).collect();
    match &config.tool_choice {
        Some(ToolChoice::None) => None,
        Some(ToolChoice::Tool { name }) => {
            Some(specs.into_iter().filter(|s| &s.name == name).collect())
        }
        _ => Some(specs),
    }
    .filter(|s: &Vec<&ToolSpec>| !s.is_empty())
}

/// A tool's argument schema (Converse keeps it under `json`).
fn parameters(spec: &ToolSpec) -> &Value {
    spec.input_schema.get("json").unwrap_or(&spec.input_schema)
}

/// The grammar of one tool call, `<tool_call>` included.
fn tool_grammar(request: &ChatRequest) -> Result<Option<String>, Error> {
    if let Some(config) = &request.tools {
        if let Some(ToolChoice::Tool { name }) = &config.tool_choice {
            if !config
                .tools
                .iter()
                .any(|t| t.spec().is_some_and(|s| &s.name == name))
            {
                return Err(Error::validation(format!(
                    "tool_choice names the tool '{name}', which is not among the tools"
                )));
            }
        }
    }
    let Some(specs) = callable(request) else {
        return Ok(None);
    };
    let mut alternatives = Vec::with_capacity(specs.len());
    for spec in specs {
        let params = parameters(spec);
        check_schema(params, &format!("the parameters of tool '{}'", spec.name))?;
        alternatives.push(json!({
            "type": "object",
            "properties": {"name": {"const": spec.name}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        }));
    }
    let schema = match alternatives.len() {
        1 => alternatives.remove(0),
        _ => json!({"anyOf": alternatives}),
    };
    // Each tool's parameters were checked above; the wrapper adds only enforced keywords.
    let body = convert(&schema, "the tools' parameters")?;
    Ok(Some(format!(
        "root ::= {} \"\\n\" body-root \"\\n\" {}\n{}",
        gbnf_literal(TOOL_OPEN),
        gbnf_literal(TOOL_CLOSE),
        prefix_rules(&body, "body-")
    )))
}

fn gbnf_literal(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Rename every rule of a GBNF grammar with `prefix`, so two grammars can be joined. Literals
/// (`"…"`), character classes (`[…]`) and repetition bounds (`{m,n}`) are left alone.
fn prefix_rules(grammar: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(grammar.len() + 64);
    let mut chars = grammar.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            out.push_str(prefix);
            out.push_str(word);
            word.clear();
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' | '[' | '{' => {
                flush(&mut word, &mut out);
                let close = match c {
                    '"' => '"',
                    '[' => ']',
                    _ => '}',
                };
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == close {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => word.push(c),
            _ => {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The system text that tells the model which tools it has and how to call them; `None` when
/// it has none it may call.
pub(crate) fn tools_prompt(request: &ChatRequest) -> Option<String> {
    let specs = callable(request)?;
    let listed: Vec<Value> = specs
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "description": s.description.clone().unwrap_or_default(),
                "parameters": parameters(s),
            })
        })
        .collect();
    Some(format!(
        "You can call functions. Their signatures are:\n{}\nTo call one, answer with exactly:\n{TOOL_OPEN}\n{{\"name\": <function name>, \"arguments\": <arguments as a JSON object>}}\n{TOOL_CLOSE}",
        Value::Array(listed)
    ))
}

/// The response schema as an instruction, so the model knows what the grammar will hold it to.
pub(crate) fn format_prompt(request: &ChatRequest) -> Option<String> {
    match &request.response_format {
        None => None,
        Some(ResponseFormat::JsonObject) => Some("Answer with a JSON object.".into()),
        Some(ResponseFormat::JsonSchema { schema, .. }) => Some(format!(
            "Answer with a JSON value that matches this JSON schema:\n{schema}"
        )),
    }
}

/// A content block as prompt text: text as is, a tool call in the call convention, a tool
/// result in `<tool_response>` tags (as the Hermes and Qwen templates write them).
pub(crate) fn block_text(block: &ContentBlock) -> Option<String> {
    match block {
        ContentBlock::Text(t) => Some(t.clone()),
        ContentBlock::ToolUse(call) => Some(format!(
            "{TOOL_OPEN}\n{}\n{TOOL_CLOSE}",
            json!({"name": call.name, "arguments": call.input})
        )),
        ContentBlock::ToolResult(result) => {
            let mut text = String::from("<tool_response>\n");
            for part in &result.content {
                match part {
                    ToolResultContent::Text(t) => text.push_str(t),
                    ToolResultContent::Json(v) => text.push_str(&v.to_string()),
                    _ => text.push_str("[non-text content]"),
                }
            }
            text.push_str("\n</tool_response>");
            Some(text)
        }
        _ => None,
    }
}

/// A piece of the model's output, once tool calls are taken out of it.
#[derive(Debug, PartialEq)]
pub(crate) enum Piece {
    /// Text for the caller.
    Text(String),
    /// A complete tool call.
    Call {
        /// The tool's name.
        name: String,
        /// Its arguments.
        arguments: Value,
    },
}

/// Splits streamed output into text and tool calls, holding back text that might be the start
/// of `<tool_call>` until it is clear.
#[derive(Debug, Default)]
pub(crate) struct CallSplitter {
    buffer: String,
    in_call: bool,
}

impl CallSplitter {
    /// Feed released text; return what is settled.
    pub(crate) fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buffer.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.in_call {
                let Some(end) = self.buffer.find(TOOL_CLOSE) else {
                    return out;
                };
                let body: String = self.buffer.drain(..end + TOOL_CLOSE.len()).collect();
                self.in_call = false;
                out.push(parse_call(&body[..end]));
            } else if let Some(start) = self.buffer.find(TOOL_OPEN) {
                let before: String = self.buffer.drain(..start + TOOL_OPEN.len()).collect();
                let text = &before[..start];
                if !text.trim().is_empty() {
                    out.push(Piece::Text(text.to_string()));
                }
                self.in_call = true;
            } else {
                // Keep the longest tail that could still grow into `<tool_call>`.
                let keep = (1..TOOL_OPEN.len())
                    .rev()
                    .find(|&n| {
                        self.buffer.len() >= n
                            && self.buffer.is_char_boundary(self.buffer.len() - n)
                            && TOOL_OPEN.starts_with(&self.buffer[self.buffer.len() - n..])
                    })
                    .unwrap_or(0);
                let settled = self.buffer.len() - keep;
                if settled > 0 {
                    out.push(Piece::Text(self.buffer.drain(..settled).collect()));
                }
                return out;
            }
        }
    }

    /// The end of generation: what is left, as text (an unfinished call included, so nothing
    /// the model wrote is lost).
    pub(crate) fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        let rest = if std::mem::take(&mut self.in_call) {
            format!("{TOOL_OPEN}{rest}")
        } else {
            rest
        };
        (!rest.is_empty()).then_some(rest)
    }
}

/// A call's body; the grammar guarantees its shape, so a body that does not parse (only
/// possible without a grammar) is returned as text.
fn parse_call(body: &str) -> Piece {
    let parsed: Option<(String, Value)> =
        serde_json::from_str::<Value>(body.trim())
            .ok()
            .and_then(|v| {
                let name = v.get("name")?.as_str()?.to_string();
                let arguments = v.get("arguments").cloned().unwrap_or_else(|| json!({}));
                Some((name, arguments))
            });
    match parsed {
        Some((name, arguments)) => Piece::Call { name, arguments },
        None => Piece::Text(format!("{TOOL_OPEN}{body}{TOOL_CLOSE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::{Tool, ToolConfig};

    fn with_tools(choice: Option<ToolChoice>) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            tools: Some(ToolConfig {
                tools: vec![Tool::ToolSpec(ToolSpec {
                    name: "get_weather".into(),
                    description: Some("Weather in a city".into()),
                    input_schema: json!({"json": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"]
                    }}),
                })],
                tool_choice: choice,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn unsupported_keywords_are_named_with_their_place() {
        let schema = json!({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": true}}});
        let e = check_schema(&schema, "the response schema 'x'").unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("'uniqueItems'"), "{}", e.message);
        assert!(e.message.contains("/properties/tags"), "{}", e.message);
        let remote = json!({"$ref": "https://example.com/s.json"});
        assert!(check_schema(&remote, "s").is_err());
        let fine = json!({"title": "T", "description": "d", "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 1, "examples": [2]}},
            "$defs": {"b": {"type": "string"}}, "x-vendor": 1});
        assert!(check_schema(&fine, "s").is_ok());
    }

    #[test]
    fn prefixing_renames_rules_but_not_literals() {
        let g = "root ::= item (\",\" item){0,3} [a-z-]\nitem ::= \"root\\\" x\" space\n";
        let p = prefix_rules(g, "p-");
        assert_eq!(
            p,
            "p-root ::= p-item (\",\" p-item){0,3} [a-z-]\np-item ::= \"root\\\" x\" p-space\n"
        );
    }

    #[test]
    fn forced_calls_are_grammars_from_the_first_token_and_auto_is_lazy() {
        let forced = constraint(&with_tools(Some(ToolChoice::Any(json!({})))))
            .unwrap()
            .unwrap();
        assert_eq!(forced.trigger, None);
        assert!(forced.grammar.starts_with("root ::= \"<tool_call>\""));
        let auto = constraint(&with_tools(None)).unwrap().unwrap();
        assert_eq!(auto.trigger, Some(TOOL_OPEN));
        assert_eq!(
            constraint(&with_tools(Some(ToolChoice::None))).unwrap(),
            None
        );
        let missing = constraint(&with_tools(Some(ToolChoice::Tool {
            name: "nope".into(),
        })));
        assert!(missing.is_err());
    }

    #[test]
    fn the_splitter_separates_text_and_calls_across_pieces() {
        let mut s = CallSplitter::default();
        let mut pieces = Vec::new();
        for chunk in [
            "Let me check. <tool",
            "_call>\n{\"name\": \"get_weather\", ",
            "\"arguments\": {\"city\": \"Hanoi\"}}\n</tool_",
            "call>",
        ] {
            pieces.extend(s.push(chunk));
        }
        assert_eq!(
            pieces,
            vec![
                Piece::Text("Let me check. ".into()),
                Piece::Call {
                    name: "get_weather".into(),
                    arguments: json!({"city": "Hanoi"})
                }
            ]
        );
        assert_eq!(s.finish(), None);
        let mut cut = CallSplitter::default();
        assert!(cut.push("<tool_call>\n{\"name\"").is_empty());
        assert_eq!(cut.finish().as_deref(), Some("<tool_call>\n{\"name\""));
        let mut plain = CallSplitter::default();
        assert_eq!(plain.push("a < b"), vec![Piece::Text("a < b".into())]);
        assert_eq!(plain.push(" <"), vec![Piece::Text(" ".into())]);
        assert_eq!(plain.finish().as_deref(), Some("<"));
    }
}
