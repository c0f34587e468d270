package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Slack posts each notification to a Slack-compatible incoming webhook
// (Slack, Mattermost, Rocket.Chat...) as {"text": "<Text> <URL|Open in
// interlock>"}, with &, < and > escaped as Slack requires. The URL is a
// credential: it is never logged.
//
// An incoming webhook posts to a channel, not to a person, so every
// recipient of a message gets a post of their own; configure one Slack
// channel per approver group, or use it with a single recipient.
type Slack struct {
	URL string
	// LinkText is the link's label; empty means "Open in interlock".
	LinkText string
	// Client; nil means the Dispatcher's (NewHTTPClient outside one).
	Client *http.Client
}

// Name implements Channel.
func (s Slack) Name() string { return "slack" }

// String shows the URL's origin only.
func (s Slack) String() string { return "slack(" + origin(s.URL) + ")" }

// GoString is String: keeps the URL out of %#v.
func (s Slack) GoString() string { return s.String() }

// LogValue implements slog.LogValuer.
func (s Slack) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Validate checks the configuration.
func (s Slack) Validate() error {
	if err := checkHTTPURL(s.URL, false); err != nil {
		return fmt.Errorf("slack: %w", err)
	}
	return nil
}

func (s Slack) withDefaults(c *http.Client, _ func() time.Time) Channel {
	if s.Client == nil {
		s.Client = c
	}
	return s
}

// Send implements Channel.
func (s Slack) Send(ctx context.Context, _ Recipient, m Message) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	label := s.LinkText
	if label == "" {
		label = "Open in interlock"
	}
	body, err := json.Marshal(map[string]string{"text": slackText(m, label)})
	if err != nil {
		return fmt.Errorf("slack: encode: %w: %w", ErrPermanent, err)
	}
	c := s.Client
	if c == nil {
		c = NewHTTPClient()
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	if err := post(ctx, c, s.URL, h, body); err != nil {
		return fmt.Errorf("slack: %w", err)
	}
	return nil
}

// slackText is the message in Slack's mrkdwn: the text, then the link.
func slackText(m Message, label string) string {
	text := m.Text
	if text == "" {
		text = m.Title
	}
	text = slackEscape(text)
	if m.URL == "" {
		return text
	}
	// Inside <...>, "|" separates the URL from its label and ">" ends it.
	u := strings.NewReplacer("|", "%7C", " ", "%20").Replace(m.URL)
	return text + " <" + slackEscape(u) + "|" + slackEscape(strings.ReplaceAll(label, "|", "")) + ">"
}

// slackEscape escapes the three characters Slack gives meaning to.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
