"""Microsoft Entra ID bearer tokens, validated the way the app does on Azure: signature against
the tenant's published keys (fetched over HTTP from a key set served here, since the real
login.microsoftonline.com cannot be reached), issuer, audience, expiry, the admin app role."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from pipeline.api.auth import caller_for_token
from pipeline.api.settings import ApiSettings
from tests.harness import free_port

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUDIENCE = "api://darkroom-test"


class Tenant:
    """A tenant's signing keys, published at `<authority>/<tenant>/discovery/v2.0/keys`."""

    def __init__(self, port: int) -> None:
        self.authority = f"http://127.0.0.1:{port}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        self.fetches = 0

    def jwks(self) -> bytes:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return json.dumps(
            {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}
        ).encode()

    def token(self, key=None, kid=None, **claims) -> str:
        now = int(time.time())
        body = {
            "iss": f"{self.authority}/{TENANT}/v2.0",
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "oid": "00000000-0000-0000-0000-0000000000a1",
            "preferred_username": "ada@example.org",
            "tid": TENANT,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.key, "RS256", headers={"kid": kid or self.kid})

    def settings(self, **changes) -> ApiSettings:
        return ApiSettings(
            entra_tenant_id=TENANT,
            entra_audiences=(AUDIENCE,),
            entra_authority=self.authority,
            **changes,
        )


@pytest.fixture
def tenant() -> Iterator[Tenant]:
    port = free_port()
    published = Tenant(port)

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != f"/{TENANT}/discovery/v2.0/keys":
                self.send_error(404)
                return
            published.fetches += 1
            body = published.jwks()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield published
    server.shutdown()
    server.server_close()


def test_a_valid_token_names_the_caller_by_object_id(tenant):
    caller = caller_for_token(tenant.token(), tenant.settings())
    assert caller.id == "entra-00000000-0000-0000-0000-0000000000a1"
    assert caller.kind == "entra" and caller.name == "ada@example.org" and not caller.admin
    admin = caller_for_token(tenant.token(roles=["Darkroom.Admin"]), tenant.settings())
    assert admin.admin


@pytest.mark.parametrize(
    "claims, why",
    [
        ({"aud": "api://someone-else"}, "audience"),
        ({"iss": f"https://login.microsoftonline.com/{uuid.uuid4()}/v2.0"}, "issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"exp": None}, "no expiry"),
        ({"oid": None, "sub": "../../etc"}, "unusable subject"),
    ],
)
def test_tokens_that_must_not_pass(tenant, claims, why):
    with pytest.raises(Exception) as refused:
        caller_for_token(tenant.token(**claims), tenant.settings())
    assert getattr(refused.value, "status_code", None) == 401, why


def test_a_token_signed_by_another_key_or_algorithm_is_refused(tenant):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (
        tenant.token(key=stranger),  # right kid, wrong signature
        tenant.token(key=stranger, kid="unknown"),  # a key the tenant never published
        jwt.encode(
            {"aud": AUDIENCE, "exp": int(time.time()) + 60},
            "a-shared-secret-of-thirty-two-bytes!",
            "HS256",
            headers={"kid": tenant.kid},
        ),  # algorithm confusion
        "not.a.token",
    ):
        with pytest.raises(Exception) as refused:
            caller_for_token(token, tenant.settings())
        assert getattr(refused.value, "status_code", None) == 401


def test_keys_are_cached_and_an_unreachable_key_set_is_a_503(tenant):
    settings = tenant.settings()
    for _ in range(3):
        caller_for_token(tenant.token(), settings)
    assert tenant.fetches == 1
    gone = ApiSettings(
        entra_tenant_id=TENANT,
        entra_audiences=(AUDIENCE,),
        entra_authority=f"http://127.0.0.1:{free_port()}",
    )
    token = jwt.encode(
        {
            "iss": f"{gone.entra_authority}/{TENANT}/v2.0",
            "aud": AUDIENCE,
            "exp": int(time.time()) + 60,
        },
        tenant.key,
        "RS256",
        headers={"kid": "k"},
    )
    with pytest.raises(Exception) as unavailable:
        caller_for_token(token, gone)
    assert getattr(unavailable.value, "status_code", None) == 503


def test_the_running_host_accepts_entra_callers_and_keeps_their_images_apart(
    make_pipeline, tenant, fixture_bytes
):
    pipeline = make_pipeline(
        "prepare,store",
        DARKROOM_ENTRA_TENANT_ID=TENANT,
        DARKROOM_ENTRA_AUDIENCE=AUDIENCE,
        DARKROOM_ENTRA_AUTHORITY=tenant.authority,
    )
    base = f"http://127.0.0.1:{pipeline.settings.host_port}"
    ada = {"Authorization": f"Bearer {tenant.token()}"}
    bob = {"Authorization": f"Bearer {tenant.token(oid='00000000-0000-0000-0000-0000000000b2')}"}
    me = requests.get(f"{base}/api/me", headers=ada, timeout=10)
    assert me.status_code == 200 and me.json()["id"].startswith("entra-")
    data = fixture_bytes("cat.jpg")
    grant = requests.post(
        f"{base}/api/uploads",
        headers=ada,
        json={"name": "cat.jpg", "content_type": "image/jpeg", "size": len(data)},
        timeout=10,
    ).json()
    assert grant["blob_name"].startswith("entra-00000000-0000-0000-0000-0000000000a1/")
    assert requests.put(grant["upload_url"], headers=grant["headers"], data=data, timeout=10).ok
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        doc = requests.get(f"{base}/api/images/{grant['id']}", headers=ada, timeout=10)
        if doc.status_code == 200 and doc.json()["status"] == "done":
            break
        time.sleep(0.3)
    assert doc.status_code == 200 and doc.json()["owner"].startswith("entra-")
    assert (
        requests.get(f"{base}/api/images/{grant['id']}", headers=bob, timeout=10).status_code == 404
    )
    expired = {"Authorization": f"Bearer {tenant.token(exp=int(time.time()) - 300)}"}
    refused = requests.get(f"{base}/api/me", headers=expired, timeout=10)
    assert refused.status_code == 401 and refused.json() == {"error": "invalid bearer token"}
