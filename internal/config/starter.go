package config

// starter is the file `interlock init` writes. TestStarter keeps it honest:
// it must parse and validate as is, every key of the schema must appear in
// it, and the commented-out upstream examples must parse and validate once
// uncommented.
const starter = `# interlock configuration.
#
# Every key is shown with its default. Reference: docs/configuration.md.
#
# Any value may read the environment when the file is loaded:
#   ${VAR}            the value of VAR (an error if VAR is not set)
#   ${VAR:-fallback}  the value of VAR, or "fallback" if VAR is unset or empty
#   $$                a literal "$"
# Keep secrets (API keys, tokens) in the environment, not in this file.

# Address (host:port) the gateway listens on. Default: 127.0.0.1:8470.
listen: 127.0.0.1:8470

# URL agents and browsers use to reach the gateway; set it when interlock is
# behind a proxy or TLS terminator. Default: http://<listen>.
# public_url: https://interlock.example.com

# Host header values accepted on every request, and hosts accepted in the
# Origin header (DNS-rebinding protection). An entry without a port matches
# any port. The host of public_url is always accepted.
# Default: localhost, 127.0.0.1, [::1] (plus the host of public_url).
# allowed_hosts:
#   - localhost
#   - 127.0.0.1
#   - "[::1]"
#   - interlock.example.com

storage:
  # Store backend: sqlite (one gateway process) or postgres (several
  # replicas on one database; docs/deployment.md). Default: sqlite.
  driver: sqlite
  # Data source: for sqlite a file path, relative to this file's directory
  # (default: interlock.db); for postgres a URL such as
  # postgres://interlock:${PGPASSWORD}@db.internal:5432/interlock?sslmode=verify-full
  dsn: interlock.db
  # postgres only: the schema to keep interlock's tables in (created if
  # missing; default: the connection's search_path), and the most
  # connections each replica opens (default: max(4, CPUs)).
  # schema: interlock
  # max_conns: 8

# MCP servers interlock fronts. Each has a name (1-32 of a-z A-Z 0-9 _ -),
# served at /mcp/<name>, and either a url (Streamable HTTP) or a command
# (stdio). Agents never see the headers or env given here. Default: none.
upstreams: []
#  # An HTTP upstream. Interlock adds the headers to every request it makes
#  # upstream; the key comes from the environment variable ACME_API_KEY.
#  - name: acme
#    url: https://mcp.acme.example/mcp
#    headers:
#      Authorization: Bearer ${ACME_API_KEY}
#    # Put before this upstream's tool, prompt and resource names on the
#    # aggregated endpoint /mcp. Default: "<name>_".
#    prefix: acme_
#    # Bound on one request to this upstream. Default: 5m.
#    timeout: 5m
#    # Interlock sends every forwarded call's action credential in the
#    # Interlock-Credential header and in params._meta. true: also as
#    # "Authorization: Bearer" (not allowed with an Authorization header
#    # above). Default: false.
#    credential_as_bearer: false
#
#  # A stdio upstream: interlock starts the command and speaks MCP over its
#  # stdin and stdout.
#  - name: files
#    command: [npx, -y, "@modelcontextprotocol/server-filesystem", /tmp]
#    # Added to the server's environment (e.g. TOKEN: ${FILES_TOKEN}).
#    env: {}
#    # Working directory, relative to this file's directory. Default: the
#    # directory interlock runs in.
#    # dir: .
#    # true: one process serves every agent session; false: one process per
#    # session. Default: false.
#    shared: false

relay:
  # Largest JSON-RPC message accepted from an agent, in bytes. Default: 4194304 (4 MiB).
  max_message_bytes: 4194304
  # Agent sessions with no request for this long are ended. Default: 30m.
  session_idle_timeout: 30m

policy:
  # The policy file that decides every tool call (docs/policy.md), relative to
  # this file. Without one, interlock denies every tool call (fail closed).
  # "interlock demo" writes a worked example; so does examples/acme/policy.yaml.
  file: ""
  # How often the policy file is checked for changes; a changed file is
  # compiled and swapped in, and on error the old policy stays. SIGHUP reloads
  # at once. Default: 2s.
  watch_interval: 2s

audit:
  # Tool arguments whose values are replaced by "[redacted]" in the audit log
  # (any depth, case-insensitive). The argument digest still covers them.
  redact: [password, token, secret, api_key, card_number]
  # How often the head of the audit chain is signed (a checkpoint). Default: 1m.
  checkpoint_interval: 1m

approvals:
  # Calls the policy marks "approve" are held open while the required
  # approvers are asked (docs/approvals.md). The longest a call is held;
  # past it the agent is told the request is still pending and that calling
  # again with the same arguments joins it. Default: 2m.
  hold: 2m
  # How long a request stays open for approvers before it expires.
  # Default: 10m.
  timeout: 10m

notifications:
  # Approvers are told about each approval request on every channel set here
  # (they also see it in the console at /console). Default: none.
  webhooks: []
  #  - url: https://hooks.example.com/interlock
  #    secret: ${INTERLOCK_WEBHOOK_SECRET}   # signs each body (HMAC-SHA256)
  slack: []
  #  - url: ${SLACK_WEBHOOK_URL}
  # smtp:
  #   addr: smtp.example.com:587
  #   from: interlock <interlock@example.com>
  #   username: interlock
  #   password: ${SMTP_PASSWORD}
  #   tls: starttls                        # starttls | tls | none
  # Web Push to the console installed as an app (approvers press "Enable
  # notifications" there). Make the key with
  # "interlock notifications vapid-keys"; every replica needs the same one.
  # web_push:
  #   vapid_private_key: ${INTERLOCK_VAPID_PRIVATE_KEY}
  #   subject: mailto:security@example.com   # or an https:// URL

ciba:
  # Agents registered as CIBA clients of interlock's OpenID Provider
  # (docs/ciba.md). An agent without an entry is a poll client that
  # authenticates with one of its agent tokens. Default: none.
  clients: []
  #  - agent: procurement-bot            # the agent id, which is the client_id
  #    delivery: ping                    # poll | ping. Default: poll.
  #    # Where interlock pings the agent when the result is ready (ping
  #    # only): https, or http only to localhost / 127.0.0.1.
  #    notification_endpoint: https://agent.example/ciba/notify
  #    # The agent's public keys for private_key_jwt, relative to this file
  #    # ("interlock agents keygen --agent procurement-bot" makes a key pair
  #    # and prints the set). Or inline: jwks: '{"keys":[...]}'.
  #    jwks_file: keys/procurement-bot.jwks.json
  #    # jwks: ""

scim:
  # Bearer token for SCIM 2.0 provisioning at /scim/v2 (docs/identity.md):
  # Entra ID or Okta deactivating a user stops their agents at once. Take it
  # from the environment. Empty: SCIM is off.
  token: ""

admin:
  # Tokens of the admin API at /api/v1 (docs/admin-api.md), which the CLI
  # uses with --server URL --admin-token T. Make one with
  # "interlock admin token --name NAME --role ROLE": it prints the token
  # once and the line to paste here (only its SHA-256 is kept). Roles:
  # viewer (reads), security (also suspends, resumes, deactivates, stops,
  # revokes) and admin (everything). Empty: the admin API is off.
  tokens: []
  #  - name: ops-team
  #    sha256: 0000000000000000000000000000000000000000000000000000000000000000
  #    roles: [admin]

credentials:
  # Every call interlock forwards carries a short-lived signed credential
  # (docs/credentials.md). Its signing keys are kept in the store, sealed
  # with this key-encryption key: a file holding 32 random bytes in base64,
  # relative to this file. The environment variable INTERLOCK_KEK, when set,
  # is used instead (recommended in production; every replica needs the
  # same key). Created when missing and the store has no signing key yet.
  # Keep a copy: without it the signing keys cannot be opened.
  kek_file: interlock.kek
  # Signature algorithm of new signing keys: EdDSA (Ed25519) or ES256.
  # Default: EdDSA.
  algorithm: EdDSA

log:
  # debug, info, warn or error. Default: info.
  level: info
  # text or json. Default: text.
  format: text
`

// Starter returns the commented starter configuration written by
// `interlock init`. It parses and validates as is (no upstreams), and shows
// every key with its default.
func Starter() []byte {
	return []byte(starter)
}
