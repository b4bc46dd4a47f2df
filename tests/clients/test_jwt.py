"""Identity federation: JWTs signed by a test OIDC issuer, whose keys are served from a local
JWKS endpoint, map to their team's permissions and their roles' policies; expired, foreign
and wrongly addressed tokens are refused.
"""
import http.server
import json
import threading
import time

import jwt
import openai
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import Server
from test_upstreams import Mock

ADMIN = "mg-test-admin-jwt"
ISSUER = "https://idp.modelgate.test"
SONNET = "anthropic.claude-3-sonnet-20240229-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SONNET_ONLY = {"Statement": [{"Sid": "TeamSonnet", "Effect": "Allow", "Action": "bedrock:InvokeModel",
                              "Resource": "arn:aws:bedrock:*::foundation-model/anthropic.claude-3-sonnet*"}]}

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Issuer:
    """Serves the JWKS document of KEY and counts fetches."""

    def __init__(self):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
        jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
        body = json.dumps({"keys": [jwk]}).encode()
        issuer = self
        self.fetches = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                issuer.fetches += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def token(sub="alice", team=None, roles=None, exp_in=300, aud="modelgate", key=KEY, kid="k1"):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": aud, "sub": sub, "iat": now, "exp": now + exp_in}
    if team:
        claims["team"] = team
    if roles is not None:
        claims["groups"] = roles
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def idp():
    i = Issuer()
    yield i
    i.server.shutdown()


@pytest.fixture(scope="module")
def gw(idp, tmp_path_factory):
    mock = Mock()
    config = f"""
[local]
enabled = false

[auth]
admin_key_env = "MG_TEST_ADMIN_KEY"

[auth.jwt]
issuer = "{ISSUER}"
audience = "modelgate"
jwks_url = "{idp.url}"
role_claim = "groups"

[[auth.roles.invoker]]
Statement = [{{ Effect = "Allow", Action = "bedrock:*", Resource = "*" }}]

[[providers]]
name = "mock-openai"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "{SONNET}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"

[[models]]
id = "{HAIKU}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"
"""
    env = {"MG_TEST_UPSTREAM_KEY": "sk-upstream-test", "MG_TEST_ADMIN_KEY": ADMIN}
    server = Server(config_text=config, tmp_path=str(tmp_path_factory.mktemp("jwt")), env=env)
    r = requests.put(server.url + "/admin/teams/search", json={"policies": [SONNET_ONLY]},
                     headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 200, r.text
    yield server
    server.stop()
    mock.stop()


def chat(gw, tok, model=SONNET):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=tok, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_a_jwt_maps_to_its_teams_permissions(gw, idp):
    t = token(team="search")
    assert chat(gw, t).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(gw, t, HAIKU)
    assert "jwt:alice" in str(e.value)
    # A team without policies may do nothing; a role adds its policies.
    with pytest.raises(openai.PermissionDeniedError):
        chat(gw, token(team="ads"))
    assert chat(gw, token(team="ads", roles=["invoker"]), HAIKU).choices
    # The keys were fetched once and cached.
    assert idp.fetches == 1


def test_bad_tokens_are_refused(gw):
    cases = {
        "expired": token(exp_in=-120),
        "not meant for this gateway": token(aud="someone-else"),
        "not one of the issuer's keys": token(kid="k-unknown"),
        "signature is invalid": token(key=OTHER_KEY),
    }
    for words, bad in cases.items():
        with pytest.raises(openai.AuthenticationError) as e:
            chat(gw, bad)
        assert words in str(e.value), (words, str(e.value))
    # HS256 with the public key as secret (the algorithm-confusion attack) is refused.
    forged = jwt.encode({"iss": ISSUER, "aud": "modelgate", "sub": "mallory",
                         "exp": int(time.time()) + 60}, "secret", algorithm="HS256",
                        headers={"kid": "k1"})
    with pytest.raises(openai.AuthenticationError):
        chat(gw, forged)
