"""The semantic cache through the real binary, with the embedded all-MiniLM-L6-v2 computing the
embeddings: paraphrases hit; pairs whose meaning flips (negations, antonyms, changed numbers,
other names) never do at the default threshold. Each pair gets its own namespace, so a hit can
only come from its own first half.
"""
import time
import uuid

import openai
import pytest

from conftest import Server
from test_upstreams import UPSTREAM_ENV, Mock, mock_providers

GPT = "gpt-up"

# Rewordings that mean the same: every one must be a semantic hit at the default threshold.
PARAPHRASES = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the capital of France?", "What's the capital of France?"),
    ("How do I reset my password?", "how do i reset my password"),
    ("Explain photosynthesis in simple terms.", "Explain photosynthesis in simple terms please."),
    ("What is the boiling point of water?", "What's the boiling point of water?"),
    ("Give me a recipe for banana bread.", "Can you give me a recipe for banana bread?"),
    ("How do I make a cup of green tea?", "How can I make a cup of green tea?"),
    ("What are the symptoms of the flu?", "What are the symptoms of flu?"),
    ("Summarize the plot of Hamlet.", "Summarise the plot of Hamlet."),
    ("How do I center a div in CSS?", "How can I center a div in CSS?"),
]

FEATURES = ["dark mode", "notifications", "autosave", "two-factor authentication",
            "location services", "bluetooth", "spell check", "automatic updates",
            "read receipts", "the screen reader"]
DRUGS = ["ibuprofen", "paracetamol", "aspirin", "melatonin", "caffeine"]
CITIES = [("Paris", "Rome"), ("Berlin", "Madrid"), ("Tokyo", "Seoul"), ("Cairo", "Nairobi"),
          ("Sydney", "Auckland"), ("Toronto", "Chicago"), ("Lima", "Quito"),
          ("Oslo", "Helsinki"), ("Hanoi", "Bangkok"), ("Lisbon", "Dublin")]
ANTONYMS = [
    ("Sort the list in ascending order.", "Sort the list in descending order."),
    ("Should I increase the dose?", "Should I decrease the dose?"),
    ("Take the pill before eating.", "Take the pill after eating."),
    ("How do I upload a file to the server?", "How do I download a file from the server?"),
    ("Encrypt this message for me.", "Decrypt this message for me."),
    ("Is now a good time to buy bitcoin?", "Is now a good time to sell bitcoin?"),
    ("How do I import contacts to my phone?", "How do I export contacts from my phone?"),
    ("How do I lock my screen?", "How do I unlock my screen?"),
    ("What is the maximum dose of vitamin D?", "What is the minimum dose of vitamin D?"),
    ("Should I use hot water for this stain?", "Should I use cold water for this stain?"),
    ("I agree with the proposal, write a reply.", "I disagree with the proposal, write a reply."),
    ("How do I install the package?", "How do I uninstall the package?"),
    ("Show hidden files in Finder.", "Hide hidden files in Finder."),
    ("How do I add a user to the group?", "How do I remove a user from the group?"),
    ("Is the left lane faster?", "Is the right lane faster?"),
    ("How do I connect to the VPN?", "How do I disconnect from the VPN?"),
    ("How do I subscribe to the newsletter?", "How do I unsubscribe from the newsletter?"),
    ("Convert the text to uppercase.", "Convert the text to lowercase."),
    ("Is this a legal move in chess?", "Is this an illegal move in chess?"),
    ("What happens if the test is positive?", "What happens if the test is negative?"),
    ("How do I zip this folder?", "How do I unzip this folder?"),
    ("Start the backup job.", "Stop the backup job."),
    ("Open the garage door.", "Close the garage door."),
    ("Is it safe to fly in the morning?", "Is it safe to fly in the evening?"),
    ("Write a happy poem about rain.", "Write a sad poem about rain."),
    ("How do I mute the call?", "How do I unmute the call?"),
    ("What is the first step?", "What is the last step?"),
    ("Make the font bigger.", "Make the font smaller."),
    ("Allow cookies from this site.", "Block cookies from this site."),
    ("Is the market going up?", "Is the market going down?"),
]


def flips():
    pairs = []
    for f in FEATURES:
        pairs.append((f"How do I turn on {f}?", f"How do I turn off {f}?"))
        pairs.append((f"Enable {f} on my account.", f"Disable {f} on my account."))
    for d in DRUGS:
        pairs.append((f"Is 5 mg of {d} safe for an adult?", f"Is 50 mg of {d} safe for an adult?"))
        pairs.append((f"Is {d} safe during pregnancy?", f"Is {d} not safe during pregnancy?"))
        pairs.append((f"Can I take {d} twice a day?", f"Can I take {d} three times a day?"))
    for a, b in CITIES:
        pairs.append((f"What is the population of {a}?", f"What is the population of {b}?"))
        pairs.append((f"Book a flight to {a} on Monday.", f"Book a flight to {b} on Monday."))
    for n in (2, 3, 7, 12, 100):
        pairs.append((f"Convert {n} miles to kilometers.", f"Convert {n * 10} miles to kilometers."))
        pairs.append((f"Set a timer for {n} minutes.", f"Set a timer for {n + 1} minutes."))
    for a, b in [("Why does my code work?", "Why doesn't my code work?"),
                 ("Should I restart the server?", "Should I not restart the server?"),
                 ("The payment went through, what now?", "The payment did not go through, what now?"),
                 ("Is the store open today?", "Is the store not open today?"),
                 ("My phone is charging, is that normal?", "My phone is not charging, is that normal?")]:
        pairs.append((a, b))
    pairs += ANTONYMS
    return pairs


