// interlock console service worker: shows approval notifications sent by
// the gateway over Web Push (RFC 8030; the payload is the JSON
// {"title","body","url","approval_id"}) and opens the request's page when
// one is tapped. It caches nothing: the console is live or it is nothing.
"use strict";

// The console's base path ("/console/"): this worker's scope.
const scope = new URL(self.registration.scope);

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (ev) => ev.waitUntil(self.clients.claim()));

// target returns the page to open for a notification's url: the url when it
// is a page of this console (same origin, under the scope), else the list.
function target(url) {
  try {
    const u = new URL(url, scope);
    if (u.origin === scope.origin && u.pathname.startsWith(scope.pathname)) return u.href;
  } catch (e) { /* not a URL */ }
  return scope.href;
}

// message turns a push payload into a notification title and options.
function message(data) {
  let p = {};
  try { p = data ? data.json() : {}; } catch (e) { p = {}; }
  if (!p || typeof p !== "object") p = {};
  const title = typeof p.title === "string" && p.title ? p.title : "Approval needed";
  const options = {
    body: typeof p.body === "string" ? p.body : "An agent is waiting for your decision.",
    icon: scope.pathname + "static/icon-192.png",
    badge: scope.pathname + "static/icon-192.png",
    data: { url: target(typeof p.url === "string" ? p.url : ""), approval_id: p.approval_id || "" },
    requireInteraction: true,
  };
  if (typeof p.approval_id === "string" && p.approval_id) {
    // One notification per request: a repeat replaces it.
    options.tag = "approval-" + p.approval_id;
    options.renotify = true;
  }
  return { title: title, options: options };
}

self.addEventListener("push", (ev) => {
  const m = message(ev.data);
  ev.waitUntil(self.registration.showNotification(m.title, m.options));
});

self.addEventListener("notificationclick", (ev) => {
  ev.notification.close();
  const url = target(ev.notification.data && ev.notification.data.url);
  ev.waitUntil((async () => {
    const wins = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    // The request's page already open: focus it.
    for (const w of wins) {
      if (w.url === url && "focus" in w) return w.focus();
    }
    // Another console page: take it there.
    for (const w of wins) {
      if (w.url.startsWith(scope.href) && "navigate" in w) {
        try {
          const n = await w.navigate(url);
          if (n) return n.focus();
        } catch (e) { /* not controlled by this worker: open a window */ }
      }
    }
    return self.clients.openWindow(url);
  })());
});
