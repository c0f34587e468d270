package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// StatusError is an HTTP response other than 2xx.
type StatusError struct {
	StatusCode int
	// RetryAfter is the response's Retry-After in seconds, if any.
	RetryAfter time.Duration
	// Body is the start of the response body, for diagnosis.
	Body string
}

func (e *StatusError) Error() string {
	s := "http status " + strconv.Itoa(e.StatusCode)
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// Permanent reports whether a retry cannot help: a 3xx (redirects are not
// followed) or a 4xx other than 408 Request Timeout and 429 Too Many
// Requests.
func (e *StatusError) Permanent() bool {
	c := e.StatusCode
	return (c >= 300 && c < 500) && c != http.StatusRequestTimeout && c != http.StatusTooManyRequests
}

// Is makes a permanent StatusError match ErrPermanent.
func (e *StatusError) Is(target error) bool { return target == ErrPermanent && e.Permanent() }

const userAgent = "interlock-notify/1"

// post sends body to u with the given headers and checks the status.
// Errors name only the URL's origin: webhook URLs and push endpoints can be
// credentials.
func post(ctx context.Context, c *http.Client, u string, header http.Header, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("request to %s: %w: %w", origin(u), ErrPermanent, redact(err))
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("post to %s: %w", origin(u), redact(err))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	se := &StatusError{StatusCode: resp.StatusCode, Body: printable(snippet, 200)}
	if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s > 0 {
		se.RetryAfter = time.Duration(s) * time.Second
	}
	return fmt.Errorf("post to %s: %w", origin(u), se)
}

// redact strips the URL out of a *url.Error, keeping what it wraps.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, origin(ue.URL), ue.Err)
	}
	return err
}

// origin is u's scheme and host, or "<invalid url>".
func origin(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return "<invalid url>"
	}
	return p.Scheme + "://" + p.Host
}

// printable keeps at most n bytes of b, one line, printable characters only.
func printable(b []byte, n int) string {
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}

// checkHTTPURL checks that u is an absolute http(s) URL (https only when
// httpsOnly), without naming it in the error.
func checkHTTPURL(u string, httpsOnly bool) error {
	p, err := url.Parse(u)
	if err != nil {
		return errors.New("malformed url")
	}
	switch {
	case p.Host == "":
		return errors.New("url has no host")
	case p.Scheme == "https":
	case p.Scheme == "http" && !httpsOnly:
	default:
		if httpsOnly {
			return fmt.Errorf("url scheme %q, want https", p.Scheme)
		}
		return fmt.Errorf("url scheme %q, want http or https", p.Scheme)
	}
	return nil
}
