//! The one helper every streaming answer is built with: canonical events in, wire bytes out,
//! in any dialect.
//!
//! Each front door supplies how one event is written (`encode`, which may write nothing, one
//! frame or several) and how an error is written (`on_error`). The helper owns the rules they
//! share: an error ends the stream — its frame is the last thing sent, never followed by the
//! clean-end trailer — and a stream that ends cleanly gets the trailer (`data: [DONE]`) when
//! the dialect has one.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use modelgate_providers::ChatStream;
use modelgate_types::{Error, StreamEvent};

/// The wire bytes of a canonical stream; see the module docs.
pub fn encode<E, F>(
    events: ChatStream,
    encode: E,
    on_error: F,
    trailer: Option<Bytes>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send
where
    E: FnMut(&StreamEvent) -> Bytes + Send + 'static,
    F: Fn(&Error) -> Bytes + Send + 'static,
{
    struct St<E, F> {
        events: ChatStream,
        encode: E,
        on_error: F,
        trailer: Option<Bytes>,
        done: bool,
    }
    let state = St {
        events,
        encode,
        on_error,
        trailer,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let bytes = match st.events.next().await {
                Some(Ok(event)) => (st.encode)(&event),
                Some(Err(e)) => {
                    st.done = true;
                    (st.on_error)(&e)
                }
                None => {
                    st.done = true;
                    st.trailer.take()?
                }
            };
            if bytes.is_empty() && !st.done {
                continue;
            }
            return Some((Ok(bytes), st));
        }
    })
}

/// A `200` streaming response of `content_type` with `body`, plus `extra` headers.
pub fn response<S>(
    content_type: &'static str,
    extra: &[(HeaderName, &'static str)],
    body: S,
) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    if content_type == "text/event-stream" {
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
    }
    for (name, value) in extra {
        h.insert(name.clone(), header::HeaderValue::from_static(value));
    }
    response
}

/// A server-sent-events frame: `event: NAME` (when named) and one `data:` line.
pub fn sse_frame(event: Option<&str>, data: &str) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_types::{ContentBlockDelta, Role};

    async fn run(items: Vec<Result<StreamEvent, Error>>, trailer: Option<&'static str>) -> String {
        let events = futures::stream::iter(items).boxed();
        let body = encode(
            events,
            |e| match e {
                StreamEvent::ContentBlockDelta {
                    delta: ContentBlockDelta::Text(t),
                    ..
                } => Bytes::from(format!("[{t}]")),
                _ => Bytes::new(),
            },
            |e| Bytes::from(format!("<{}>", e.message)),
            trailer.map(|t| Bytes::from_static(t.as_bytes())),
        );
        let chunks: Vec<Bytes> = body.map(|b| b.unwrap()).collect().await;
        String::from_utf8(chunks.concat()).unwrap()
    }

    fn text(t: &str) -> Result<StreamEvent, Error> {
        Ok(StreamEvent::ContentBlockDelta {
            index: 0,
            delta: ContentBlockDelta::Text(t.into()),
        })
    }

    #[tokio::test]
    async fn an_error_is_the_last_frame_and_a_clean_end_gets_the_trailer() {
        let start = Ok(StreamEvent::MessageStart {
            role: Role::Assistant,
            input_tokens: None,
        });
        assert_eq!(
            run(vec![start.clone(), text("a"), text("b")], Some("END")).await,
            "[a][b]END"
        );
        assert_eq!(
            run(
                vec![
                    start,
                    text("a"),
                    Err(Error::internal("boom")),
                    text("never")
                ],
                Some("END")
            )
            .await,
            "[a]<boom>"
        );
        assert_eq!(run(vec![text("a")], None).await, "[a]");
    }
}
