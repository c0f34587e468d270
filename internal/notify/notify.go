package notify

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Message is one approval notification.
type Message struct {
	// Event is the webhook event type (Interlock-Event and "type");
	// empty means EventApproval.
	Event      string
	ApprovalID string
	// Title is short, e.g. "Approval needed: acme.place_order" (the email
	// subject, the push notification's title).
	Title string
	// Text is the binding message a human judges in a second.
	Text string
	// URL links straight to the approval's detail page in the console.
	URL string
	// Expires is when the approval lapses; zero means unknown. Nothing is
	// sent or retried after it, and push messages live no longer.
	Expires time.Time
	// Data holds extra JSON fields for webhooks (agent, tool, risk score,
	// expires_at, ...). It must not be changed once handed to Notify.
	Data map[string]any
	// DeliveryID identifies one delivery (one message, recipient, channel
	// and address), the same on every attempt so that receivers can drop
	// duplicates. The Dispatcher sets it; channels invent one when empty.
	DeliveryID string
}

// Recipient is one approver and the addresses they can be reached at.
type Recipient struct {
	UserID string
	Email  string
	Name   string
	Push   []PushSubscription
}

// PushSubscription is a browser's push subscription (PushSubscription.toJSON
// in the Push API): the endpoint and the keys, base64url as browsers give
// them. The endpoint is a capability URL and the keys are secrets: String and
// LogValue show only the endpoint's origin.
type PushSubscription struct {
	Endpoint string
	P256dh   string
	Auth     string
}

func (s PushSubscription) String() string { return "push(" + origin(s.Endpoint) + ")" }

// GoString is String: keeps the keys out of %#v.
func (s PushSubscription) GoString() string { return s.String() }

