//! The detectors that need meaning rather than patterns, all on the embedded MiniLM (or any
//! configured embedding model): denied topics (the topic's definition and examples), prompt
//! attacks (a shipped corpus of jailbreak and injection prompts), the content categories
//! (shipped example sentences per category) and contextual grounding (answer sentences
//! against the grounding source, the answer against the query).
//!
//! A text is cut into chunks of a few sentences; each chunk (and, for prompt attacks, the
//! whole text) is embedded once per call, and a detector's score is the best cosine
//! similarity of any chunk to any of its prototypes. Scores map to AWS's confidence bins by
//! thresholds calibrated on the labelled sets in `crates/core/tests/guardrails_semantic.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use modelgate_types::Error;
use tokio::sync::OnceCell;

use super::def::{FilterType, Strength};
use crate::semantic::{dot, normalise};

/// The shipped prompt-attack corpus (one prompt per line).
const ATTACKS: &str = include_str!("attacks.txt");
/// The shipped content-category examples (`CATEGORY<TAB>sentence`).
const CONTENT: &str = include_str!("content.txt");

/// Characters per chunk (MiniLM reads at most 256 word pieces).
const CHUNK: usize = 400;

/// Turns texts into vectors.
#[async_trait]
pub trait Embed: Send + Sync + 'static {
    /// One unit vector per text.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error>;
}

/// Similarity thresholds: where a score enters each confidence bin.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bins {
    /// LOW confidence from this cosine similarity.
    pub low: f32,
    /// MEDIUM from this.
    pub medium: f32,
    /// HIGH from this.
    pub high: f32,
}

impl Bins {
    /// The confidence bin of `score`.
    pub fn confidence(&self, score: f32) -> Strength {
        if score >= self.high {
            Strength::High
        } else if score >= self.medium {
            Strength::Medium
        } else if score >= self.low {
            Strength::Low
        } else {
            Strength::None
        }
    }
}

/// Whether a filter of `strength` acts on a detection of `confidence` (AWS's rule: a HIGH
/// filter acts from LOW confidence, MEDIUM from MEDIUM, LOW only on HIGH).
pub fn acts(strength: Strength, confidence: Strength) -> bool {
    match strength {
        Strength::None => false,
        Strength::High => confidence >= Strength::Low,
        Strength::Medium => confidence >= Strength::Medium,
        Strength::Low => confidence >= Strength::High,
    }
}

/// The calibrated thresholds (`[guardrail_settings]` may override them).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Denied topics: a chunk this similar to the definition or an example is on the topic.
    pub topic: f32,
    /// Prompt attacks.
    pub prompt_attack: Bins,
    /// Content categories.
    pub content: Bins,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            topic: 0.35,
            prompt_attack: Bins {
                low: 0.52,
                medium: 0.60,
                high: 0.70,
            },
            content: Bins {
                low: 0.40,
                medium: 0.45,
                high: 0.55,
            },
        }
    }
}

fn best(chunks: &[Vec<f32>], prototypes: &[Vec<f32>]) -> f32 {
    chunks
        .iter()
        .flat_map(|c| prototypes.iter().map(move |p| dot(c, p)))
        .fold(0.0, f32::max)
}

/// Cut `text` into chunks of whole sentences of at most [`CHUNK`] characters (a longer
/// sentence is cut at a character boundary).
pub fn chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for sentence in sentences(text) {
        if !current.is_empty() && current.len() + sentence.len() > CHUNK {
            out.push(std::mem::take(&mut current));
        }
        if sentence.len() > CHUNK {
            let mut rest = sentence;
            while rest.len() > CHUNK {
                let mut cut = CHUNK;
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.push(rest[..cut].to_string());
                rest = &rest[cut..];
            }
            current.push_str(rest);
        } else {
            current.push_str(sentence);
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out.retain(|c| c.chars().any(char::is_alphanumeric));
    out
}

/// The sentences of `text`, each with its trailing space (split after `.`, `!`, `?` or a
/// newline followed by whitespace).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let end = matches!(b, b'.' | b'!' | b'?' | b'\n')
            && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
        if end {
            out.push(&text[start..=i]);
            start = i + 1;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

/// A topic's prototypes: its definition and examples, embedded once.
#[derive(Debug)]
pub struct TopicVectors {
    /// The topic's name.
    pub name: String,
    vectors: Vec<Vec<f32>>,
}

/// The shipped corpora, embedded once per embedding model.
struct Corpora {
    attacks: Vec<Vec<f32>>,
    content: HashMap<FilterType, Vec<Vec<f32>>>,
}

/// The semantic detectors of one embedding model.
pub struct Semantic {
    embed: Arc<dyn Embed>,
    thresholds: Thresholds,
    corpora: OnceCell<Corpora>,
}

impl std::fmt::Debug for Semantic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semantic")
            .field("thresholds", &self.thresholds)
            .finish()
    }
}

/// The embedded chunks of one text (embedded once, read by every detector).
#[derive(Debug, Default)]
pub struct Embedded {
    /// One vector per chunk (the whole text last, when it has more than one chunk).
    pub chunks: Vec<Vec<f32>>,
}

fn content_examples() -> HashMap<FilterType, Vec<String>> {
    let mut out: HashMap<FilterType, Vec<String>> = HashMap::new();
    for line in CONTENT.lines().filter(|l| !l.starts_with('#')) {
        let Some((cat, text)) = line.split_once('\t') else {
            continue;
        };
        let kind = match cat {
            "SEXUAL" => FilterType::Sexual,
            "VIOLENCE" => FilterType::Violence,
            "HATE" => FilterType::Hate,
            "INSULTS" => FilterType::Insults,
            "MISCONDUCT" => FilterType::Misconduct,
            _ => continue,
        };
        out.entry(kind).or_default().push(text.trim().to_string());
    }
    out
}

