package notify

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// smtpServer is a minimal SMTP server on a loopback listener: EHLO/HELO,
// STARTTLS (when tlsConfig is set), AUTH PLAIN (when user is set), MAIL,
// RCPT, DATA, RSET, NOOP, QUIT. It records every message.
type smtpServer struct {
	ln        net.Listener
	tlsConfig *tls.Config
	user      string
	pass      string
	rcptReply string // reply to RCPT TO; empty means 250
	wg        sync.WaitGroup

	mu   sync.Mutex
	msgs []smtpMessage
}

type smtpMessage struct {
	from, rcpt string
	data       []byte
	tls        bool   // the transaction ran over TLS
	auth       string // the AUTH PLAIN identity, authenticated
}

func newSMTPServer(t *testing.T, configure func(*smtpServer)) *smtpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{ln: ln}
	if configure != nil {
		configure(s)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *smtpServer) messages() []smtpMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]smtpMessage(nil), s.msgs...)
}

func (s *smtpServer) serve(conn net.Conn) {
	defer func() { conn.Close() }()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	var cur smtpMessage
	secure := false
	tp.PrintfLine("220 test.local ESMTP")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			ext := []string{"250-test.local"}
			if s.tlsConfig != nil && !secure {
				ext = append(ext, "250-STARTTLS")
			}
			if s.user != "" {
				ext = append(ext, "250-AUTH PLAIN")
			}
			ext = append(ext, "250 8BITMIME")
			tp.PrintfLine("%s", strings.Join(ext, "\r\n"))
		case "HELO":
			tp.PrintfLine("250 test.local")
		case "STARTTLS":
			if s.tlsConfig == nil || secure {
				tp.PrintfLine("502 not now")
				continue
			}
			tp.PrintfLine("220 go ahead")
			tc := tls.Server(conn, s.tlsConfig)
			if err := tc.Handshake(); err != nil {
				return
			}
			conn, tp, secure = tc, textproto.NewConn(tc), true
			cur = smtpMessage{}
		case "AUTH":
			mech, ir, _ := strings.Cut(arg, " ")
			b, err := base64.StdEncoding.DecodeString(ir)
			parts := strings.Split(string(b), "\x00")
			if !strings.EqualFold(mech, "PLAIN") || err != nil || len(parts) != 3 || parts[1] != s.user || parts[2] != s.pass {
				tp.PrintfLine("535 5.7.8 authentication failed")
				continue
			}
			cur.auth = parts[1]
			tp.PrintfLine("235 2.7.0 ok")
		case "MAIL":
			cur.from = envelopeAddr(arg)
			tp.PrintfLine("250 ok")
		case "RCPT":
			if s.rcptReply != "" {
				tp.PrintfLine("%s", s.rcptReply)
				continue
			}
			cur.rcpt = envelopeAddr(arg)
			tp.PrintfLine("250 ok")
		case "DATA":
			tp.PrintfLine("354 end with .")
			data, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			cur.data, cur.tls = data, secure
			s.mu.Lock()
			s.msgs = append(s.msgs, cur)
			s.mu.Unlock()
			cur = smtpMessage{auth: cur.auth}
			tp.PrintfLine("250 queued")
		case "RSET", "NOOP":
			tp.PrintfLine("250 ok")
		case "QUIT":
			tp.PrintfLine("221 bye")
			return
		default:
			tp.PrintfLine("502 unknown command")
		}
	}
}

// envelopeAddr is the path of "FROM:<a@b> BODY=8BITMIME" or "TO:<a@b>".
func envelopeAddr(arg string) string {
	_, rest, _ := strings.Cut(arg, "<")
	addr, _, _ := strings.Cut(rest, ">")
	return addr
}

