"""The app Portcullis exists for, as the usual FastAPI tutorial writes it: a `/login` that checks
a password against a dict of SHA-256 hashes, with no limit of any kind. Do not deploy it: it is
the "before" of the drill's comparison (examples/fastapi/README.md).

Its users come from a CSV of `username,password` lines (SEED_USERS), such as the one
`portcullis-drill accounts` writes for a scenario, so the drill's leaked list meets the same
accounts here as behind Portcullis. It answers `POST /login` (the tutorial's) and `POST
/v1/login` (the path the drill speaks) alike.
"""
import csv
import hashlib
import os
import secrets

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()

USERS: dict[str, str] = {}
with open(os.environ["SEED_USERS"], newline="", encoding="utf-8") as users:
    for username, password in csv.reader(users):
        USERS[username] = hashlib.sha256(password.encode()).hexdigest()


class Credentials(BaseModel):
    username: str
    password: str


@app.post("/login")
@app.post("/v1/login")
def login(credentials: Credentials) -> dict:
    digest = hashlib.sha256(credentials.password.encode()).hexdigest()
    if USERS.get(credentials.username) != digest:
        raise HTTPException(status_code=401, detail="Invalid credentials")
    return {"token": secrets.token_urlsafe(32), "token_type": "Bearer"}
