// Package notify delivers approval notifications: when a gated call needs a
// human's approval, it tells every required approver, on every configured
// channel, with a short message and a link straight to the approval in the
// console.
//
// A Channel sends one Message to one Recipient. Four are provided:
//
//   - Webhook POSTs a JSON event signed with HMAC-SHA256 in the
//     Interlock-Signature header (t=<unix seconds>,v1=<hex>); receivers check
//     it with VerifySignature.
//   - Slack POSTs to a Slack-compatible incoming webhook.
//   - SMTP sends one plain-text, quoted-printable email per recipient with
//     net/smtp (STARTTLS by default, AUTH only when a username is set).
//   - WebPush sends to each of the recipient's browser push subscriptions
//     (RFC 8030), the payload encrypted per RFC 8291 (aes128gcm, RFC 8188)
//     and the request authenticated with VAPID (RFC 8292). A subscription the
//     push service reports gone (404, 410) yields an error wrapping
//     ErrSubscriptionGone, so the caller can delete it.
//
// A Dispatcher fans a message out to every recipient on every channel in
// the background, retrying each delivery with backoff until it succeeds, it
// fails permanently (an error wrapping ErrPermanent: 4xx other than 408 and
// 429, SMTP 5xx, a gone subscription), the attempts are spent or the
// approval has expired. Every attempt's outcome is handed to Options.Record
// (for the audit log or metrics). Close waits for deliveries in flight.
//
// The package must not decide who is notified or whether a call may go
// ahead (that is the gate's business), must not log secrets (webhook
// secrets, SMTP passwords, the VAPID private key, push subscription keys,
// or URLs that are themselves credentials, such as Slack webhook URLs and
// push endpoints), and must not read the clock except through the injected
// Now functions.
package notify
