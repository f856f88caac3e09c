"""The hosted pages and the admin console in a real browser: Debian's Chromium driven by
Playwright for Python (PyPI `playwright`, pinned in scripts/test.sh; its wheel carries its own
driver, and no browser is downloaded). crates/server/tests/api/browser.rs starts the service
and runs this with the interop virtualenv's python and:
  PORTCULLIS_URL      the public listener, e.g. http://127.0.0.1:41234
  PORTCULLIS_ADMIN    the admin listener
  PORTCULLIS_TOKEN    the admin token
  SCREENSHOTS         where each step's screenshot goes
  MAILDIR             where the test's SMTP server (PyPI `aiosmtpd`) delivers
  CHROMIUM            the browser (default /usr/bin/chromium)
pyotp computes every TOTP code; the mail's links are followed from the delivered messages. It prints `ok - STEP` per step and exits non-zero, with a
screenshot of every page, when a step does not hold.
"""

import email
import email.policy
import re
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import pyotp
from playwright.sync_api import sync_playwright

from chromium import env, launch


BASE = env("PORTCULLIS_URL")
ADMIN = env("PORTCULLIS_ADMIN")
TOKEN = env("PORTCULLIS_TOKEN")
SCREENSHOTS = Path(env("SCREENSHOTS"))
SCREENSHOTS.mkdir(parents=True, exist_ok=True)
MAILDIR = Path(env("MAILDIR"))

PASSWORD = "correct horse battery staple"
CAROL_PASSWORD = "lantern orchard velvet compass"
CAROL_NEW_PASSWORD = "quiet walrus under amber lanterns"


def shot(page, name):
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def submit(page, button):
    """Submits a form; the status of the post itself (before a 303 is followed) and the URL
    of the page it leads to."""
    with page.expect_navigation() as navigation:
        page.click(button)
    request = navigation.value.request
    while request.redirected_from:
        request = request.redirected_from
    return request.response().status, page.url


def notice(page):
    return page.text_content("#notice") or ""


def log_in(page, username, password):
    page.goto(f"{BASE}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    return submit(page, "#login button[type=submit]")


def sign_out(page):
    page.goto(f"{BASE}/account")
    submit(page, "header button")
    assert page.url.endswith("/login"), page.url


def mail_link(subject, page, seen=0):
    """Waits for message number `seen` + 1 with `subject` in the Maildir; the path and query of
    its link to `page`, to open on this service (the link names `server.public_url`)."""
    deadline = time.time() + 20
    while time.time() < deadline:
        found = []
        new = MAILDIR / "new"
        for path in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns) if new.is_dir() else []:
            with open(path, "rb") as file:
                message = email.message_from_binary_file(file, policy=email.policy.default)
            if message["Subject"] == subject:
                found.append(message.get_body(("plain",)).get_content())
        if len(found) > seen:
            match = re.search(rf"https?://\S+{re.escape(page)}\?token=[A-Za-z0-9_-]{{43}}", found[seen])
            assert match, found[seen]
            link = urlsplit(match.group(0))
            return f"{link.path}?{link.query}"
        time.sleep(0.2)
    raise AssertionError(f"no message {seen + 1} with subject {subject!r}")


def next_step(used_at):
    """Waits for the next 30-second TOTP step (a step is accepted once)."""
    while int(time.time()) // 30 == int(used_at) // 30:
        time.sleep(0.25)


STEPS = []


def step(run):
    STEPS.append(run)
    return run


@step
def registers_two_accounts_on_the_register_page(pages):
    user = pages["user"]
    for username, password in [("alice", PASSWORD), ("carol", CAROL_PASSWORD)]:
        user.goto(f"{BASE}/register")
        user.fill("input[name=username]", username)
        user.fill("input[name=password]", password)
        user.fill("input[name=email]", f"{username}@example.com")
        status, _ = submit(user, "#register button[type=submit]")
        assert status == 201, status
        assert f"Account {username} created" in notice(user), notice(user)
    shot(user, "01-registered")

    user.goto(f"{BASE}/register")
    user.fill("input[name=username]", "weakling")
    user.fill("input[name=password]", "password1234567")
    status, _ = submit(user, "#register button[type=submit]")
    assert status == 400, status
    assert "Choose another password" in notice(user), notice(user)
    shot(user, "02-weak-password-refused")


@step
def verifies_addresses_through_the_links_in_their_mail(pages):
    user = pages["user"]
    for username in ["alice", "carol"]:
        user.goto(BASE + mail_link(f"Verify your address for {username}", "/verify-email"))
        status, _ = submit(user, "#verify-email button[type=submit]")
        assert status == 200, status
        assert f"{username}@example.com now receives mail" in notice(user), notice(user)
    shot(user, "02b-address-verified")


