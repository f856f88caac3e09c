"""The seed's app, fixed: its login is Portcullis's, and its routes are protected two ways.

- `GET /api/items`: the caller sends Portcullis's access token (a JWT, `tokens.access.enabled`)
  as `Authorization: Bearer`; the app checks it itself with the keys Portcullis publishes
  (PyJWT's PyJWKClient: keys cached, fetched again for a `kid` it has not seen, which is how a
  key rotation reaches it). No call to Portcullis per request, and a token's signature is
  checked once, in a worker thread: its claims are kept (a few thousand tokens) and its expiry
  read on every use.
- `GET /items`: the app sits behind a proxy doing forward authentication
  (deploy/nginx/forward-auth.conf), which asks Portcullis about every request and passes on
  `X-Portcullis-Subject`. The header is believed from the proxy's address only.
- `POST /api/login`: a pass-through of Portcullis's `POST /v1/login` for clients that post to
  the app itself: the client's address goes along in `X-Forwarded-For` (Portcullis must trust
  this app as a proxy, `server.trusted_proxies`), and so do the device cookie and Portcullis's
  answer (status, body, `Retry-After`, cookies), so limits, lockouts and challenges apply as if
  the client had asked Portcullis.
- `GET /public`: the same answer as the protected routes with no protection, for comparison.

Settings (env): PORTCULLIS_URL (where this app reaches Portcullis), PORTCULLIS_ISSUER (its
`tokens.access.issuer`, default `portcullis`), PROXY_ADDRESSES (comma-separated addresses of the
proxies in front, default 127.0.0.1). The app reads the proxy's headers itself, so run uvicorn
with `--no-proxy-headers`: `request.client` is then the peer, and a header is believed only
when the peer is a proxy.
"""
import os
import time
from urllib.parse import unquote

import httpx
import jwt
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

PORTCULLIS_URL = os.environ["PORTCULLIS_URL"].rstrip("/")
ISSUER = os.environ.get("PORTCULLIS_ISSUER", "portcullis")
PROXY_ADDRESSES = {a.strip() for a in os.environ.get("PROXY_ADDRESSES", "127.0.0.1").split(",")}

app = FastAPI()
keys = jwt.PyJWKClient(f"{PORTCULLIS_URL}/.well-known/jwks.json", cache_keys=True)
portcullis = httpx.AsyncClient(base_url=PORTCULLIS_URL, timeout=10)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


# Claims of tokens whose signature checked out, by token (a token never changes): the check
# runs once per token, off the event loop; the expiry is read on every use.
VERIFIED: dict[str, dict] = {}
VERIFIED_MAX = 4096


def verify(token: str) -> dict:
    """The claims of a token whose signature and issuer check out (raises otherwise). May
    fetch the key set (PyJWKClient, blocking): run it in a thread."""
    key = keys.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["EdDSA"],
        issuer=ISSUER,
        options={"require": ["exp", "iss", "sub"]},
    )


async def jwt_subject(request: Request) -> str:
    """The account an access token names, once its signature, issuer and expiry check out."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("an access token is required")
    claims = VERIFIED.get(token)
    if claims is None:
        try:
            claims = await run_in_threadpool(verify, token)
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as error:
            raise unauthorized(f"invalid access token: {type(error).__name__}") from error
        if len(VERIFIED) >= VERIFIED_MAX:
            VERIFIED.clear()
        VERIFIED[token] = claims
    if claims["exp"] <= time.time():
        raise unauthorized("invalid access token: ExpiredSignatureError")
    return claims["sub"]


def from_proxy(request: Request) -> bool:
    """Whether the request's peer is one of the proxies in front."""
    return request.client is not None and request.client.host in PROXY_ADDRESSES


def client_address(request: Request) -> str:
    """The client: the address the proxy appended to `X-Forwarded-For` (the last entry, the
    only one the proxy vouches for) when the peer is a proxy, else the peer."""
    if from_proxy(request):
        last = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
        if last:
            return last
    return request.client.host if request.client else ""


async def proxy_subject(request: Request) -> str:
    """The account the forward-authenticating proxy said the request's session belongs to."""
    subject = request.headers.get("x-portcullis-subject", "")
    if not from_proxy(request) or not subject:
        raise unauthorized("sign in first")
    return subject


def items(subject: str, username: str = "") -> dict:
    return {"subject": subject, "username": username, "items": ["a", "b", "c"]}


# Every route is `async def`: none blocks, so none pays for a worker thread.
@app.get("/api/items")
async def api_items(subject: str = Depends(jwt_subject)) -> dict:
    return items(subject)


@app.get("/items")
async def proxied_items(request: Request, subject: str = Depends(proxy_subject)) -> dict:
    return items(subject, unquote(request.headers.get("x-portcullis-username", "")))


@app.get("/public")
async def public_items() -> dict:
    return items("")


# What a pass-through hands back from Portcullis's answer.
PASSED_BACK = ("content-type", "retry-after", "www-authenticate", "set-cookie")


@app.post("/api/login")
async def login(request: Request) -> Response:
    """Portcullis's `POST /v1/login`, asked on the client's behalf."""
    headers = {
        "content-type": request.headers.get("content-type", "application/json"),
        "x-forwarded-for": client_address(request),
    }
    if "cookie" in request.headers:
        headers["cookie"] = request.headers["cookie"]
    answer = await portcullis.post("/v1/login", content=await request.body(), headers=headers)
    response = Response(content=answer.content, status_code=answer.status_code)
    for name in PASSED_BACK:
        for value in answer.headers.get_list(name):
            response.headers.append(name, value)
    return response
