//! Raw prompts as model-native bodies carry them, turned back into a conversation.
//!
//! Llama, Mistral and Claude text-completion callers send one string already formatted with the
//! model's chat template. To serve such a body with any model, the template's turns are parsed
//! back into system and messages; the serving model then applies its own template. A prompt
//! with no recognisable template is one user turn.

use modelgate_types::{Message, Role, SystemBlock};

/// A prompt taken apart: system text and the turns.
#[derive(Debug, PartialEq)]
pub struct Conversation {
    pub system: Vec<SystemBlock>,
    pub messages: Vec<Message>,
}

fn push(messages: &mut Vec<Message>, role: Role, text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => {
            let joined = format!("{}\n\n{text}", last.joined_text());
            *last = Message::text(role, joined);
        }
        _ => messages.push(Message::text(role, text)),
    }
}

fn system(text: &str) -> Vec<SystemBlock> {
    let text = text.trim();
    if text.is_empty() {
        Vec::new()
    } else {
        vec![SystemBlock::Text(text.to_string())]
    }
}

/// Parse a prompt in whichever template it uses: Llama 3 headers, `[INST]` (Llama 2, Mistral),
/// or plain text.
pub fn parse(prompt: &str) -> Conversation {
    if prompt.contains("<|start_header_id|>") {
        llama3(prompt)
    } else if prompt.contains("[INST]") {
        inst(prompt)
    } else {
        Conversation {
            system: Vec::new(),
            messages: vec![Message::text(Role::User, prompt.trim())],
        }
    }
}

/// `<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n…<|eot_id|>…`
fn llama3(prompt: &str) -> Conversation {
    let mut sys = String::new();
    let mut messages = Vec::new();
    for part in prompt.split("<|start_header_id|>").skip(1) {
        let Some((role, rest)) = part.split_once("<|end_header_id|>") else {
            continue;
        };
        let text = rest.split("<|eot_id|>").next().unwrap_or_default();
        match role.trim() {
            "system" => sys.push_str(text),
            "assistant" => push(&mut messages, Role::Assistant, text),
            // user, ipython (tool results) and anything else speak as the user.
            _ => push(&mut messages, Role::User, text),
        }
    }
    Conversation {
        system: system(&sys),
        messages,
    }
}

/// `<s>[INST] <<SYS>>\n…\n<</SYS>>\n\nquestion [/INST] answer</s><s>[INST] … [/INST]`
fn inst(prompt: &str) -> Conversation {
    let clean = prompt.replace("<s>", "").replace("</s>", "");
    let mut sys = String::new();
    let mut messages = Vec::new();
    let mut parts = clean.split("[INST]");
    if let Some(before) = parts.next() {
        push(&mut messages, Role::User, before);
    }
    for part in parts {
        let (user, answer) = part.split_once("[/INST]").unwrap_or((part, ""));
        let user = match (user.find("<<SYS>>"), user.find("<</SYS>>")) {
            (Some(a), Some(b)) if a < b => {
                sys.push_str(&user[a + "<<SYS>>".len()..b]);
                format!("{}{}", &user[..a], &user[b + "<</SYS>>".len()..])
            }
            _ => user.to_string(),
        };
        push(&mut messages, Role::User, &user);
        push(&mut messages, Role::Assistant, answer);
    }
    Conversation {
        system: system(&sys),
        messages,
    }
}

/// Parse an Anthropic text-completion prompt: `"\n\nHuman: … \n\nAssistant:"`. Text before the
/// first turn is the system prompt. Bedrock requires the prompt to start with a Human turn
/// (after an optional system part) and to end with an Assistant turn; `None` when it does not.
pub fn human_assistant(prompt: &str) -> Option<Conversation> {
    const HUMAN: &str = "\n\nHuman:";
    const ASSISTANT: &str = "\n\nAssistant:";
    let first = prompt.find(HUMAN)?;
    let last_assistant = prompt.rfind(ASSISTANT)?;
    if last_assistant < first || prompt[last_assistant..].contains(HUMAN) {
        return None;
    }
    let mut messages = Vec::new();
    let mut rest = &prompt[first..];
    while !rest.is_empty() {
        let (role, body) = if let Some(b) = rest.strip_prefix(HUMAN) {
            (Role::User, b)
        } else if let Some(b) = rest.strip_prefix(ASSISTANT) {
            (Role::Assistant, b)
        } else {
            return None;
        };
        let end = [body.find(HUMAN), body.find(ASSISTANT)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(body.len());
        push(&mut messages, role, &body[..end]);
        rest = &body[end..];
    }
    Some(Conversation {
        system: system(&prompt[..first]),
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_template() {
        let c = parse("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
        assert_eq!(c.system, vec![SystemBlock::Text("Be brief.".into())]);
        assert_eq!(c.messages, vec![Message::text(Role::User, "What is 2+2?")]);
    }

    #[test]
    fn inst_template_with_history() {
        let c = parse("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello!</s><s>[INST] Capital of France? [/INST]");
        assert_eq!(c.system, vec![SystemBlock::Text("Be brief.".into())]);
        assert_eq!(
            c.messages,
            vec![
                Message::text(Role::User, "Hi"),
                Message::text(Role::Assistant, "Hello!"),
                Message::text(Role::User, "Capital of France?"),
            ]
        );
    }

    #[test]
    fn plain_text_is_one_user_turn() {
        let c = parse("  Tell me a joke.  ");
        assert_eq!(
            c.messages,
            vec![Message::text(Role::User, "Tell me a joke.")]
        );
        assert!(c.system.is_empty());
    }

    #[test]
    fn human_assistant_turns() {
        let c = human_assistant("You are terse.\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Capital of France?\n\nAssistant:").unwrap();
        assert_eq!(c.system, vec![SystemBlock::Text("You are terse.".into())]);
        assert_eq!(c.messages.len(), 3);
        assert_eq!(
            c.messages[2],
            Message::text(Role::User, "Capital of France?")
        );
        assert!(human_assistant("Hi there").is_none());
        assert!(human_assistant("\n\nHuman: Hi").is_none());
        assert!(human_assistant("\n\nAssistant: x\n\nHuman: Hi").is_none());
    }
}