FLIPS = flips()


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


def config(mock, backend=""):
    """The semantic cache on, in front of the mock upstream; `backend` adds to `[cache]`."""
    return f"""
[cache]
enabled = true
{backend}

[cache.semantic]
enabled = true

[resilience.retry]
max_attempts = 1

{mock_providers(mock)}
[[models]]
id = "{GPT}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"
"""


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    server = Server(config_text=config(mock), tmp_path=str(tmp_path_factory.mktemp("semantic")),
                    env=UPSTREAM_ENV)
    yield server
    server.stop()


def ask(gw, text, namespace, temperature=0, headers=None):
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model=GPT, temperature=temperature, messages=[{"role": "user", "content": text}],
        extra_headers={"x-modelgate-cache-namespace": namespace, **(headers or {})})
    return raw.headers, raw.parse().choices[0].message.content


def test_the_test_sets_are_as_large_as_promised():
    assert len(FLIPS) >= 100 and len(set(FLIPS)) == len(FLIPS)
    assert len(PARAPHRASES) >= 10


def test_paraphrases_hit(gw, mock):
    for a, b in PARAPHRASES:
        ns = "p" + uuid.uuid4().hex[:10]
        h1, first = ask(gw, a, ns)
        assert h1["x-modelgate-cache"] == "miss"
        h2, second = ask(gw, b, ns)
        assert h2["x-modelgate-cache"] == "semantic-hit", (a, b)
        assert float(h2["x-modelgate-cache-similarity"]) >= 0.95
        # The stored answer is the first question's (the mock echoes the question).
        assert second == first == "echo: " + a


def test_meaning_flips_never_hit(gw, mock):
    hits = []
    for a, b in FLIPS:
        ns = "f" + uuid.uuid4().hex[:10]
        h1, _ = ask(gw, a, ns)
        assert h1["x-modelgate-cache"] == "miss"
        h2, answer = ask(gw, b, ns)
        if h2["x-modelgate-cache"] != "miss":
            hits.append((a, b, h2.get("x-modelgate-cache-similarity")))
        else:
            assert answer == "echo: " + b
    assert hits == [], hits


def test_semantic_matching_needs_temperature_zero_or_an_opt_in_and_the_floor_holds(gw, mock):
    a, b = PARAPHRASES[0]
    ns = "t" + uuid.uuid4().hex[:10]
    assert ask(gw, a, ns, temperature=0.7)[0]["x-modelgate-cache"] == "miss"
    # Exact hits work at any temperature; semantic ones do not without an opt-in.
    assert ask(gw, a, ns, temperature=0.7)[0]["x-modelgate-cache"] == "hit"
    assert ask(gw, b, ns, temperature=0.7)[0]["x-modelgate-cache"] == "miss"
    ns = "o" + uuid.uuid4().hex[:10]
    ask(gw, a, ns, temperature=0.7, headers={"x-modelgate-cache-semantic": "true"})
    h, _ = ask(gw, b, ns, temperature=0.7, headers={"x-modelgate-cache-semantic": "true"})
    assert h["x-modelgate-cache"] == "semantic-hit"
    # A request may raise the floor above the pair's similarity, never lower it.
    ns = "r" + uuid.uuid4().hex[:10]
    ask(gw, a, ns)
    h, _ = ask(gw, b, ns, headers={"x-modelgate-cache-threshold": "0.9999"})
    assert h["x-modelgate-cache"] == "miss"
    ns = "l" + uuid.uuid4().hex[:10]
    unrelated = "Write a haiku about autumn leaves."
    ask(gw, a, ns)
    h, _ = ask(gw, unrelated, ns, headers={"x-modelgate-cache-threshold": "0.1"})
    assert h["x-modelgate-cache"] == "miss"


def test_replicas_share_semantic_vectors_through_redis(mock, tmp_path_factory):
    prefix = f"mgtest-{uuid.uuid4().hex[:8]}:"
    shared = config(mock, backend='backend = "redis"') + f"""
[store]
redis_url = "redis://127.0.0.1:6379"
redis_prefix = "{prefix}"
"""
    servers = [Server(config_text=shared, tmp_path=str(tmp_path_factory.mktemp(f"sem{i}")),
                      env=UPSTREAM_ENV) for i in range(2)]
    mock.reset()
    try:
        a, b = servers
        question, paraphrase = PARAPHRASES[0]
        ns = "s" + uuid.uuid4().hex[:10]
        h, _ = ask(a, question, ns)
        assert h["x-modelgate-cache"] == "miss"
        # The other replica never saw the question: its vector can only come from the shared
        # log (written in the background just after the answer).
        time.sleep(0.5)
        h, answer = ask(b, paraphrase, ns)
        assert h["x-modelgate-cache"] == "semantic-hit"
        assert answer == "echo: " + question
        assert mock.calls() == 1, "replica b never called the model"
    finally:
        for s in servers:
            s.stop()
