package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// Public keys as JWKs (from interlock agents keygen, and RFC 8037 A.2).
const (
	testECJWK  = `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"ec1","use":"sig","alg":"ES256"}`
	testOKPJWK = `{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`
)

func TestCIBAClients(t *testing.T) {
	cfg := mustParse(t, `ciba:
  clients:
    - agent: procurement-bot
      delivery: ping
      notification_endpoint: https://agent.example/ciba/notify
      jwks_file: keys/procurement-bot.jwks.json
    - agent: poll-bot
      jwks: '{"keys":[`+testECJWK+`,`+testOKPJWK+`]}'
    - agent: local.ping_bot-2
      delivery: ping
      notification_endpoint: http://127.0.0.1:9999/cb
    - agent: abs
      jwks_file: /etc/interlock/abs.jwks.json
`, nil)
	cl := cfg.CIBA.Clients
	if len(cl) != 4 {
		t.Fatalf("clients = %+v", cl)
	}
	dir, _ := filepath.Abs(".")
	if cl[0].Agent != "procurement-bot" || cl[0].Delivery != CIBADeliveryPing || cl[0].NotificationEndpoint != "https://agent.example/ciba/notify" ||
		cl[0].JWKSFile != filepath.Join(dir, "keys", "procurement-bot.jwks.json") {
		t.Errorf("clients[0] = %+v (jwks_file relative to %s)", cl[0], dir)
	}
	if cl[1].Delivery != CIBADeliveryPoll || !strings.Contains(cl[1].JWKS, `"kid":"ec1"`) || cl[1].JWKSFile != "" {
		t.Errorf("clients[1] = %+v (delivery defaults to poll)", cl[1])
	}
	if cl[3].JWKSFile != "/etc/interlock/abs.jwks.json" {
		t.Errorf("an absolute jwks_file was changed: %q", cl[3].JWKSFile)
	}
	// Redacted is a deep copy; the endpoint is redacted like any URL.
	r := cfg.Redacted()
	r.CIBA.Clients[0].Agent = "changed"
	if cfg.CIBA.Clients[0].Agent != "procurement-bot" {
		t.Error("Redacted shares ciba.clients with the original")
	}
	// No section, or an empty one: no clients.
	if cfg := mustParse(t, "ciba: {}\n", nil); len(cfg.CIBA.Clients) != 0 {
		t.Errorf("clients from nothing: %+v", cfg.CIBA.Clients)
	}
}

func TestValidateCIBAClients(t *testing.T) {
	ecPriv := strings.Replace(testECJWK, `"kid"`, `"d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI","kid"`, 1)
	for _, c := range []struct {
		name   string
		client string // the YAML flow mapping of the one client
		want   string // "" = valid
	}{
		{"poll, nothing else", `{agent: a}`, ""},
		{"explicit poll", `{agent: a, delivery: poll}`, ""},
		{"ping https", `{agent: a, delivery: ping, notification_endpoint: "https://agent.example/cb?x=1"}`, ""},
		{"ping http localhost", `{agent: a, delivery: ping, notification_endpoint: "http://localhost:8080/cb"}`, ""},
		{"ping http 127.0.0.1", `{agent: a, delivery: ping, notification_endpoint: "http://127.0.0.1/cb"}`, ""},
		{"ping http [::1]", `{agent: a, delivery: ping, notification_endpoint: "http://[::1]:9/cb"}`, ""},
		{"inline jwks", `{agent: a, jwks: '{"keys":[` + testOKPJWK + `]}'}`, ""},
		{"jwks_file", `{agent: a, jwks_file: a.jwks.json}`, ""},

		{"no agent", `{delivery: poll}`, "ciba.clients[0].agent: is required"},
		{"empty agent", `{agent: ""}`, "ciba.clients[0].agent: is required"},
		{"bad agent id", `{agent: "-bot"}`, "is not an agent id"},
		{"agent id with a space", `{agent: "a bot"}`, "is not an agent id"},
		{"agent id too long", `{agent: ` + strings.Repeat("a", 65) + `}`, "is not an agent id"},
		{"push", `{agent: a, delivery: push}`, `ciba.clients[0].delivery: "push" is not one of poll, ping`},
		{"ping without endpoint", `{agent: a, delivery: ping}`, "notification_endpoint: is required for delivery: ping"},
		{"ping over http", `{agent: a, delivery: ping, notification_endpoint: "http://agent.example/cb"}`, "must use https"},
		{"ping relative", `{agent: a, delivery: ping, notification_endpoint: "/cb"}`, "must be an absolute https:// URL"},
		{"ping other scheme", `{agent: a, delivery: ping, notification_endpoint: "ftp://agent.example/cb"}`, "must be an absolute https:// URL"},
		{"ping user info", `{agent: a, delivery: ping, notification_endpoint: "https://u:p@agent.example/cb"}`, "must not contain user info"},
		{"ping fragment", `{agent: a, delivery: ping, notification_endpoint: "https://agent.example/cb#x"}`, "must not contain a fragment"},
		{"poll with endpoint", `{agent: a, notification_endpoint: "https://agent.example/cb"}`, "applies only to delivery: ping"},
		{"both jwks and jwks_file", `{agent: a, jwks_file: a.json, jwks: '{"keys":[` + testOKPJWK + `]}'}`, "ciba.clients[0]: has both jwks_file and jwks"},
		{"jwks not JSON", `{agent: a, jwks: "not json"}`, "ciba.clients[0].jwks: is not a JWK Set"},
		{"jwks a bare key", `{agent: a, jwks: '` + testOKPJWK + `'}`, "the JWK Set has no keys"},
		{"jwks a list", `{agent: a, jwks: '[` + testOKPJWK + `]'}`, "is not a JWK Set"},
		{"jwks trailing text", `{agent: a, jwks: '{"keys":[` + testOKPJWK + `]} x'}`, "text follows"},
		{"jwks empty", `{agent: a, jwks: '{"keys":[]}'}`, "has no keys"},
		{"jwks null key", `{agent: a, jwks: '{"keys":[null]}'}`, "key 0 is not a JSON object"},
		{"jwks private EC key", `{agent: a, jwks: '{"keys":[` + ecPriv + `]}'}`, `key 0 is a private key (it has "d")`},
		{"jwks private key second", `{agent: a, jwks: '{"keys":[` + testOKPJWK + `,{"kty":"OKP","crv":"Ed25519","x":"x","d":"y"}]}'}`, `key 1 is a private key (it has "d")`},
		{"jwks private RSA key", `{agent: a, jwks: '{"keys":[{"kty":"RSA","n":"n","e":"AQAB","p":"p"}]}'}`, `key 0 is a private key (it has "p")`},
		{"jwks symmetric key", `{agent: a, jwks: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}'}`, "is a symmetric key"},
		{"jwks unknown kty", `{agent: a, jwks: '{"keys":[{"kty":"XYZ"}]}'}`, `kty "XYZ" is not one of RSA, EC, OKP`},
		{"jwks no kty", `{agent: a, jwks: '{"keys":[{"x":"1"}]}'}`, `kty "" is not one of`},
		{"jwks P-384", `{agent: a, jwks: '{"keys":[{"kty":"EC","crv":"P-384","x":"1","y":"2"}]}'}`, "must be on curve P-256"},
		{"jwks X25519", `{agent: a, jwks: '{"keys":[{"kty":"OKP","crv":"X25519","x":"1"}]}'}`, "must be Ed25519"},
		{"jwks use enc", `{agent: a, jwks: '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"1","use":"enc"}]}'}`, `use "enc" must be "sig"`},
		{"jwks alg HS256", `{agent: a, jwks: '{"keys":[{"kty":"RSA","n":"1","e":"AQAB","alg":"HS256"}]}'}`, `alg "HS256" is not one of`},
		{"jwks too large", `{agent: a, jwks: '{"keys":[` + testOKPJWK + `],"pad":"` + strings.Repeat("x", MaxCIBAJWKS) + `"}'}`, "larger than 64 KiB"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := "ciba:\n  clients:\n    - " + c.client + "\n"
			_, err := parse(t, src, nil)
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				return
			}
			checkProblems(t, err, []want{{3, c.want}})
		})
	}
}

