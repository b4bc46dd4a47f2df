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
