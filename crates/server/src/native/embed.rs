//! The embedding families of InvokeModel: Amazon Titan Embeddings and Cohere Embed.

use modelgate_core::config::NativeFormat;
use modelgate_types::{EmbedInput, EmbedRequest, EmbedResponse, Error};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{invalid, typed};

/// Cohere's limit on texts per call.
const COHERE_MAX_TEXTS: usize = 96;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TitanEmbed {
    input_text: String,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    normalize: Option<bool>,
    #[serde(default)]
    embedding_types: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CohereEmbed {
    #[serde(default)]
    texts: Option<Vec<String>>,
    #[serde(default)]
    input_type: Option<String>,
    #[serde(default)]
    truncate: Option<String>,
    #[serde(default)]
    embedding_types: Option<Vec<String>>,
    #[serde(default)]
    images: Option<Vec<String>>,
}

/// What the response must contain beyond the vectors.
#[derive(Debug, PartialEq)]
pub struct EmbedShape {
    format: NativeFormat,
    texts: Vec<String>,
    /// Titan `dimensions` asked for (checked against the model once it answers).
    dimensions: Option<u32>,
    /// Titan `embeddingTypes` / Cohere `embedding_types`, when given.
    types: Option<Vec<String>>,
}

/// Parse an embedding-family body.
pub fn parse(
    format: NativeFormat,
    model: String,
    body: Value,
) -> Result<(EmbedRequest, EmbedShape), Error> {
    let (texts, dimensions, types) = if format == NativeFormat::TitanEmbed {
        let b: TitanEmbed = typed(body)?;
        if let Some(types) = &b.embedding_types {
            if types.is_empty() || types.iter().any(|t| t != "float" && t != "binary") {
                return Err(invalid(
                    "embeddingTypes: each entry must be \"float\" or \"binary\"",
                ));
            }
        }
        // Vectors are always unit length (`normalize: true`, Titan's default); documented.
        let _ = b.normalize;
        (vec![b.input_text], b.dimensions, b.embedding_types)
    } else {
        let b: CohereEmbed = typed(body)?;
        if b.images.is_some() {
            return Err(invalid(
                "images: image embeddings are not supported by this model",
            ));
        }
        let texts = b.texts.ok_or_else(|| invalid("texts: field required"))?;
        if texts.is_empty() || texts.len() > COHERE_MAX_TEXTS {
            return Err(invalid(format!(
                "texts: between 1 and {COHERE_MAX_TEXTS} texts are allowed, got {}",
                texts.len()
            )));
        }
        match b.input_type.as_deref() {
            Some("search_document" | "search_query" | "classification" | "clustering") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "input_type: '{other}' is not one of search_document, search_query, classification, clustering"
                )))
            }
            None => return Err(invalid("input_type: field required")),
        }
        match b.truncate.as_deref() {
            None | Some("NONE" | "START" | "END") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "truncate: '{other}' is not one of NONE, START, END"
                )))
            }
        }
        if let Some(types) = &b.embedding_types {
            if types.is_empty() || types.iter().any(|t| t != "float") {
                return Err(invalid(
                    "embedding_types: only \"float\" embeddings are served by this model",
                ));
            }
        }
        (texts, None, b.embedding_types)
    };
    if texts.iter().any(|t| t.trim().is_empty()) {
        return Err(invalid("input text must not be blank"));
    }
    Ok((
        EmbedRequest {
            model,
            input: EmbedInput::Texts(texts.clone()),
        },
        EmbedShape {
            format,
            texts,
            dimensions,
            types,
        },
    ))
}

fn binary(v: &[f32]) -> Vec<u8> {
    v.iter().map(|x| u8::from(*x > 0.0)).collect()
}

/// The response body, or a ValidationException when the caller asked for dimensions the model
/// does not produce.
pub fn response(shape: &EmbedShape, r: &EmbedResponse) -> Result<Value, Error> {
    let dims = r.vectors.first().map_or(0, Vec::len);
    if let Some(asked) = shape.dimensions {
        if usize::try_from(asked).ok() != Some(dims) {
            return Err(invalid(format!(
                "dimensions: this model produces {dims}-dimensional embeddings, not {asked}"
            )));
        }
    }
    if shape.format == NativeFormat::TitanEmbed {
        let v = r.vectors.first().cloned().unwrap_or_default();
        let mut out = json!({"embedding": v, "inputTextTokenCount": r.input_tokens});
        if let (Some(types), Some(obj)) = (&shape.types, out.as_object_mut()) {
            let mut by_type = serde_json::Map::new();
            for t in types {
                let value = if t == "binary" {
                    json!(binary(&v))
                } else {
                    json!(v)
                };
                by_type.insert(t.clone(), value);
            }
            obj.insert("embeddingsByType".into(), Value::Object(by_type));
        }
        return Ok(out);
    }
    let id = uuid::Uuid::new_v4().to_string();
    Ok(if shape.types.is_some() {
        json!({"id": id, "embeddings": {"float": r.vectors}, "response_type": "embeddings_by_type", "texts": shape.texts})
    } else {
        json!({"id": id, "embeddings": r.vectors, "response_type": "embeddings_floats", "texts": shape.texts})
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: usize) -> EmbedResponse {
        EmbedResponse {
            model: "m".into(),
            vectors: vec![vec![0.5, -0.5, 0.0]; n],
            input_tokens: 4,
        }
    }

    #[test]
    fn titan_shapes() {
        let (req, shape) = parse(
            NativeFormat::TitanEmbed,
            "m".into(),
            json!({"inputText": "hi", "embeddingTypes": ["float", "binary"]}),
        )
        .unwrap();
        assert_eq!(req.input, EmbedInput::Texts(vec!["hi".into()]));
        let v = response(&shape, &answer(1)).unwrap();
        assert_eq!(v["inputTextTokenCount"], 4);
        assert_eq!(v["embedding"], json!([0.5, -0.5, 0.0]));
        assert_eq!(v["embeddingsByType"]["binary"], json!([1, 0, 0]));
        let (_, shape) = parse(
            NativeFormat::TitanEmbed,
            "m".into(),
            json!({"inputText": "hi", "dimensions": 256}),
        )
        .unwrap();
        assert!(response(&shape, &answer(1))
            .unwrap_err()
            .message
            .contains("3-dimensional"));
    }

    #[test]
    fn cohere_shapes_and_checks() {
        let (_, shape) = parse(
            NativeFormat::CohereEmbed,
            "m".into(),
            json!({"texts": ["a", "b"], "input_type": "search_document"}),
        )
        .unwrap();
        let v = response(&shape, &answer(2)).unwrap();
        assert_eq!(v["response_type"], "embeddings_floats");
        assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
        assert_eq!(v["texts"], json!(["a", "b"]));
        for bad in [
            json!({"texts": ["a"]}),
            json!({"texts": [], "input_type": "clustering"}),
            json!({"texts": ["a"], "input_type": "nope"}),
            json!({"texts": ["a"], "input_type": "clustering", "embedding_types": ["int8"]}),
            json!({"texts": ["a"], "input_type": "clustering", "truncate": "MIDDLE"}),
        ] {
            assert_eq!(
                parse(NativeFormat::CohereEmbed, "m".into(), bad.clone())
                    .unwrap_err()
                    .status(),
                400,
                "{bad}"
            );
        }
    }
}