func TestValidateCIBADuplicateAgent(t *testing.T) {
	_, err := parse(t, `ciba:
  clients:
    - agent: bot
    - agent: other
    - agent: bot
      delivery: ping
`, nil)
	checkProblems(t, err, []want{
		{5, `ciba.clients[2].agent: agent "bot" is registered twice (first at line 3)`},
		{5, "notification_endpoint: is required for delivery: ping"},
	})
}

func TestValidateCIBAProblemsAtOnce(t *testing.T) {
	_, err := parse(t, `ciba:
  clients:
    - agent: ""
      delivery: pong
    - agent: b
      jwks: '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"x","d":"y"}]}'
      jwks_fil: typo.json
`, nil)
	checkProblems(t, err, []want{
		{3, "agent: is required"},
		{4, `delivery: "pong" is not one of poll, ping`},
		{6, "is a private key"},
		{7, `unknown key "jwks_fil" (did you mean "jwks_file"?)`},
	})
}

// The endpoint is never quoted in a problem: its query may carry a secret.
func TestCIBAEndpointNotInProblems(t *testing.T) {
	_, err := parse(t, "ciba:\n  clients:\n    - {agent: a, delivery: ping, notification_endpoint: 'http://agent.example/cb?token=s3cr3t-value'}\n", nil)
	if err == nil || strings.Contains(err.Error(), "s3cr3t-value") {
		t.Fatalf("error %v", err)
	}
}

func TestCheckCIBAJWKS(t *testing.T) {
	if err := CheckCIBAJWKS([]byte(`{"keys":[` + testECJWK + `]}`)); err != nil {
		t.Errorf("a public EC key set: %v", err)
	}
	if err := CheckCIBAJWKS(nil); err == nil {
		t.Error("an empty file was accepted")
	}
}

func TestStarterShowsCIBA(t *testing.T) {
	s := string(Starter())
	for _, w := range []string{"ciba:", "clients: []", "notification_endpoint:", "jwks_file:", "interlock agents keygen"} {
		if !strings.Contains(s, w) {
			t.Errorf("the starter configuration does not show %q", w)
		}
	}
	// The commented example, uncommented, is a valid configuration.
	_, ex, _ := strings.Cut(s, "  clients: []\n")
	var lines []string
	for _, l := range strings.Split(ex, "\n") {
		if !strings.HasPrefix(l, "  #") {
			break
		}
		lines = append(lines, "  "+strings.TrimPrefix(l, "  #"))
	}
	src := "ciba:\n  clients:\n" + strings.Join(lines, "\n") + "\n"
	cfg := mustParse(t, src, nil)
	if len(cfg.CIBA.Clients) != 1 || cfg.CIBA.Clients[0].Delivery != CIBADeliveryPing {
		t.Errorf("starter example: %+v\n%s", cfg.CIBA.Clients, src)
	}
}