@step
def logs_in_and_sees_its_sessions_on_the_account_page(pages):
    user = pages["user"]
    status, url = log_in(user, "alice", PASSWORD)
    assert status == 303, status
    assert url.endswith("/account"), url
    assert user.text_content("#username") == "alice"
    assert "this browser" in user.text_content("#sessions tbody")
    shot(user, "03-account")


TOTP = {}


@step
def enrols_totp_with_a_code_from_pyotp_and_gets_recovery_codes(pages):
    user = pages["user"]
    user.goto(f"{BASE}/account")
    submit(user, "#two-factor button[type=submit]")
    assert user.is_visible(".qr svg"), "the QR code is shown"
    uri = user.get_attribute("#otpauth-uri", "href")
    assert uri.startswith("otpauth://totp/"), uri
    TOTP["otp"] = pyotp.parse_uri(uri)
    shot(user, "04-totp-enrolment")
    TOTP["used_at"] = int(time.time())
    user.fill("input[name=code]", TOTP["otp"].at(TOTP["used_at"]))
    status, _ = submit(user, "#confirm-totp button[type=submit]")
    assert status == 200, status
    codes = user.eval_on_selector_all("#recovery-codes code", "items => items.map(i => i.textContent)")
    assert len(codes) == 10, codes
    shot(user, "05-recovery-codes")
    user.goto(f"{BASE}/account")
    assert user.text_content("#two-factor-status").startswith("On")


@step
def logs_in_with_the_second_factor(pages):
    user = pages["user"]
    sign_out(user)
    status, _ = log_in(user, "alice", PASSWORD)
    assert status == 200, status
    assert user.is_visible("#second-factor"), "the second-factor step is shown"
    shot(user, "06-second-factor")
    user.fill("#second-factor input[name=code]", "000000")
    status, _ = submit(user, "#second-factor button[type=submit]")
    assert status == 401, status
    assert "code is wrong" in notice(user), notice(user)
    next_step(TOTP["used_at"])
    user.fill("#second-factor input[name=code]", TOTP["otp"].now())
    status, url = submit(user, "#second-factor button[type=submit]")
    assert status == 303, status
    assert url.endswith("/account"), url
    shot(user, "07-logged-in-with-second-factor")
    sign_out(user)


@step
def unlocks_with_the_link_in_the_lockout_mail(pages):
    # Someone without alice's browser guesses her password until the account locks.
    other = pages["admin"]
    for _ in range(8):
        status, _ = log_in(other, "alice", "not the password at all")
        if status == 429:
            break
        assert status == 401, status
    assert status == 429, status
    other.goto(BASE + mail_link("alice was locked after failed sign-ins", "/unlock"))
    shot(other, "07b-unlock-link")
    status, _ = submit(other, "#owner-link button[type=submit]")
    assert status == 200, status
    assert "sign in again" in notice(other), notice(other)
    # The right password goes through again, to alice's second factor.
    status, _ = log_in(other, "alice", PASSWORD)
    assert status == 200, status
    assert other.is_visible("#second-factor"), "the second-factor step is shown"


@step
def is_throttled_after_wrong_passwords_with_the_time_to_wait(pages):
    user = pages["user"]
    for _ in range(6):
        status, _ = log_in(user, "carol", "not the password at all")
        if status == 429:
            break
        assert status == 401, status
        assert "Wrong username or password" in notice(user), notice(user)
    assert status == 429, status
    assert re.search(r"Too many attempts\. Try again in \d+ (seconds?|minutes?)\.", notice(user)), notice(user)
    shot(user, "08-throttled")


@step
def unlocks_the_account_from_the_admin_console(pages):
    admin, user = pages["admin"], pages["user"]
    admin.goto(f"{ADMIN}/admin/")
    admin.fill("input[name=token]", "not the token")
    status, _ = submit(admin, "#console-login button[type=submit]")
    assert status == 401, status
    admin.fill("input[name=token]", TOKEN)
    status, _ = submit(admin, "#console-login button[type=submit]")
    assert status == 303, status
    # The console polls the admin API with its cookie: the lockout and the events show.
    admin.wait_for_selector("#restriction-rows td:has-text('u:')")
    admin.wait_for_selector("#event-rows td:has-text('lockout')")
    assert re.search("No|Yes", admin.text_content("#attack-signal"))
    shot(admin, "09-console-lockout")

    admin.fill("#unlock-username", "carol")
    admin.click("#unlock-form button[type=submit]")
    admin.wait_for_selector("#restriction-rows td:text-is('none')")
    admin.wait_for_selector("#event-rows td:text-is('unlock')")

    admin.fill("#allow-network", "198.51.100.0/24")
    admin.click("#allow-form button[type=submit]")
    admin.wait_for_selector("#allowlist-rows li:has-text('198.51.100.0/24')")
    admin.click("#allowlist-rows li:has-text('198.51.100.0/24') button")
    admin.wait_for_selector("#allowlist-rows li:has-text('198.51.100.0/24')", state="detached")
    shot(admin, "10-console-unlocked")

    status, url = log_in(user, "carol", CAROL_PASSWORD)
    assert status == 303, f"carol logs in once unlocked: {status}"
    assert url.endswith("/account"), url
    sign_out(user)


