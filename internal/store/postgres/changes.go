package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

var _ store.Changes = (*Store)(nil)

// changes is the store's LISTEN side: one connection that listens on every
// subscribed channel and hands notifications to the subscribers.
type changes struct {
	mu      sync.Mutex
	subs    map[string]map[int]func(string) // channel -> subscribers
	next    int
	running bool
	restart chan struct{} // a new channel to LISTEN on
	stop    context.CancelFunc
	done    chan struct{}

	suffixOnce sync.Once
	suffix     string
	suffixErr  error
}

// channel names topic's NOTIFY channel for this store's schema, so that
// stores in different schemas of one database do not hear each other:
// interlock_<topic>_<first 8 hex digits of md5(current_schema())>, which
// SQL can spell too (bump notifies principals in its transaction).
func (s *Store) channel(ctx context.Context, topic string) (string, error) {
	s.changes.suffixOnce.Do(func() {
		s.changes.suffixErr = s.pool.QueryRow(ctx, `SELECT left(md5(current_schema()), 8)`).Scan(&s.changes.suffix)
	})
	if s.changes.suffixErr != nil {
		err := s.changes.suffixErr
		s.changes.suffixOnce = sync.Once{} // try again next time
		return "", fmt.Errorf("postgres: current schema: %w", err)
	}
	return "interlock_" + topic + "_" + s.changes.suffix, nil
}

// Notify implements store.Changes with pg_notify.
func (s *Store) Notify(ctx context.Context, topic, id string) error {
	ch, err := s.channel(ctx, topic)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, ch, id); err != nil {
		return fmt.Errorf("postgres: notify %s: %w", topic, err)
	}
	return nil
}

// Subscribe implements store.Changes with LISTEN on a connection of its own.
func (s *Store) Subscribe(ctx context.Context, topic string, fn func(id string)) {
	var ch string
	for {
		var err error
		if ch, err = s.channel(ctx, topic); err == nil {
			break
		}
		s.log.Warn("postgres: cannot subscribe to changes yet", "topic", topic, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	c := &s.changes
	c.mu.Lock()
	if c.subs == nil {
		c.subs = map[string]map[int]func(string){}
		c.restart = make(chan struct{}, 1)
	}
	_, known := c.subs[ch]
	if !known {
		c.subs[ch] = map[int]func(string){}
	}
	c.next++
	id := c.next
	c.subs[ch][id] = fn
	if !c.running {
		c.running = true
		lctx, stop := context.WithCancel(context.Background())
		c.stop, c.done = stop, make(chan struct{})
		go s.listen(lctx, c.done)
	} else if !known {
		select {
		case c.restart <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	go func() {
		<-ctx.Done()
		c.mu.Lock()
		delete(c.subs[ch], id)
		c.mu.Unlock()
	}()
}

// listen holds one connection with LISTEN on every subscribed channel and
// dispatches notifications, reconnecting with backoff.
func (s *Store) listen(ctx context.Context, done chan struct{}) {
	defer close(done)
	c := &s.changes
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			continue // a new channel to listen on
		}
		s.log.Warn("postgres: listening for changes failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		// Something may have been missed while not listening.
		c.mu.Lock()
		var all []func(string)
		for _, m := range c.subs {
			for _, fn := range m {
				all = append(all, fn)
			}
		}
		c.mu.Unlock()
		for _, fn := range all {
			fn("")
		}
	}
}

// listenOnce listens until the connection fails or a new channel must be
// added (nil error).
func (s *Store) listenOnce(ctx context.Context) error {
	c := &s.changes
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	c.mu.Lock()
	var chans []string
	for ch := range c.subs {
		chans = append(chans, ch)
	}
	c.mu.Unlock()
	for _, ch := range chans {
		if _, err := conn.Exec(ctx, `LISTEN "`+ch+`"`); err != nil {
			conn.Conn().Close(context.Background()) // do not return a listening connection to the pool
			return err
		}
	}
	defer func() {
		if _, err := conn.Exec(context.Background(), `UNLISTEN *`); err != nil {
			conn.Conn().Close(context.Background())
		}
	}()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.restart:
			cancel()
		case <-wctx.Done():
		}
	}()
	for {
		n, err := conn.Conn().WaitForNotification(wctx)
		if err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				return nil // restart with the new channel
			}
			return err
		}
		c.mu.Lock()
		var fns []func(string)
		for _, fn := range c.subs[n.Channel] {
			fns = append(fns, fn)
		}
		c.mu.Unlock()
		for _, fn := range fns {
			fn(n.Payload)
		}
	}
}

// closeChanges stops listening.
func (s *Store) closeChanges() {
	c := &s.changes
	c.mu.Lock()
	stop, done := c.stop, c.done
	c.running = false
	c.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}