// testCert is a self-signed certificate for 127.0.0.1 and a pool trusting it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test smtp"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestSMTPMessage(t *testing.T) {
	srv := newSMTPServer(t, nil)
	var rec recorder
	ch := SMTP{Addr: srv.ln.Addr().String(), From: "Interlock <interlock@example.com>", TLS: NoTLS}
	d := newTestDispatcher(t, Options{Channels: []Channel{ch}, Record: rec.record, Now: fixedNow, Backoff: noBackoff})
	m := testMessage()
	m.Title = "Genehmigung nötig: acme.place_order"
	m.Text = "Agent „shopper“ möchte bestellen: 3 × widget = €120.\n.\nA line that is long enough to be wrapped by the quoted-printable encoder because it goes well past seventy-six characters."
	m.Expires = testNow.Add(30 * time.Minute)
	d.Notify(m, []Recipient{
		{UserID: "u1", Email: "ann@example.com", Name: "Ann Müller"},
		{UserID: "u2"}, // no email: skipped
	})
	closeDispatcher(t, d)

	ds := rec.all()
	if len(ds) != 1 || !ds[0].OK || ds[0].Channel != "email" || ds[0].Recipient != "u1" {
		t.Fatalf("records = %+v, want one success for u1", ds)
	}
	msgs := srv.messages()
	if len(msgs) != 1 {
		t.Fatalf("messages = %d, want 1", len(msgs))
	}
	got := msgs[0]
	if got.from != "interlock@example.com" || got.rcpt != "ann@example.com" {
		t.Errorf("envelope from %q to %q", got.from, got.rcpt)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(got.data)))
	if err != nil {
		t.Fatalf("ReadMessage: %v\n%s", err, got.data)
	}
	h := msg.Header
	from, err := h.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Address != "interlock@example.com" || from[0].Name != "Interlock" {
		t.Errorf("From = %v, %v", from, err)
	}
	to, err := h.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Address != "ann@example.com" || to[0].Name != "Ann Müller" {
		t.Errorf("To = %v, %v", to, err)
	}
	var dec mime.WordDecoder
	subject, err := dec.DecodeHeader(h.Get("Subject"))
	if err != nil || subject != m.Title {
		t.Errorf("Subject = %q (%q), %v", subject, h.Get("Subject"), err)
	}
	if !strings.HasPrefix(h.Get("Subject"), "=?utf-8?q?") {
		t.Errorf("raw Subject %q not Q-encoded", h.Get("Subject"))
	}
	if date, err := h.Date(); err != nil || !date.Equal(testNow) {
		t.Errorf("Date = %v, %v", date, err)
	}
	if id := h.Get("Message-ID"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.com>") {
		t.Errorf("Message-ID = %q", id)
	}
	for k, want := range map[string]string{
		"MIME-Version":              "1.0",
		"Content-Type":              "text/plain; charset=utf-8",
		"Content-Transfer-Encoding": "quoted-printable",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "text/plain" || params["charset"] != "utf-8" {
		t.Errorf("media type %q %v %v", mt, params, err)
	}
	raw, _ := io.ReadAll(msg.Body)
	// (ReadDotBytes has turned CRLF into LF.)
	for line := range strings.SplitSeq(string(raw), "\n") {
		if len(line) > 76 {
			t.Errorf("encoded line longer than 76: %q", line)
		}
	}
	body, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(string(raw))))
	if err != nil {
		t.Fatalf("quoted-printable: %v", err)
	}
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	if !strings.Contains(text, m.Text) {
		t.Errorf("body lacks the text:\n%s", text)
	}
	if !strings.Contains(text, "Open in interlock: "+m.URL+"\n") {
		t.Errorf("body lacks the link:\n%s", text)
	}
	// The link must survive as one clickable line once decoded.
	sc := bufio.NewScanner(strings.NewReader(text))
	found := false
	for sc.Scan() {
		if strings.HasSuffix(sc.Text(), m.URL) {
			found = true
		}
	}
	if !found {
		t.Errorf("no line ends with the URL")
	}
}