@step
def solves_a_challenge_through_the_altcha_widget(pages):
    stranger = pages["stranger"]
    # Two more usernames failing from this address make it risky (three of the ten before a
    # ban): its next attempt without a trusted device must solve a challenge first.
    for username in ["dave", "erin"]:
        status, _ = log_in(stranger, username, "not the password at all")
        assert status == 401, status
    status, _ = log_in(stranger, "carol", CAROL_PASSWORD)
    assert status == 401, status
    assert stranger.is_visible("altcha-widget"), "the widget is shown"
    # The widget solves on load and fills the form's `altcha` field.
    stranger.wait_for_function(
        "() => document.querySelector('#login input[name=altcha]')?.value?.length > 0",
        timeout=60_000,
    )
    shot(stranger, "11-challenge-solved")
    stranger.fill("input[name=password]", CAROL_PASSWORD)
    status, url = submit(stranger, "#login button[type=submit]")
    assert status == 303, f"the solved challenge lets the login through: {status}"
    assert url.endswith("/account"), url
    shot(stranger, "12-logged-in-after-challenge")


@step
def refuses_a_form_post_without_its_csrf_token(pages):
    response = pages["stranger"].request.post(
        f"{BASE}/account/logout-all", form={"csrf": "forged"}, max_redirects=0
    )
    assert response.status == 403, response.status


@step
def resets_a_forgotten_password_through_the_link_in_its_mail(pages):
    user, admin = pages["user"], pages["admin"]
    user.goto(f"{BASE}/login")
    with user.expect_navigation():
        user.click("a[href='/forgot']")
    user.fill("input[name=username]", "carol")
    status, _ = submit(user, "#forgot button[type=submit]")
    if status == 401:
        # This address is risky since the stranger's guesses: the form asks for the challenge,
        # as a login would, and the widget solves it.
        user.wait_for_function(
            "() => document.querySelector('#forgot input[name=altcha]')?.value?.length > 0",
            timeout=60_000,
        )
        status, _ = submit(user, "#forgot button[type=submit]")
    assert status == 202, status
    shot(user, "13-reset-asked")
    user.goto(BASE + mail_link("Reset the password of carol", "/reset"))
    user.fill("input[name=new_password]", CAROL_NEW_PASSWORD)
    status, _ = submit(user, "#reset button[type=submit]")
    assert status == 200, status
    shot(user, "14-password-reset")
    status, url = log_in(user, "carol", CAROL_PASSWORD)
    assert status == 401, f"the old password is gone: {status}"
    status, url = log_in(user, "carol", CAROL_NEW_PASSWORD)
    assert status == 303, status
    assert url.endswith("/account"), url
    sign_out(user)
    # The console shows the outbox, and sends a reset for an owner.
    admin.goto(f"{ADMIN}/admin/")
    admin.wait_for_selector("#outbox-depth:has-text('sent')")
    admin.fill("#mail-username", "carol")
    admin.click("#mail-form button[value=reset]")
    admin.wait_for_selector("#mail-result:has-text('A reset link for carol is queued')")
    shot(admin, "15-console-mail")
    mail_link("Reset the password of carol", "/reset", seen=1)


def main():
    failed = False
    with sync_playwright() as playwright:
        browser = launch(playwright)
        pages = {}
        for name in ["user", "admin", "stranger"]:
            context = browser.new_context(viewport={"width": 1000, "height": 800})
            pages[name] = context.new_page()
            pages[name].set_default_timeout(20_000)
        for run in STEPS:
            name = run.__name__.replace("_", " ")
            try:
                run(pages)
                print(f"ok - {name}", flush=True)
            except Exception:
                failed = True
                print(f"not ok - {name}\n{traceback.format_exc()}", flush=True)
                for who, page in pages.items():
                    try:
                        shot(page, f"failed-{who}")
                    except Exception:
                        pass
                break
        browser.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
