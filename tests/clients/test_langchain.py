"""LangChain's ChatBedrockConverse (langchain-aws) pointed at Modelgate with endpoint_url."""
import pytest
from langchain_aws import ChatBedrockConverse

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
def llm(server_url):
    return ChatBedrockConverse(
        model=MODEL, endpoint_url=server_url, region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
        temperature=0, max_tokens=48,
    )


def test_invoke(llm):
    m = llm.invoke("What is the capital of France?")
    assert "Paris" in m.text
    assert m.usage_metadata["input_tokens"] > 0
    assert m.usage_metadata["output_tokens"] > 0


def test_stream_matches_invoke(llm):
    whole = llm.invoke("What is the capital of France?")
    chunks = list(llm.stream("What is the capital of France?"))
    streamed = "".join(c.text for c in chunks)
    assert streamed == whole.text
    assert "Paris" in streamed


def test_a_non_aws_model_id_streams_once_langchain_is_told(server_url):
    """LangChain decides from the model id's provider prefix whether to stream: a name like
    `local.smollm2-135m-instruct` (provider "local") is not on its list, so `stream()` falls
    back to one Converse call. `disable_streaming=False` (or `provider="meta"`, a provider it
    streams) makes it use ConverseStream — docs/front-doors.md."""
    kw = dict(model="local.smollm2-135m-instruct", endpoint_url=server_url,
              region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
              aws_secret_access_key="secret", temperature=0, max_tokens=48)
    question = "What is the capital of France?"
    fallback = [c for c in ChatBedrockConverse(**kw).stream(question) if c.text]
    assert len(fallback) == 1
    for llm in (ChatBedrockConverse(disable_streaming=False, **kw),
                ChatBedrockConverse(provider="meta", **kw)):
        chunks = [c for c in llm.stream(question) if c.text]
        assert len(chunks) > 2
        assert "".join(c.text for c in chunks) == fallback[0].text