impl Semantic {
    /// Detectors on `embed` with `thresholds`.
    pub fn new(embed: Arc<dyn Embed>, thresholds: Thresholds) -> Self {
        Self {
            embed,
            thresholds,
            corpora: OnceCell::new(),
        }
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    async fn corpora(&self) -> Result<&Corpora, Error> {
        self.corpora
            .get_or_try_init(|| async {
                let attacks: Vec<String> = ATTACKS
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect();
                let attacks = self.embed.embed(attacks).await?;
                let mut content = HashMap::new();
                for (kind, examples) in content_examples() {
                    content.insert(kind, self.embed.embed(examples).await?);
                }
                Ok(Corpora { attacks, content })
            })
            .await
    }

    /// Embed a topic's definition and examples.
    pub async fn topic(
        &self,
        name: &str,
        definition: &str,
        examples: &[String],
    ) -> Result<TopicVectors, Error> {
        let mut texts = vec![definition.to_string(), format!("{name}: {definition}")];
        texts.extend(examples.iter().cloned());
        Ok(TopicVectors {
            name: name.to_string(),
            vectors: self.embed.embed(texts).await?,
        })
    }

    /// Embed `text`'s chunks (and the whole text when it has several, for detectors that
    /// read it whole).
    pub async fn embed_text(&self, text: &str) -> Result<Embedded, Error> {
        let mut texts = chunks(text);
        if texts.is_empty() {
            return Ok(Embedded::default());
        }
        if texts.len() > 1 {
            let whole: String = text.chars().take(2 * CHUNK).collect();
            texts.push(whole);
        }
        Ok(Embedded {
            chunks: self.embed.embed(texts).await?,
        })
    }

    /// How close `text` is to `topic` (0–1).
    pub fn topic_score(&self, text: &Embedded, topic: &TopicVectors) -> f32 {
        best(&text.chunks, &topic.vectors)
    }

    /// Whether a topic score is on the topic.
    pub fn on_topic(&self, score: f32) -> bool {
        score >= self.thresholds.topic
    }

    /// The prompt-attack score and its confidence bin.
    pub async fn prompt_attack(&self, text: &Embedded) -> Result<(f32, Strength), Error> {
        let c = self.corpora().await?;
        let score = best(&text.chunks, &c.attacks);
        Ok((score, self.thresholds.prompt_attack.confidence(score)))
    }

    /// A content category's score and confidence bin.
    pub async fn content(
        &self,
        text: &Embedded,
        kind: FilterType,
    ) -> Result<(f32, Strength), Error> {
        if kind == FilterType::PromptAttack {
            return self.prompt_attack(text).await;
        }
        let c = self.corpora().await?;
        let score = c.content.get(&kind).map_or(0.0, |p| best(&text.chunks, p));
        Ok((score, self.thresholds.content.confidence(score)))
    }

    /// Grounding: the mean over the answer's sentences of the best similarity to a chunk of
    /// the source; relevance: the similarity of the answer to the query. Both clamped to 0–1.
    pub async fn grounding(
        &self,
        answer: &str,
        source: &str,
        query: &str,
    ) -> Result<(f64, f64), Error> {
        let answer_chunks: Vec<String> = sentences(answer).into_iter().map(String::from).collect();
        let source_chunks = chunks(source);
        if answer_chunks.is_empty() {
            return Ok((1.0, 1.0));
        }
        let mut texts = answer_chunks.clone();
        texts.extend(source_chunks.iter().cloned());
        texts.push(answer.chars().take(2 * CHUNK).collect());
        texts.push(query.to_string());
        let v = self.embed.embed(texts).await?;
        let (a, rest) = v.split_at(answer_chunks.len());
        let (s, rest) = rest.split_at(source_chunks.len());
        let grounding = if s.is_empty() {
            0.0
        } else {
            a.iter()
                .map(|x| s.iter().map(|y| dot(x, y)).fold(0.0, f32::max))
                .sum::<f32>()
                / a.len() as f32
        };
        let relevance = match rest {
            [whole, q] if !query.trim().is_empty() => dot(whole, q),
            _ => 1.0,
        };
        Ok((
            f64::from(grounding.clamp(0.0, 1.0)),
            f64::from(relevance.clamp(0.0, 1.0)),
        ))
    }
}

/// An [`Embed`] over a provider that serves embeddings.
pub struct ProviderEmbed {
    /// The provider.
    pub provider: Arc<dyn modelgate_providers::Provider>,
    /// The model id it is asked for.
    pub model: String,
}

#[async_trait]
impl Embed for ProviderEmbed {
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        embed_with(self.provider.as_ref(), &self.model, texts).await
    }
}

/// Embed `texts` with `provider` in batches and normalise the vectors.
pub(crate) async fn embed_with(
    provider: &dyn modelgate_providers::Provider,
    model: &str,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, Error> {
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(64) {
        let r = provider
            .embed(modelgate_types::EmbedRequest {
                model: model.to_string(),
                input: modelgate_types::EmbedInput::Texts(batch.to_vec()),
            })
            .await?;
        out.extend(r.vectors.into_iter().map(normalise));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_and_chunks() {
        assert_eq!(
            sentences("One. Two! Three? 3.5 four"),
            vec!["One.", " Two!", " Three?", " 3.5 four"]
        );
        let long = "word ".repeat(300);
        assert!(chunks(&long).iter().all(|c| c.len() <= CHUNK));
        assert!(acts(Strength::High, Strength::Low));
        assert!(!acts(Strength::Low, Strength::Medium));
    }
}
