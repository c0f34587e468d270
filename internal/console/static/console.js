// interlock console: passkey ceremonies and live updates. No framework,
// no inline script (the CSP forbids it).
"use strict";

(function () {
  const body = document.body;
  const base = body.dataset.base || "/console";

  function csrf() {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }

  // ---- base64url ----
  function fromB64u(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function toB64u(buf) {
    if (!buf) return "";
    const b = new Uint8Array(buf);
    let s = "";
    for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // ---- HTTP ----
  async function post(path, data) {
    const res = await fetch(base + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(data || {}),
    });
    let out = {};
    try { out = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      const err = new Error(out.error || ("The server answered " + res.status + "."));
      err.status = res.status;
      throw err;
    }
    return out;
  }

  function status(msg, kind) {
    const el = document.getElementById("status");
    if (!el) return;
    el.textContent = msg || "";
    el.className = "status" + (kind ? " " + kind : "");
  }

  function ceremonyError(e) {
    if (e && e.name === "NotAllowedError") return "The passkey request was cancelled or timed out.";
    if (e && e.name === "InvalidStateError") return "This device already has a passkey for your account.";
    if (e && e.name === "SecurityError") return "Passkeys are not allowed on this address.";
    return (e && e.message) || "Something went wrong.";
  }

  // ---- WebAuthn JSON <-> browser objects ----
  function creationOptions(pk) {
    const o = Object.assign({}, pk);
    o.challenge = fromB64u(pk.challenge);
    o.user = Object.assign({}, pk.user, { id: fromB64u(pk.user.id) });
    if (pk.excludeCredentials) {
      o.excludeCredentials = pk.excludeCredentials.map((c) => Object.assign({}, c, { id: fromB64u(c.id) }));
    }
    return o;
  }
  function requestOptions(pk) {
    const o = Object.assign({}, pk);
    o.challenge = fromB64u(pk.challenge);
    if (pk.allowCredentials) {
      o.allowCredentials = pk.allowCredentials.map((c) => Object.assign({}, c, { id: fromB64u(c.id) }));
    }
    return o;
  }
  function attestationJSON(cred) {
    const r = cred.response;
    return {
      id: cred.id,
      rawId: toB64u(cred.rawId),
      type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: {
        clientDataJSON: toB64u(r.clientDataJSON),
        attestationObject: toB64u(r.attestationObject),
        transports: r.getTransports ? r.getTransports() : undefined,
      },
    };
  }
  function assertionJSON(cred) {
    const r = cred.response;
    return {
      id: cred.id,
      rawId: toB64u(cred.rawId),
      type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: {
        clientDataJSON: toB64u(r.clientDataJSON),
        authenticatorData: toB64u(r.authenticatorData),
        signature: toB64u(r.signature),
        userHandle: r.userHandle ? toB64u(r.userHandle) : undefined,
      },
    };
  }
  function supported() {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      status("This browser does not support passkeys.", "error");
      return false;
    }
    return true;
  }

  // ---- sign-in ----
  function setupLogin() {
    const btn = document.getElementById("signin");
    if (!btn) return;
    btn.addEventListener("click", async () => {
      if (!supported()) return;
      btn.disabled = true;
      status("Waiting for your passkey…");
      try {
        const begin = await post("/api/login/begin");
        const cred = await navigator.credentials.get({ publicKey: requestOptions(begin.publicKey) });
        const done = await post("/api/login/finish", { credential: assertionJSON(cred), next: btn.dataset.next || "" });
        status("Signed in.", "ok");
        window.location.assign(done.redirect || base + "/");
      } catch (e) {
        status(ceremonyError(e), "error");
        btn.disabled = false;
      }
    });
  }

  // ---- enrolment ----
  function setupEnroll() {
    const btn = document.getElementById("enroll");
    if (!btn) return;
    btn.addEventListener("click", async () => {
      if (!supported()) return;
      btn.disabled = true;
      status("Waiting for your device…");
      const token = btn.dataset.token;
      try {
        const begin = await post("/api/enroll/begin", { token: token });
        const cred = await navigator.credentials.create({ publicKey: creationOptions(begin.publicKey) });
        const done = await post("/api/enroll/finish", { token: token, credential: attestationJSON(cred) });
        status("Your passkey is registered.", "ok");
        window.location.assign(done.redirect || base + "/");
      } catch (e) {
        status(ceremonyError(e), "error");
        btn.disabled = false;
      }
    });
  }

  // ---- approve / deny ----
  function setupDetail() {
    const root = document.getElementById("approval");
    const approve = document.getElementById("approve");
    const deny = document.getElementById("deny");
    if (!root || !approve || !deny) return;
    const id = root.dataset.id;
    const form = document.getElementById("deny-form");
    const reason = document.getElementById("deny-reason");
    const buttons = [approve, deny, document.getElementById("deny-confirm")];

    async function decide(decision, why) {
      if (!supported()) return;
      buttons.forEach((b) => { if (b) b.disabled = true; });
      status("Confirm with your passkey…");
      try {
        const path = "/api/approvals/" + encodeURIComponent(id);
        const ch = await post(path + "/challenge", { decision: decision });
        const cred = await navigator.credentials.get({ publicKey: requestOptions(ch.publicKey) });
        const done = await post(path + "/vote", {
          decision: decision, reason: why || "", token: ch.token, credential: assertionJSON(cred),
        });
        status(decision === "approve" ? "Approved." : "Denied.", "ok");
        window.location.assign(done.redirect || window.location.href);
      } catch (e) {
        status(ceremonyError(e), "error");
        buttons.forEach((b) => { if (b) b.disabled = false; });
      }
    }

    approve.addEventListener("click", () => decide("approve"));
    deny.addEventListener("click", () => {
      form.hidden = false;
      reason.focus();
    });
    document.getElementById("deny-cancel").addEventListener("click", () => {
      form.hidden = true;
    });
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const why = reason.value.trim();
      if (!why) {
        status("Say why you deny this request.", "error");
        reason.focus();
        return;
      }
      decide("deny", why);
    });
  }

  // ---- live list ----
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmtTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }
  function renderList(items) {
    const ul = document.getElementById("pending");
    const empty = document.getElementById("empty");
    if (!ul) return;
    ul.replaceChildren();
    items.forEach((it) => {
      const li = el("li", "item");
      li.dataset.id = it.id;
      const a = el("a");
      a.href = it.url;
      a.append(el("span", "tool", it.tool), el("span", "msg", it.message));
      const meta = el("span", "meta",
        it.agent + " · risk " + it.risk + " · " + it.approvals + "/" + it.quorum + " approvals · expires ");
      const t = el("time", "", fmtTime(it.expires_at));
      t.dateTime = it.expires_at;
      meta.append(t);
      a.append(meta);
      li.append(a);
      ul.append(li);
    });
    if (empty) empty.hidden = items.length > 0;
  }
  function setupList() {
    if (body.dataset.page !== "list" || !window.EventSource) return;
    const live = document.getElementById("live");
    const es = new EventSource(base + "/events");
    es.addEventListener("pending", (ev) => {
      try {
        renderList(JSON.parse(ev.data).pending || []);
        if (live) live.dataset.state = "live";
      } catch (e) { /* ignore a bad event */ }
    });
    es.addEventListener("error", () => {
      if (live) live.dataset.state = "reconnecting";
    });
  }


  // ---- notifications (Web Push to the installed console) ----
  function pushSupported() {
    return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  }
  async function pushSend(method, data) {
    const res = await fetch(base + "/api/push", {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(data),
    });
    if (!res.ok) {
      let out = {};
      try { out = await res.json(); } catch (e) { /* not JSON */ }
      throw new Error(out.error || ("The server answered " + res.status + "."));
    }
  }
  async function pushRegistration() {
    return navigator.serviceWorker.register(base + "/sw.js", { scope: base + "/" });
  }
  // currentSubscription is this browser's subscription, or null.
  async function currentSubscription() {
    if (!pushSupported()) return null;
    const reg = await navigator.serviceWorker.getRegistration(base + "/");
    return reg ? reg.pushManager.getSubscription() : null;
  }
  function setupPush() {
    const box = document.getElementById("push");
    if (!box || !box.dataset.key || !pushSupported()) return;
    const enable = document.getElementById("push-enable");
    const disable = document.getElementById("push-disable");
    const say = document.getElementById("push-status");
    function show(on, msg) {
      enable.hidden = on;
      disable.hidden = !on;
      say.textContent = msg || (on ? "Notifications are on for this device." : "");
      box.hidden = false;
    }
    (async () => {
      try {
        const sub = await currentSubscription();
        if (sub) {
          // Keep the gateway's copy current (and bound to whoever is
          // signed in on this browser).
          await pushSend("POST", sub.toJSON());
          show(true);
        } else {
          show(false, Notification.permission === "denied" ? "Notifications are blocked in this browser's settings." : "");
        }
      } catch (e) {
        show(false, e.message);
      }
    })();
    enable.addEventListener("click", async () => {
      enable.disabled = true;
      try {
        const perm = await Notification.requestPermission();
        if (perm !== "granted") {
          show(false, "Notifications were not allowed.");
          return;
        }
        const reg = await pushRegistration();
        await navigator.serviceWorker.ready;
        let sub = await reg.pushManager.getSubscription();
        if (sub && sub.options && sub.options.applicationServerKey &&
            toB64u(sub.options.applicationServerKey) !== box.dataset.key) {
          await sub.unsubscribe(); // made with another gateway key
          sub = null;
        }
        if (!sub) {
          sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: fromB64u(box.dataset.key) });
        }
        await pushSend("POST", sub.toJSON());
        show(true, "Notifications are on for this device.");
      } catch (e) {
        show(false, (e && e.message) || "Notifications could not be turned on.");
      } finally {
        enable.disabled = false;
      }
    });
    disable.addEventListener("click", async () => {
      disable.disabled = true;
      try {
        await pushOff();
        show(false, "Notifications are off for this device.");
      } catch (e) {
        say.textContent = e.message;
      } finally {
        disable.disabled = false;
      }
    });
  }
  // pushOff unsubscribes this browser, at the gateway and locally.
  async function pushOff() {
    const sub = await currentSubscription();
    if (!sub) return;
    try {
      await pushSend("DELETE", { endpoint: sub.endpoint });
    } finally {
      await sub.unsubscribe();
    }
  }

  // ---- sign out ----
  function setupSignout() {
    const form = document.querySelector("form.signout");
    if (!form) return;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      // Whoever signs in next on this browser must not get this user's
      // notifications.
      try { await pushOff(); } catch (e) { /* best effort */ }
      try {
        const done = await post("/logout");
        window.location.assign(done.redirect || base + "/login");
      } catch (e) {
        window.location.assign(base + "/login");
      }
    });
  }

  function init() {
    setupSignout();
    setupLogin();
    setupEnroll();
    setupDetail();
    setupList();
    setupPush();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