func TestSMTPStartTLSAuth(t *testing.T) {
	cert, pool := testCert(t)
	srv := newSMTPServer(t, func(s *smtpServer) {
		s.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.user, s.pass = "mailer", "hunter2"
	})
	ch := SMTP{
		Addr: srv.ln.Addr().String(), From: "interlock@example.com",
		Username: "mailer", Password: "hunter2",
		TLSConfig: &tls.Config{RootCAs: pool},
		Now:       fixedNow,
	}
	if err := ch.Send(context.Background(), Recipient{Email: "bob@example.com"}, testMessage()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs := srv.messages()
	if len(msgs) != 1 || !msgs[0].tls || msgs[0].auth != "mailer" || msgs[0].rcpt != "bob@example.com" {
		t.Fatalf("messages = %+v, want one over TLS, authenticated", msgs)
	}
}

func TestSMTPFailures(t *testing.T) {
	cert, pool := testCert(t)
	tests := []struct {
		name      string
		configure func(*smtpServer)
		ch        func(addr string) SMTP
		to        Recipient
		want      error // ErrPermanent, ErrNoAddress, or nil for a transient failure
	}{
		{
			"no email", nil,
			func(addr string) SMTP { return SMTP{Addr: addr, From: "i@example.com", TLS: NoTLS} },
			Recipient{UserID: "u"}, ErrNoAddress,
		},
		{
			"starttls required, not offered", nil,
			func(addr string) SMTP { return SMTP{Addr: addr, From: "i@example.com"} },
			Recipient{Email: "a@example.com"}, ErrPermanent,
		},
		{
			"untrusted certificate", func(s *smtpServer) { s.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}} },
			func(addr string) SMTP { return SMTP{Addr: addr, From: "i@example.com"} },
			Recipient{Email: "a@example.com"}, nil,
		},
		{
			"bad password", func(s *smtpServer) {
				s.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
				s.user, s.pass = "mailer", "right"
			},
			func(addr string) SMTP {
				return SMTP{Addr: addr, From: "i@example.com", Username: "mailer", Password: "wrong", TLSConfig: &tls.Config{RootCAs: pool}}
			},
			Recipient{Email: "a@example.com"}, ErrPermanent,
		},
		{
			"recipient rejected", func(s *smtpServer) { s.rcptReply = "550 5.1.1 no such user" },
			func(addr string) SMTP { return SMTP{Addr: addr, From: "i@example.com", TLS: NoTLS} },
			Recipient{Email: "a@example.com"}, ErrPermanent,
		},
		{
			"recipient deferred", func(s *smtpServer) { s.rcptReply = "451 4.3.0 try later" },
			func(addr string) SMTP { return SMTP{Addr: addr, From: "i@example.com", TLS: NoTLS} },
			Recipient{Email: "a@example.com"}, nil,
		},
		{
			"invalid recipient address", nil,
			func(addr string) SMTP { return SMTP{Addr: addr, From: "i@example.com", TLS: NoTLS} },
			Recipient{Email: "a@example.com>\r\nRCPT TO:<b@example.com"}, ErrPermanent,
		},
		{
			"bad config", nil,
			func(addr string) SMTP { return SMTP{Addr: addr, From: "not an address", TLS: NoTLS} },
			Recipient{Email: "a@example.com"}, ErrPermanent,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newSMTPServer(t, tt.configure)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := tt.ch(srv.ln.Addr().String()).Send(ctx, tt.to, testMessage())
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Send = %v, want %v", err, tt.want)
			}
			if tt.want == nil && (errors.Is(err, ErrPermanent) || errors.Is(err, ErrNoAddress)) {
				t.Fatalf("Send = %v, want a transient failure", err)
			}
			if strings.Contains(err.Error(), "wrong") {
				t.Errorf("error shows the password: %v", err)
			}
			if n := len(srv.messages()); n != 0 {
				t.Errorf("messages = %d, want 0", n)
			}
		})
	}
}
