"""The fixed app against a real Portcullis and a real nginx doing forward authentication.

crates/server/tests/api/fastapi_example.rs starts them and runs this suite with:
    APP_URL          nginx in front of app.py (deploy/nginx/forward-auth.conf)
    TEST_USERNAME, TEST_PASSWORD   an account registered in Portcullis
    SIGNING_KEY_SEED Portcullis's signing key, as its 32-byte seed in hex (to make a token that
                     has expired)
    NEXT_KEY_SEED    the next key of a rotation (published in tokens.access.extra_public_keys)
    ISSUER           Portcullis's tokens.access.issuer
"""
import base64
import hashlib
import json
import os
import time
import unittest
import urllib.error
import urllib.request

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

APP = os.environ["APP_URL"].rstrip("/")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def call(method, path, body=None, headers=None):
    """(status, headers, parsed JSON or text) of a request to the app through nginx."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(APP + path, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with OPENER.open(request) as answer:
            status, head, raw = answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, error.headers, error.read()
    try:
        return status, head, json.loads(raw) if raw else None
    except ValueError:
        return status, head, raw.decode()


def login(password=None, cookie=None):
    headers = {"cookie": cookie} if cookie else {}
    body = {"username": os.environ["TEST_USERNAME"],
            "password": password or os.environ["TEST_PASSWORD"]}
    return call("POST", "/api/login", body, headers)


def seed_key(variable):
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(os.environ[variable]))


def bearer(token):
    return {"authorization": f"Bearer {token}"}


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(key, **claims):
    """A token signed by `key` under its RFC 7638 thumbprint, as Portcullis signs them."""
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = b64url(hashlib.sha256(
        json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(x)}, separators=(",", ":"))
        .encode()).digest())
    now = int(time.time())
    payload = {"iss": os.environ["ISSUER"], "sub": "minted", "iat": now, "exp": now + 60,
               **claims}
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid})


class AccessTokens(unittest.TestCase):
    """`GET /api/items`: the app checks Portcullis's JWT itself."""

    def test_a_login_through_the_app_gives_a_token_the_jwt_route_takes(self):
        status, _, answer = login()
        self.assertEqual(status, 200, answer)
        status, _, body = call("GET", "/api/items", headers=bearer(answer["access_token"]))
        self.assertEqual(status, 200, body)
        _, _, session = call("GET", "/v1/session", headers=bearer(answer["token"]))
        self.assertEqual(body["subject"], session["subject"])

    def test_a_tampered_token_is_refused(self):
        _, _, answer = login()
        header, claims, signature = answer["access_token"].split(".")
        forged = json.loads(base64.urlsafe_b64decode(claims + "=="))
        forged["sub"] = "someone-else"
        tampered = ".".join([header, b64url(json.dumps(forged).encode()), signature])
        status, _, body = call("GET", "/api/items", headers=bearer(tampered))
        self.assertEqual(status, 401, body)

    def test_an_expired_token_is_refused_and_the_same_one_alive_is_not(self):
        key = seed_key("SIGNING_KEY_SEED")
        alive = mint(key)
        self.assertEqual(call("GET", "/api/items", headers=bearer(alive))[0], 200)
        expired = mint(key, iat=int(time.time()) - 600, exp=int(time.time()) - 300)
        status, _, body = call("GET", "/api/items", headers=bearer(expired))
        self.assertEqual(status, 401, body)

    def test_a_token_taken_once_is_refused_after_it_expires(self):
        token = mint(seed_key("SIGNING_KEY_SEED"), exp=int(time.time()) + 2)
        self.assertEqual(call("GET", "/api/items", headers=bearer(token))[0], 200)
        # Real time: the app keeps the token's claims, and must still read its expiry.
        time.sleep(max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"]
                       - time.time()) + 0.1)
        self.assertEqual(call("GET", "/api/items", headers=bearer(token))[0], 401)

    def test_the_next_key_of_a_rotation_is_taken_and_an_unpublished_one_is_not(self):
        next_key = mint(seed_key("NEXT_KEY_SEED"), sub="after-the-rotation")
        status, _, body = call("GET", "/api/items", headers=bearer(next_key))
        self.assertEqual(status, 200, body)
        self.assertEqual(body["subject"], "after-the-rotation")
        stranger = mint(Ed25519PrivateKey.generate())
        self.assertEqual(call("GET", "/api/items", headers=bearer(stranger))[0], 401)


class ForwardAuthentication(unittest.TestCase):
    """`GET /items`: nginx asks Portcullis, the app reads `X-Portcullis-Subject`."""

    def test_a_live_session_reaches_the_route_and_a_logout_ends_it(self):
        _, _, answer = login()
        status, _, body = call("GET", "/items", headers=bearer(answer["token"]))
        self.assertEqual(status, 200, body)
        self.assertEqual(body["username"], os.environ["TEST_USERNAME"])
        self.assertEqual(call("POST", "/v1/logout", headers=bearer(answer["token"]))[0], 204)
        status, _, _ = call("GET", "/items", headers=bearer(answer["token"]))
        self.assertEqual(status, 401)

    def test_no_session_is_refused_and_a_browser_is_sent_to_sign_in(self):
        claimed = {"x-portcullis-subject": "someone"}
        self.assertEqual(call("GET", "/items", headers=claimed)[0], 401)
        status, head, _ = call("GET", "/items", headers={"accept": "text/html"})
        self.assertEqual(status, 302)
        self.assertIn("/login?return_to=", head["location"])


class PassThroughLogin(unittest.TestCase):
    """`POST /api/login`: Portcullis answers, through the app, as it would itself."""

    def test_the_device_cookie_and_the_refusals_come_back(self):
        status, head, _ = login()
        self.assertEqual(status, 200)
        device = next(c for c in head.get_all("set-cookie") if c.startswith("portcullis_device="))
        cookie = device.split(";")[0]
        status, _, body = login(password="not the password at all", cookie=cookie)
        self.assertEqual(status, 401)
        self.assertEqual(body["code"], "invalid_credentials")


if __name__ == "__main__":
    unittest.main()
