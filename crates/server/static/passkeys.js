// Passkeys on the pages: sign-in (the button, and autofill on the username field), the second
// factor, and adding and removing passkeys on the account page. Options come from the server as
// WebAuthn JSON (binary members in unpadded base64url); the authenticator's answer goes back the
// same way, in a hidden field of an ordinary form post, so the server answers with a page as for
// a password.

const decode = (text) => {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "===".slice((base64.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)).buffer;
};

const encode = (buffer) =>
  btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");

// Members the server leaves null are absent to the browser (a null list is a TypeError).
const withoutNulls = (value) =>
  Array.isArray(value)
    ? value.map(withoutNulls)
    : value && typeof value === "object"
      ? Object.fromEntries(
          Object.entries(value)
            .filter(([, v]) => v !== null)
            .map(([k, v]) => [k, withoutNulls(v)]),
        )
      : value;

const credentialIds = (list) => (list || []).map((c) => ({ ...c, id: decode(c.id) }));

const requestOptions = (publicKey) => {
  const options = withoutNulls(publicKey);
  return {
    ...options,
    challenge: decode(options.challenge),
    allowCredentials: credentialIds(options.allowCredentials),
  };
};

const creationOptions = (publicKey) => {
  const options = withoutNulls(publicKey);
  return {
    ...options,
    challenge: decode(options.challenge),
    user: { ...options.user, id: decode(options.user.id) },
    excludeCredentials: credentialIds(options.excludeCredentials),
  };
};

const assertionJson = (credential) => ({
  id: credential.id,
  rawId: encode(credential.rawId),
  type: credential.type,
  response: {
    authenticatorData: encode(credential.response.authenticatorData),
    clientDataJSON: encode(credential.response.clientDataJSON),
    signature: encode(credential.response.signature),
    userHandle: credential.response.userHandle ? encode(credential.response.userHandle) : null,
  },
  extensions: {},
});

const attestationJson = (credential) => ({
  id: credential.id,
  rawId: encode(credential.rawId),
  type: credential.type,
  response: {
    attestationObject: encode(credential.response.attestationObject),
    clientDataJSON: encode(credential.response.clientDataJSON),
  },
  extensions: {},
});

const showError = (text) => {
  const notice = document.getElementById("passkey-error");
  notice.textContent = text;
  notice.hidden = false;
};

// POSTs `body` and returns its JSON, or throws with the problem's words.
const postForJson = async (url, body, contentType) => {
  const answer = await fetch(url, {
    method: "POST",
    headers: { "content-type": contentType, accept: "application/json" },
    body,
    credentials: "same-origin",
  });
  const json = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    throw new Error(json.detail || `The server answered ${answer.status}.`);
  }
  return json;
};

// Sign-in options: for `username`, or discoverable ones without.
const signInOptions = (username) =>
  postForJson(
    "/v1/login/passkey/options",
    JSON.stringify(username ? { username } : {}),
    "application/json",
  );

// An assertion for sign-in options, as the form fields `ceremony` and `credential` carry it.
const assertion = async (options, mediation, signal) => {
  const credential = await navigator.credentials.get({
    publicKey: requestOptions(options.publicKey),
    mediation,
    signal,
  });
  return { ceremony: options.ceremony, credential: JSON.stringify(assertionJson(credential)) };
};

const submitWith = (form, fields) => {
  for (const [name, value] of Object.entries(fields)) {
    form.elements[name].value = value;
  }
  form.submit();
};

const failed = (error) => {
  if (error.name === "AbortError") return;
  showError(
    error.name === "NotAllowedError"
      ? "The passkey was not used (cancelled, or timed out)."
      : error.message,
  );
};

// The login page: autofill offers the browser's passkeys on the username field; the button asks
// for the named account's passkeys, or any.
const loginPage = (button) => {
  const form = document.getElementById("passkey-form");
  const username = document.querySelector("#login input[name=username]");
  // Made before the first await, so a click however early ends the autofill request.
  const autofill = new AbortController();
  const conditional = async () => {
    if (!(await PublicKeyCredential.isConditionalMediationAvailable?.())) return;
    const options = await signInOptions(null);
    submitWith(form, await assertion(options, "conditional", autofill.signal));
  };
  const pending = conditional().catch(failed);
  button.addEventListener("click", async () => {
    // A browser runs one request at a time: the autofill one ends before the button's starts.
    autofill.abort();
    await pending;
    try {
      const options = await signInOptions(username.value.trim() || null);
      submitWith(form, await assertion(options, "optional"));
    } catch (error) {
      failed(error);
    }
  });
};

// The second-factor step: the account's passkeys after its password.
const secondFactor = (button) => {
  const form = document.getElementById("passkey-second-factor");
  button.addEventListener("click", async () => {
    try {
      const options = await signInOptions(button.dataset.username);
      submitWith(form, await assertion(options, "optional"));
    } catch (error) {
      failed(error);
    }
  });
};

// A form that steps up with a passkey (an account without a password) gets the passkey's answer
// in its `step_up_ceremony` and `step_up_credential` fields.
const stepUp = async (form) => {
  if (form.dataset.stepUp !== "passkey") return;
  const answer = await assertion(await signInOptions(form.dataset.username), "optional");
  form.elements.step_up_ceremony.value = answer.ceremony;
  form.elements.step_up_credential.value = answer.credential;
};

// The account page: adding asks the server for options (with the step-up), the authenticator
// for a new credential, and posts it; removing steps up with a passkey where there is no
// password.
const accountPage = (add) => {
  const finish = document.getElementById("add-passkey-finish");
  add.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await stepUp(add);
      const options = await postForJson(
        "/account/passkeys/options",
        new URLSearchParams(new FormData(add)),
        "application/x-www-form-urlencoded",
      );
      const credential = await navigator.credentials.create({
        publicKey: creationOptions(options.publicKey),
      });
      submitWith(finish, {
        name: add.elements.name.value,
        ceremony: options.ceremony,
        credential: JSON.stringify(attestationJson(credential)),
      });
    } catch (error) {
      failed(error);
    }
  });
  const stepsUp = "form.remove-passkey[data-step-up=passkey], form.step-up[data-step-up=passkey]";
  for (const remove of document.querySelectorAll(stepsUp)) {
    remove.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await stepUp(remove);
        remove.submit();
      } catch (error) {
        failed(error);
      }
    });
  }
};

if (!window.PublicKeyCredential) {
  for (const control of document.querySelectorAll(".passkey-control")) control.disabled = true;
  if (document.getElementById("passkey-error")) {
    showError("This browser cannot use passkeys.");
  }
} else {
  const button = document.getElementById("passkey-sign-in");
  if (button) loginPage(button);
  const second = document.getElementById("use-passkey");
  if (second) secondFactor(second);
  const add = document.getElementById("add-passkey");
  if (add) accountPage(add);
}