// LogValue implements slog.LogValuer.
func (s PushSubscription) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Channel delivers a message to one recipient. Send makes one attempt (the
// Dispatcher retries); it returns an error wrapping ErrPermanent when a retry
// cannot help and ErrNoAddress when the recipient cannot be reached on this
// channel at all. Errors must not carry secrets.
type Channel interface {
	Name() string
	Send(ctx context.Context, to Recipient, m Message) error
}

var (
	// ErrPermanent is wrapped by errors that a retry cannot cure.
	ErrPermanent = errors.New("permanent failure")
	// ErrNoAddress means the recipient has no address on the channel (no
	// email, no push subscription); nothing was attempted.
	ErrNoAddress = errors.New("recipient has no address on this channel")
	// ErrSubscriptionGone means the push service no longer knows the
	// subscription (404 or 410): the caller should delete it. Errors
	// wrapping it wrap ErrPermanent too.
	ErrSubscriptionGone = errors.New("push subscription gone")
)

// withDefaults is implemented by channels that take the Dispatcher's HTTP
// client and clock when they have none of their own; it returns a copy.
type withDefaults interface {
	withDefaults(c *http.Client, now func() time.Time) Channel
}

// splitter is implemented by channels that reach one recipient at several
// addresses (push subscriptions); each address is delivered and retried on
// its own, so that one failing address does not resend to the others.
type splitter interface {
	split(to Recipient) []target
}

// target is one address of a recipient: the recipient narrowed to it, and
// its name for Delivery.Endpoint.
type target struct {
	to       Recipient
	endpoint string
}

// Delivery is the outcome of one attempt to deliver a message.
type Delivery struct {
	// ID is the delivery's id (Message.DeliveryID), the same on every
	// attempt.
	ID         string
	ApprovalID string
	Channel    string
	// Recipient is the recipient's UserID (their email when it is empty).
	Recipient string
	// Endpoint is the push subscription's endpoint for web push (a
	// capability URL: keep it out of logs), empty otherwise.
	Endpoint string
	Attempt  int
	OK       bool
	// Permanent is set when the failure cannot be cured by a retry.
	Permanent bool
	// Gone is set when the push service reported the subscription gone: the
	// caller should delete it.
	Gone bool
	// Final is set on the last attempt of the delivery, whatever the
	// outcome.
	Final    bool
	Err      string
	At       time.Time
	Duration time.Duration
}

// Defaults of Options.
const (
	DefaultMaxAttempts = 5
	DefaultMaxInFlight = 64
	DefaultTimeout     = 30 * time.Second
	DefaultHTTPTimeout = 10 * time.Second
)

// maxRetryAfter caps how long a Retry-After header can delay a retry.
const maxRetryAfter = time.Minute

// Options configure a Dispatcher. Zero values mean the defaults.
type Options struct {
	Channels []Channel
	// MaxAttempts is the number of attempts per delivery (DefaultMaxAttempts).
	MaxAttempts int
	// Backoff is the wait after the given failed attempt (1-based); nil
	// means DefaultBackoff. A push service's Retry-After can lengthen it.
	Backoff func(attempt int) time.Duration
	// Timeout bounds one attempt (DefaultTimeout).
	Timeout time.Duration
	// MaxInFlight bounds the attempts running at once (DefaultMaxInFlight).
	MaxInFlight int
	// Record is called with the outcome of every attempt, from many
	// goroutines at once; nil means none.
	Record func(Delivery)
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// HTTPClient is given to HTTP channels that have no client of their own;
	// nil means a client with a DefaultHTTPTimeout timeout that does not
	// follow redirects.
	HTTPClient *http.Client
}

// DefaultBackoff waits about 500ms after the first failed attempt, doubling
// each time up to 30s, with the upper half jittered.
func DefaultBackoff(attempt int) time.Duration {
	const base, ceiling = 500 * time.Millisecond, 30 * time.Second
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return d/2 + mrand.N(d/2+1)
}

// NewHTTPClient returns the default HTTP client of channels: a timeout of
// DefaultHTTPTimeout, and redirects not followed (a 3xx is a failure).
func NewHTTPClient() *http.Client {
	return &http.Client{
		Timeout: DefaultHTTPTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Dispatcher sends messages on its channels in the background. It is safe
// for concurrent use.
type Dispatcher struct {
	channels    []Channel
	maxAttempts int
	backoff     func(int) time.Duration
	timeout     time.Duration
	sem         chan struct{}
	record      func(Delivery)
	log         *slog.Logger
	now         func() time.Time

	ctx    context.Context // cancelled when Close gives up waiting
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// New returns a Dispatcher; Close it when done.
func New(o Options) *Dispatcher {
	d := &Dispatcher{
		maxAttempts: o.MaxAttempts,
		backoff:     o.Backoff,
		timeout:     o.Timeout,
		record:      o.Record,
		log:         o.Logger,
		now:         o.Now,
	}
	if d.maxAttempts <= 0 {
		d.maxAttempts = DefaultMaxAttempts
	}
	if d.backoff == nil {
		d.backoff = DefaultBackoff
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	n := o.MaxInFlight
	if n <= 0 {
		n = DefaultMaxInFlight
	}
	d.sem = make(chan struct{}, n)
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.now == nil {
		d.now = time.Now
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = NewHTTPClient()
	}
	for _, ch := range o.Channels {
		if wd, ok := ch.(withDefaults); ok {
			ch = wd.withDefaults(hc, d.now)
		}
		d.channels = append(d.channels, ch)
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// Notify sends m to every recipient on every channel, concurrently and in
// the background; it returns at once. Messages given after Close are
// dropped.
func (d *Dispatcher) Notify(m Message, to []Recipient) {
	m.Data = maps.Clone(m.Data)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.log.Warn("notify: dispatcher closed, notification dropped", "approval_id", m.ApprovalID)
		return
	}
	for _, ch := range d.channels {
		for _, r := range to {
			targets := []target{{to: r}}
			if s, ok := ch.(splitter); ok {
				targets = s.split(r)
			}
			for _, t := range targets {
				mm := m
				mm.DeliveryID = rand.Text()
				d.wg.Add(1)
				go func() {
					defer d.wg.Done()
					d.deliver(ch, t, mm)
				}()
			}
		}
	}
}

// Close stops taking messages and waits for deliveries in flight, retries
// included, until ctx is done; then it abandons them and returns ctx's error.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		d.cancel()
		return nil
	case <-ctx.Done():
		d.cancel()
		<-done
		return fmt.Errorf("notify: close: deliveries abandoned: %w", ctx.Err())
	}
}

// deliver makes the attempts of one delivery.
func (d *Dispatcher) deliver(ch Channel, t target, m Message) {
	who := t.to.UserID
	if who == "" {
		who = t.to.Email
	}
	log := d.log.With("approval_id", m.ApprovalID, "channel", ch.Name(), "recipient", who, "delivery_id", m.DeliveryID)
	if t.endpoint != "" {
		log = log.With("endpoint", origin(t.endpoint))
	}
	for attempt := 1; ; attempt++ {
		if !m.Expires.IsZero() && !d.now().Before(m.Expires) {
			log.Info("notify: approval expired, delivery stopped", "attempts", attempt-1)
			return
		}
		select {
		case d.sem <- struct{}{}:
		case <-d.ctx.Done():
			return
		}
		start := d.now()
		actx, cancel := context.WithTimeout(d.ctx, d.timeout)
		err := ch.Send(actx, t.to, m)
		cancel()
		<-d.sem
		if errors.Is(err, ErrNoAddress) {
			log.Debug("notify: recipient not reachable on channel")
			return
		}
		rec := Delivery{
			ID:         m.DeliveryID,
			ApprovalID: m.ApprovalID,
			Channel:    ch.Name(),
			Recipient:  who,
			Endpoint:   t.endpoint,
			Attempt:    attempt,
			OK:         err == nil,
			At:         start,
			Duration:   d.now().Sub(start),
		}
		if err != nil {
			rec.Err = err.Error()
			rec.Permanent = errors.Is(err, ErrPermanent)
			rec.Gone = errors.Is(err, ErrSubscriptionGone)
		}
		rec.Final = err == nil || rec.Permanent || attempt >= d.maxAttempts || d.ctx.Err() != nil
		if d.record != nil {
			d.record(rec)
		}
		switch {
		case err == nil:
			log.Debug("notify: delivered", "attempt", attempt)
			return
		case rec.Gone:
			log.Info("notify: push subscription gone", "attempt", attempt)
			return
		case rec.Final:
			log.Warn("notify: delivery failed", "attempt", attempt, "permanent", rec.Permanent, "err", err)
			return
		}
		log.Debug("notify: attempt failed, will retry", "attempt", attempt, "err", err)
		wait := d.backoff(attempt)
		var se *StatusError
		if errors.As(err, &se) && se.RetryAfter > wait {
			wait = min(se.RetryAfter, maxRetryAfter)
		}
		if wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-d.ctx.Done():
				timer.Stop()
				return
			}
		}
	}
}
