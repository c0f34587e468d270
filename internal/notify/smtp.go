package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
	"unicode"
)

// TLSMode is how SMTP protects the connection.
type TLSMode string

// TLS modes of SMTP.
const (
	// StartTLS upgrades the connection with STARTTLS and fails when the
	// server does not offer it (the default).
	StartTLS TLSMode = "starttls"
	// ImplicitTLS speaks TLS from the first byte (SMTPS, port 465).
	ImplicitTLS TLSMode = "tls"
	// NoTLS sends in the clear: for a relay on the same host only. net/smtp
	// then refuses AUTH unless the server is localhost.
	NoTLS TLSMode = "none"
)

// SMTP emails each notification: one plain-text message per recipient
// (quoted-printable UTF-8) with the text and the link. Recipients without
// an email address are skipped. A 5xx reply is a permanent failure.
type SMTP struct {
	// Addr is the server's host:port.
	Addr string
	// From is the sender, e.g. "interlock <interlock@example.com>".
	From string
	// Username and Password authenticate (AUTH PLAIN) when Username is set.
	Username string
	Password string
	// TLS is the TLS mode; empty means StartTLS.
	TLS TLSMode
	// TLSConfig; nil means the system roots, with ServerName Addr's host.
	TLSConfig *tls.Config
	// HelloName is the name given in EHLO; empty means "localhost".
	HelloName string
	// Now is the clock (the Date header); nil means the Dispatcher's
	// (time.Now outside one).
	Now func() time.Time
}

// Name implements Channel.
func (s SMTP) Name() string { return "email" }

// String shows the server and sender, never the password.
func (s SMTP) String() string { return "smtp(" + s.Addr + ")" }

// GoString is String: keeps the password out of %#v.
func (s SMTP) GoString() string { return s.String() }

// LogValue implements slog.LogValuer.
func (s SMTP) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Validate checks the configuration.
func (s SMTP) Validate() error {
	if _, _, err := net.SplitHostPort(s.Addr); err != nil {
		return fmt.Errorf("smtp: addr: %w", err)
	}
	if _, err := mail.ParseAddress(s.From); err != nil {
		return fmt.Errorf("smtp: from: %w", err)
	}
	switch s.TLS {
	case "", StartTLS, ImplicitTLS, NoTLS:
	default:
		return fmt.Errorf("smtp: unknown tls mode %q", s.TLS)
	}
	return nil
}

func (s SMTP) withDefaults(_ *http.Client, now func() time.Time) Channel {
	if s.Now == nil {
		s.Now = now
	}
	return s
}

// Send implements Channel.
func (s SMTP) Send(ctx context.Context, to Recipient, m Message) error {
	if to.Email == "" {
		return ErrNoAddress
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	from, _ := mail.ParseAddress(s.From)
	rcpt, err := mail.ParseAddress(to.Email)
	if err != nil {
		return fmt.Errorf("smtp: recipient address: %w: %w", ErrPermanent, err)
	}
	rcpt.Name = clean(to.Name)
	now := s.Now
	if now == nil {
		now = time.Now
	}
	msg := compose(from, rcpt, m, now())

	host, _, _ := net.SplitHostPort(s.Addr)
	mode := s.TLS
	if mode == "" {
		mode = StartTLS
	}
	cfg := s.TLSConfig.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if mode == ImplicitTLS {
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("smtp: tls: %w", err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return smtpErr("greeting", err)
	}
	defer c.Close()
	hello := s.HelloName
	if hello == "" {
		hello = "localhost"
	}
	if err := c.Hello(hello); err != nil {
		return smtpErr("hello", err)
	}
	if mode == StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return fmt.Errorf("smtp: %w: server does not offer STARTTLS", ErrPermanent)
		}
		if err := c.StartTLS(cfg); err != nil {
			return smtpErr("starttls", err)
		}
	}
	if s.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return fmt.Errorf("smtp: %w: server does not offer AUTH", ErrPermanent)
		}
		if err := c.Auth(smtp.PlainAuth("", s.Username, s.Password, host)); err != nil {
			var te *textproto.Error
			if !errors.As(err, &te) || te.Code >= 500 {
				// Refused by net/smtp (no TLS) or bad credentials:
				// retrying will not help.
				return fmt.Errorf("smtp: auth: %w: %w", ErrPermanent, err)
			}
			return smtpErr("auth", err)
		}
	}
	if err := c.Mail(from.Address); err != nil {
		return smtpErr("mail from", err)
	}
	if err := c.Rcpt(rcpt.Address); err != nil {
		return smtpErr("rcpt to", err)
	}
	w, err := c.Data()
	if err != nil {
		return smtpErr("data", err)
	}
	if _, err := w.Write(msg); err != nil {
		return smtpErr("data", err)
	}
	if err := w.Close(); err != nil {
		return smtpErr("data", err)
	}
	c.Quit() // the message was accepted at the end of DATA
	return nil
}

// smtpErr wraps err, permanent when the server replied 5xx.
func smtpErr(stage string, err error) error {
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 {
		return fmt.Errorf("smtp: %s: %w: %w", stage, ErrPermanent, err)
	}
	return fmt.Errorf("smtp: %s: %w", stage, err)
}

// compose builds the RFC 5322 message.
func compose(from, to *mail.Address, m Message, now time.Time) []byte {
	domain := "interlock.invalid"
	if _, d, ok := strings.Cut(from.Address, "@"); ok && d != "" {
		domain = d
	}
	subject := clean(m.Title)
	if subject == "" {
		subject = "Approval needed"
	}
	var b bytes.Buffer
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	hdr("From", from.String())
	hdr("To", to.String())
	hdr("Subject", mime.QEncoding.Encode("utf-8", subject))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", "<"+rand.Text()+"@"+domain+">")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	hdr("Auto-Submitted", "auto-generated")
	b.WriteString("\r\n")

	qp := quotedprintable.NewWriter(&b)
	text := m.Text
	if text == "" {
		text = m.Title
	}
	qp.Write([]byte(strings.TrimRight(text, "\r\n") + "\n\n"))
	if m.URL != "" {
		qp.Write([]byte("Open in interlock: " + m.URL + "\n"))
	}
	if !m.Expires.IsZero() {
		qp.Write([]byte("Expires: " + m.Expires.Format(time.RFC1123Z) + "\n"))
	}
	qp.Close()
	return b.Bytes()
}

// clean makes s one header-safe line: control characters become spaces,
// and it is cut to 200 characters.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}
