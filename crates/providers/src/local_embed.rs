//! Embedded sentence embeddings: all-MiniLM-L6-v2 run in-process with candle.
//!
//! BERT forward pass, mean pooling over the attention mask, then L2 normalisation: the
//! sentence-transformers recipe, giving 384-dimensional unit vectors. Inputs are truncated to
//! the model's 256 word-piece window (as sentence-transformers does for this model).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use modelgate_types::{ChatRequest, EmbedInput, EmbedRequest, EmbedResponse, Error};
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use tokio::sync::Semaphore;

use crate::{Capabilities, ChatStream, Provider};

/// Most inputs embedded in one request.
pub const MAX_INPUTS: usize = 2048;

/// Tunable settings of the embedded embedding model: `[local.embeddings]` in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalEmbedderSettings {
    /// Word pieces kept per input (at most 512, the model's window). Default 256.
    pub max_input_tokens: usize,
    /// Inputs per forward pass. Default 32.
    pub batch_size: usize,
    /// Embedding requests computed at once; others wait. Default 1.
    pub concurrency: usize,
}

impl Default for LocalEmbedderSettings {
    fn default() -> Self {
        Self {
            max_input_tokens: 256,
            batch_size: 32,
            concurrency: 1,
        }
    }
}

impl LocalEmbedderSettings {
    /// Range checks; the message names the key under `[local.embeddings]`.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            ("max_input_tokens", self.max_input_tokens),
            ("batch_size", self.batch_size),
            ("concurrency", self.concurrency),
        ] {
            if value == 0 {
                return Err(format!(
                    "key `local.embeddings.{key}` must be greater than 0"
                ));
            }
        }
        if self.max_input_tokens > 512 {
            return Err(
                "key `local.embeddings.max_input_tokens` must be at most 512 (the model's window)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What [`LocalEmbedder::load`] needs: the model folder and the settings.
#[derive(Debug, Clone)]
pub struct LocalEmbedderConfig {
    /// Folder with `model.safetensors`, `config.json` and `tokenizer.json`.
    pub model_dir: PathBuf,
    /// Tunable settings.
    pub settings: LocalEmbedderSettings,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
    batch_size: usize,
}

/// The embedded embedding provider.
pub struct LocalEmbedder {
    inner: Arc<Inner>,
    permits: Arc<Semaphore>,
}

fn load_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("cannot load the embedding model ({what}): {e}"))
}

impl LocalEmbedder {
    /// Load weights, config and tokenizer.
    pub fn load(config: LocalEmbedderConfig) -> Result<Self, Error> {
        let dir = &config.model_dir;
        let cfg_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load_err("config.json", e))?;
        let bert_cfg: Config =
            serde_json::from_str(&cfg_text).map_err(|e| load_err("config.json", e))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| load_err("model.safetensors", e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &Device::Cpu)
            .map_err(|e| load_err("model.safetensors", e))?;
        let model = BertModel::load(vb, &bert_cfg).map_err(|e| load_err("weights", e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load_err("tokenizer.json", e))?;
        // tokenizer.json pads every input to 128 tokens; pad to the longest input instead.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.settings.max_input_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| load_err("tokenizer truncation", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                batch_size: config.settings.batch_size.max(1),
            }),
            permits: Arc::new(Semaphore::new(config.settings.concurrency.max(1))),
        })
    }
}

impl Inner {
    /// Embed a batch; returns vectors and the number of real (unpadded) tokens.
    fn embed_batch(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, u32), Error> {
        let fail = |e: &dyn std::fmt::Display| Error::internal(format!("embedding failed: {e}"));
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| fail(&e))?;
        let mut ids = Vec::with_capacity(encodings.len());
        let mut masks = Vec::with_capacity(encodings.len());
        let mut tokens = 0u32;
        for enc in &encodings {
            ids.push(Tensor::new(enc.get_ids(), &Device::Cpu).map_err(|e| fail(&e))?);
            masks.push(Tensor::new(enc.get_attention_mask(), &Device::Cpu).map_err(|e| fail(&e))?);
            tokens += enc.get_attention_mask().iter().sum::<u32>();
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::stack(&ids, 0)?;
            let mask = Tensor::stack(&masks, 0)?;
            let types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            mean.broadcast_div(&norm)?.to_vec2::<f32>()
        };
        let vectors = run().map_err(|e| fail(&e))?;
        Ok((vectors, tokens))
    }
}

#[async_trait]
impl Provider for LocalEmbedder {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: false,
            embeddings: true,
            tools: false,
            images: false,
            json_output: false,
            logprobs: false,
            seed: false,
            penalties: false,
            wire: None,
        }
    }

    async fn converse_stream(&self, request: ChatRequest) -> Result<ChatStream, Error> {
        Err(Error::validation(format!(
            "The model '{}' is an embedding model and does not support chat.",
            request.model
        )))
    }

    async fn count_tokens(&self, request: &ChatRequest) -> Result<u32, Error> {
        let text: Vec<String> = request.messages.iter().map(|m| m.joined_text()).collect();
        let enc = self
            .inner
            .tokenizer
            .encode(text.join("\n"), true)
            .map_err(|e| Error::internal(format!("tokenizer failed: {e}")))?;
        Ok(enc.get_attention_mask().iter().sum())
    }

    async fn embed(&self, request: EmbedRequest) -> Result<EmbedResponse, Error> {
        let EmbedInput::Texts(texts) = request.input;
        if texts.is_empty() {
            return Err(Error::validation("input must contain at least one text"));
        }
        if texts.len() > MAX_INPUTS {
            return Err(Error::validation(format!(
                "input has {} items; at most {MAX_INPUTS} are accepted per request",
                texts.len()
            )));
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::internal("embedding model is shutting down"))?;
        let inner = Arc::clone(&self.inner);
        let (vectors, input_tokens) = tokio::task::spawn_blocking(move || {
            let mut vectors = Vec::with_capacity(texts.len());
            let mut tokens = 0;
            for chunk in texts.chunks(inner.batch_size) {
                let (v, t) = inner.embed_batch(chunk)?;
                vectors.extend(v);
                tokens += t;
            }
            Ok::<_, Error>((vectors, tokens))
        })
        .await
        .map_err(|e| Error::internal(format!("embedding task failed: {e}")))??;
        Ok(EmbedResponse {
            model: request.model,
            vectors,
            input_tokens,
        })
    }
}
