//! Layers 3 and 4: the degraded levels that answer when every model of the chain failed — the
//! last good answer to the same request (opt-in per model), then the model's static text.
//!
//! Neither answers for a client error or a gateway refusal ([`Error::is_final`]): those go
//! back to the caller as they are.

use std::hash::Hasher as _;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use modelgate_types::{
    ChatRequest, ChatResponse, Error, Message, ResponseFormat, Role, StopReason, Usage,
};

use crate::pipeline::{Answer, Call, Layer, Next};
use crate::registry::lock;

/// Layer 3: the model's configured degraded-service text.
pub(crate) struct StaticAnswer;

#[async_trait]
impl Layer for StaticAnswer {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        let result = next.run(call).await;
        let error = match result {
            Err(e) if !e.is_final() && call.op.is_answer() => e,
            other => return other,
        };
        let Some(entry) = call.entry.clone() else {
            return Err(error);
        };
        let Some(text) = &entry.policy.static_response else {
            return Err(error);
        };
        tracing::warn!(model = %entry.info.id, reason = ?call.served.fallback_reason, "degraded answer: static");
        call.served.served_by = "static".into();
        let response = ChatResponse {
            model: entry.info.id.clone(),
            message: Message::text(Role::Assistant, text),
            stop_reason: StopReason::EndTurn,
            usage: Usage::default(),
            latency_ms: 0,
        };
        Ok(Answer::from_response(response, &call.op))
    }
}

/// Layer 4: remember the last good answer per request (for models with `fallback_cache`), and
/// serve it when every model failed.
pub(crate) struct LastGood {
    cache: Arc<LastGoodCache>,
}

impl LastGood {
    pub(crate) fn new(cache: Arc<LastGoodCache>) -> Self {
        Self { cache }
    }
}

#[async_trait]
impl Layer for LastGood {
    async fn call(&self, call: &mut Call, next: Next<'_>) -> Result<Answer, Error> {
        let opted_in = call.entry.as_ref().is_some_and(|e| e.policy.fallback_cache)
            && self.cache.enabled()
            && call.op.is_answer();
        let Some(request) = opted_in.then(|| call.op.chat().cloned()).flatten() else {
            return next.run(call).await;
        };
        let key = request_key(&request);
        let request = Arc::new(request);
        call.want_response = true;
        let (cache, stored) = (Arc::clone(&self.cache), Arc::clone(&request));
        call.recorder().on_finish(Box::new(move |f| {
            let (Some(response), None, false) = (f.response, f.error, f.outcome.cancelled) else {
                return;
            };
            // Only a model's own answer is remembered, never a degraded one.
            if matches!(
                f.outcome.model_served.as_deref(),
                None | Some("cache" | "static")
            ) {
                return;
            }
            let mut response = response.clone();
            if let Some(served) = &f.outcome.model_served {
                response.model.clone_from(served);
            }
            cache.put(key, stored, response);
        }));
        let error = match next.run(call).await {
            Err(e) if !e.is_final() => e,
            other => return other,
        };
        let Some(response) = self.cache.get(key, &request) else {
            return Err(error);
        };
        tracing::warn!(model = %request.model, reason = ?call.served.fallback_reason, "degraded answer: last good answer");
        call.served.served_by = "cache".into();
        Ok(Answer::from_response(response, &call.op))
    }
}

/// One remembered answer and the request it answered.
type Remembered = (Arc<ChatRequest>, ChatResponse);

/// The last good answers, keyed by a 128-bit hash of the canonical request; a hit is checked
/// against the stored request, so a hash collision can never serve another request's answer.
pub(crate) struct LastGoodCache(Option<Mutex<lru::LruCache<u128, Remembered>>>);

impl LastGoodCache {
    /// A cache of `entries` answers (`0` turns the level off).
    pub(crate) fn new(entries: usize) -> Self {
        Self(NonZeroUsize::new(entries).map(|n| Mutex::new(lru::LruCache::new(n))))
    }

    fn enabled(&self) -> bool {
        self.0.is_some()
    }

    fn put(&self, key: u128, request: Arc<ChatRequest>, response: ChatResponse) {
        if let Some(c) = &self.0 {
            lock(c).put(key, (request, response));
        }
    }

    fn get(&self, key: u128, request: &ChatRequest) -> Option<ChatResponse> {
        let c = self.0.as_ref()?;
        let mut c = lock(c);
        let (stored, response) = c.get(&key)?;
        (**stored == *request).then(|| response.clone())
    }
}

/// A request's identity: a 128-bit XXH3 hash of everything in its canonical form, written
/// straight into the hasher (no intermediate string).
pub(crate) fn request_key(request: &ChatRequest) -> u128 {
    struct Writer(xxhash_rust::xxh3::Xxh3);
    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let ChatRequest {
        model,
        system,
        messages,
        inference,
        tools,
        response_format,
        reasoning,
    } = request;
    let mut w = Writer(xxhash_rust::xxh3::Xxh3::new());
    // 0xFF never occurs in UTF-8 JSON, so it separates the parts unambiguously.
    let part = |w: &mut Writer, bytes: &[u8]| {
        w.0.update(bytes);
        w.0.update(&[0xFF]);
    };
    part(&mut w, model.as_bytes());
    let _ = serde_json::to_writer(&mut w, system);
    part(&mut w, b"");
    let _ = serde_json::to_writer(&mut w, messages);
    part(&mut w, b"");
    let _ = serde_json::to_writer(&mut w, inference);
    part(&mut w, b"");
    let _ = serde_json::to_writer(&mut w, tools);
    part(&mut w, b"");
    match response_format {
        None => part(&mut w, b"-"),
        Some(ResponseFormat::JsonObject) => part(&mut w, b"json_object"),
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        }) => {
            part(&mut w, b"json_schema");
            part(&mut w, name.as_bytes());
            part(&mut w, description.as_deref().unwrap_or("\u{0}").as_bytes());
            let _ = serde_json::to_writer(&mut w, schema);
            part(&mut w, if *strict { b"1" } else { b"0" });
        }
    }
    match reasoning {
        None => part(&mut w, b"-"),
        Some(r) => part(&mut w, &r.budget_tokens.to_le_bytes()),
    }
    let mut h = w.0;
    h.write_u8(0);
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message::text(Role::User, text)],
            ..Default::default()
        }
    }

    #[test]
    fn keys_differ_by_content_and_hits_check_the_request() {
        assert_eq!(request_key(&req("a")), request_key(&req("a")));
        assert_ne!(request_key(&req("a")), request_key(&req("b")));
        let mut hot = req("a");
        hot.inference.temperature = Some(0.9);
        assert_ne!(request_key(&hot), request_key(&req("a")));
        let cache = LastGoodCache::new(4);
        let answer = ChatResponse {
            model: "m".into(),
            message: Message::text(Role::Assistant, "x"),
            stop_reason: StopReason::EndTurn,
            usage: Usage::default(),
            latency_ms: 0,
        };
        // Stored under a key that another request claims (a collision): never served to it.
        cache.put(7, Arc::new(req("a")), answer.clone());
        assert_eq!(cache.get(7, &req("a")), Some(answer));
        assert_eq!(cache.get(7, &req("b")), None);
        assert!(!LastGoodCache::new(0).enabled());
    }
}
