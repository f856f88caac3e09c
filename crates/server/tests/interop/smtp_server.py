"""A real SMTP server (PyPI `aiosmtpd`, pinned in scripts/test.sh) delivering into a Maildir, and
a reader of what it delivered, for the mail tests in tests/api/mail.rs.

    serve PORT MAILDIR   listens on 127.0.0.1:PORT; prints "ready", then serves until killed
    read MAILDIR         stdout: a JSON list of the delivered messages, oldest first: to, from,
                         subject, text and html (decoded), and every header
"""
import email
import email.policy
import json
import mailbox
import os
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


def serve(port: int, maildir: str) -> None:
    controller = Controller(Mailbox(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def read(maildir: str) -> None:
    messages = []
    new = os.path.join(maildir, "new")
    names = os.listdir(new) if os.path.isdir(new) else []
    # Delivery order: Maildir names do not sort by it (their microseconds are not padded).
    names.sort(key=lambda name: (os.stat(os.path.join(new, name)).st_mtime_ns, name))
    for name in names:
        with open(os.path.join(new, name), "rb") as file:
            message = email.message_from_binary_file(file, policy=email.policy.default)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        messages.append({
            "to": message["To"],
            "from": message["From"],
            "subject": message["Subject"],
            "text": text.get_content() if text else None,
            "html": html.get_content() if html else None,
            "headers": {key: str(value) for key, value in message.items()},
        })
    print(json.dumps(messages))


def main() -> None:
    command = sys.argv[1]
    if command == "serve":
        mailbox.Maildir(sys.argv[3], create=True)
        serve(int(sys.argv[2]), sys.argv[3])
    elif command == "read":
        read(sys.argv[2])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
