//! The `classifier` strategy: nearest centroid over embeddings. Each tier's labelled examples
//! are embedded once (on first use, by the configured embedding model — the embedded MiniLM
//! by default) and averaged into a unit centroid; a request's last user message is embedded
//! and goes to the tier whose centroid is most similar (cosine).

use std::sync::Arc;

use modelgate_types::{EmbedInput, EmbedRequest, Error};
use tokio::sync::OnceCell;

use super::config::ClassifierConfig;
use crate::registry::Registry;
use crate::semantic::{dot, normalise};

/// Characters of the request's text that are embedded (the embedding model truncates at its
/// own limit in tokens too).
const MAX_TEXT: usize = 4000;

pub(crate) struct Classifier {
    config: ClassifierConfig,
    centroids: OnceCell<Vec<(String, Vec<f32>)>>,
}

/// A request sorted into a tier.
pub(crate) struct Classified {
    pub(crate) tier: String,
    pub(crate) model: String,
    pub(crate) score: f32,
    pub(crate) tokens: u32,
    pub(crate) embedding_model: String,
}

impl Classifier {
    pub(crate) fn new(config: ClassifierConfig) -> Self {
        Self {
            config,
            centroids: OnceCell::new(),
        }
    }

    /// The first tier's model (the default when classification fails).
    pub(crate) fn first_model(&self) -> Option<String> {
        self.config.tiers.values().next().map(|t| t.model.clone())
    }

    async fn embed(
        registry: &Registry,
        model: &str,
        texts: Vec<String>,
    ) -> Result<(Vec<Vec<f32>>, u32), Error> {
        let entry = registry.get(model).ok_or_else(|| {
            Error::internal(format!(
                "the classifier's embedding model '{model}' is not served"
            ))
        })?;
        let endpoint = entry.pick()?;
        let response = endpoint
            .provider
            .embed(EmbedRequest {
                model: entry.info.id.clone(),
                input: EmbedInput::Texts(texts),
            })
            .await?;
        Ok((response.vectors, response.input_tokens))
    }

    async fn centroids(&self, registry: &Registry) -> Result<&[(String, Vec<f32>)], Error> {
        let c = self
            .centroids
            .get_or_try_init(|| async {
                let mut out = Vec::new();
                for (tier, t) in &self.config.tiers {
                    let examples: Vec<String> = t
                        .examples
                        .iter()
                        .filter(|e| !e.trim().is_empty())
                        .cloned()
                        .collect();
                    let mut sum: Vec<f32> = Vec::new();
                    for chunk in examples.chunks(32) {
                        let (vectors, _) =
                            Self::embed(registry, &self.config.embedding_model, chunk.to_vec())
                                .await?;
                        for v in vectors {
                            let v = normalise(v);
                            if sum.is_empty() {
                                sum = vec![0.0; v.len()];
                            }
                            sum.iter_mut().zip(&v).for_each(|(s, x)| *s += x);
                        }
                    }
                    out.push((tier.clone(), normalise(sum)));
                }
                Ok::<_, Error>(out)
            })
            .await?;
        Ok(c.as_slice())
    }

    /// Sort `text` into a tier.
    pub(crate) async fn classify(
        &self,
        registry: &Arc<Registry>,
        text: &str,
    ) -> Result<Classified, Error> {
        let centroids = self.centroids(registry).await?;
        let mut cut = text.len().min(MAX_TEXT);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let (vectors, tokens) = Self::embed(
            registry,
            &self.config.embedding_model,
            vec![text[..cut].to_string()],
        )
        .await?;
        let v = normalise(
            vectors
                .into_iter()
                .next()
                .ok_or_else(|| Error::internal("the embedding model returned no vector"))?,
        );
        let (tier, score) = centroids
            .iter()
            .map(|(t, c)| (t, dot(&v, c)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or_else(|| Error::internal("the classifier has no tiers"))?;
        let model = self
            .config
            .tiers
            .get(tier)
            .map(|t| t.model.clone())
            .ok_or_else(|| Error::internal("unknown tier"))?;
        Ok(Classified {
            tier: tier.clone(),
            model,
            score,
            tokens,
            embedding_model: self.config.embedding_model.clone(),
        })
    }
}
