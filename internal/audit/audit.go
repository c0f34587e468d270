// Package audit is the tamper-evident audit log: append with group commit,
// hash chain, signed checkpoints, verify, export; it must not drop events.
//
// Every event is one record of a hash chain kept in the store: it carries a
// sequence number (contiguous from 1), the hash of the event before it and
// its own hash, a SHA-256 over an RFC 8785 canonical JSON encoding of the
// whole record (see docs/audit.md for the exact bytes). Changing, deleting,
// inserting or reordering events breaks the chain, and Verify names the
// first event where it breaks. Periodically the head of the chain is signed
// with an Ed25519 key (a checkpoint), so that an event covered by a
// checkpoint cannot be rewritten even by someone who recomputes the hashes
// after it.
//
// Log.Append returns only once its event is committed, and never reports
// success for an event that was not: the gate relies on that to record a
// decision before it acts on it (fail closed). Concurrent appends are
// group-committed, leader/follower style: the appender that finds nobody
// committing commits the queue itself, in single store transactions, while
// later appends queue behind it and join its next batch; once its own
// events are committed it hands the rest to a background committer (which
// also commits deferred events and signs checkpoints). Throughput grows
// with the number of callers, each caller still waits for its own record,
// and at low load an append costs no hand-off between goroutines.
//
// The package must not drop or reorder events, must not hold decisions (the
// gate decides), and reads the clock only through Options.Now.
package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interlock-dev/interlock/internal/store"
)

// Defaults of Options.
const (
	DefaultMaxBatch           = 512
	DefaultCheckpointEvery    = 10000
	DefaultCheckpointInterval = time.Minute
	DefaultLinger             = 5 * time.Millisecond
)

// ErrClosed is returned by appends after Close.
var ErrClosed = errors.New("audit: log is closed")

// Options configure New. Store is required; zero values of the rest mean
// their defaults.
type Options struct {
	Store store.Store
	// Now stamps events that come without a time, and checkpoints.
	// nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger // nil means slog.Default()
	// MaxBatch is the most events committed in one store transaction
	// (DefaultMaxBatch). A single AppendBatch larger than this is committed
	// on its own, whole.
	MaxBatch int
	// A checkpoint is signed after CheckpointEvery events
	// (DefaultCheckpointEvery), and after CheckpointInterval
	// (DefaultCheckpointInterval) if any event came since the last one.
	// A negative value turns that trigger off.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// Linger is the longest a deferred event (Defer) waits for a commit to
	// ride along with (DefaultLinger); it is committed at the latest then.
	Linger time.Duration
}

// Event is what callers append. Data must encode (encoding/json) as a JSON
// object; nil is the empty object.
type Event struct {
	Type    string    // "decision", "forwarded", "result", ...; required
	CallID  string    // groups the events of one call
	AgentID string    // the agent the event is about
	Time    time.Time // zero: Options.Now(); kept to the microsecond
	Data    any
	// Credential, when set, is a credential record the store inserts in
	// the same transaction as the event (store.AuditEvent.Credential): the
	// gate records an allowed call's credential with its decision. It is
	// not part of the hashed event (Data should name it). With a
	// StatusIndex of -1 the store picks a free index and, once Append
	// returns without error, the record holds it. The record must not be
	// touched while the append is under way.
	Credential *store.Credential
}

// Log appends to the audit chain. It is safe for concurrent use.
type Log struct {
	st         store.Store
	now        func() time.Time
	log        *slog.Logger
	maxBatch   int
	cpEvery    int
	cpInterval time.Duration

	key   ed25519.PrivateKey
	pub   ed25519.PublicKey
	keyID string

	// preparing counts appends between their start and their queueing
	// (encoding their data): the committer lets them finish and join the
	// next batch rather than commit a small one.
	preparing atomic.Int64

	linger time.Duration

	mu     sync.Mutex
	queue  []*request // waiting for the committer, in arrival order
	closed bool
	armed  bool // a linger timer will wake the committer
	// committing is true while one goroutine (the leader) commits batches;
	// whoever finds it false when it has work takes the role.
	committing bool
	wake       chan struct{} // capacity 1: "the queue is not empty"
	done       chan struct{} // closed when the committer has exited

	cpMu   sync.Mutex
	lastCP store.Checkpoint // the newest checkpoint this log knows of (Seq 0: none)

	// Owned by whichever goroutine holds the committer role (committing).
	sinceCP int // events committed since the last checkpoint
	head    store.AuditHead
	scratch []byte
	batch   []*request
}

// request is one AppendBatch waiting for its commit.
type request struct {
	evs   []store.AuditEvent // prepared; the committer fills Seq, PrevHash, Hash
	first int64
	err   error
	done  chan struct{}
}

// New returns a Log appending to opts.Store, with its checkpoint key loaded
// from the store's meta (created on first use). Close it to flush and stop
// it.
func New(ctx context.Context, opts Options) (*Log, error) {
	if opts.Store == nil {
		return nil, errors.New("audit: Options.Store is nil")
	}
	l := &Log{
		st:         opts.Store,
		now:        opts.Now,
		log:        opts.Logger,
		maxBatch:   opts.MaxBatch,
		cpEvery:    opts.CheckpointEvery,
		cpInterval: opts.CheckpointInterval,
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.maxBatch <= 0 {
		l.maxBatch = DefaultMaxBatch
	}
	if l.cpEvery == 0 {
		l.cpEvery = DefaultCheckpointEvery
	}
	if l.cpInterval == 0 {
		l.cpInterval = DefaultCheckpointInterval
	}
	l.linger = opts.Linger
	if l.linger <= 0 {
		l.linger = DefaultLinger
	}
	key, err := loadOrCreateKey(ctx, l.st)
	if err != nil {
		return nil, err
	}
	l.key, l.pub, l.keyID = key, key.Public().(ed25519.PublicKey), KeyID(key.Public().(ed25519.PublicKey))
	cps, err := l.st.ListCheckpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	if len(cps) > 0 {
		l.lastCP = cps[len(cps)-1]
	}
	if l.head, err = l.st.AuditHead(ctx); err != nil {
		return nil, fmt.Errorf("audit: read chain head: %w", err)
	}
	l.sinceCP = int(l.head.Seq - l.lastCP.Seq)
	go l.run()
	return l, nil
}

// PublicKey returns the key checkpoints are signed with.
func (l *Log) PublicKey() ed25519.PublicKey { return l.pub }

// KeyID returns the id of PublicKey, as checkpoints name it.
func (l *Log) KeyID() string { return l.keyID }

// Append appends ev and returns its sequence number once it is committed.
// An error means the event may not be in the log: callers must treat the
// action it records as not done (fail closed). If ctx ends while the event
// waits for its commit, Append returns ctx's error; the event may still be
// committed.
func (l *Log) Append(ctx context.Context, ev Event) (int64, error) {
	return l.AppendBatch(ctx, []Event{ev})
}

// AppendBatch appends evs atomically, with contiguous sequence numbers, and
// returns the first once they are committed. It is Append for several
// events; an empty batch returns 0 and no error.
func (l *Log) AppendBatch(ctx context.Context, evs []Event) (int64, error) {
	if len(evs) == 0 {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("audit: append: %w", err)
	}
	l.preparing.Add(1)
	r := &request{evs: make([]store.AuditEvent, len(evs)), done: make(chan struct{})}
	for i, ev := range evs {
		e, err := prepare(ev, l.now)
		if err != nil {
			l.preparing.Add(-1)
			return 0, fmt.Errorf("audit: append: %w", err)
		}
		r.evs[i] = e
	}
	l.mu.Lock()
	l.preparing.Add(-1)
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	l.queue = append(l.queue, r)
	lead := !l.committing
	l.committing = true
	l.mu.Unlock()
	if lead {
		// Nobody is committing: commit here rather than hand the batch to
		// another goroutine and wait to be woken (two cross-thread hand-offs
		// per append at low load). Appends that arrive meanwhile join the
		// batches this goroutine commits.
		l.drain(context.Background(), r)
	}
	select {
	case <-r.done:
		if r.err != nil {
			return 0, fmt.Errorf("audit: append: %w", r.err)
		}
		return r.first, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("audit: append (the event may still be committed): %w", ctx.Err())
	}
}

// Defer appends ev without waiting for it: it is queued in order and
// committed with the next transaction, at the latest after Options.Linger.
// Use it for events nothing waits on (what happened after a decision that
// was itself committed with Append): at low load a call then costs one
// transaction instead of one per event. A deferred event that cannot be
// committed is logged as an error; Close commits every deferred event.
func (l *Log) Defer(ev Event) error {
	e, err := prepare(ev, l.now)
	if err != nil {
		return fmt.Errorf("audit: defer: %w", err)
	}
	r := &request{evs: []store.AuditEvent{e}, done: make(chan struct{})}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.queue = append(l.queue, r)
	arm := !l.armed
	l.armed = true
	l.mu.Unlock()
	if arm {
		time.AfterFunc(l.linger, func() {
			l.mu.Lock()
			l.armed = false
			l.mu.Unlock()
			select {
			case l.wake <- struct{}{}:
			default:
			}
		})
	}
	return nil
}

// run is the committer: it drains the queue into store transactions until
// the log is closed and the queue is empty, and signs checkpoints.
func (l *Log) run() {
	defer close(l.done)
	var tick <-chan time.Time
	if l.cpInterval > 0 {
		t := time.NewTicker(l.cpInterval)
		defer t.Stop()
		tick = t.C
	}
	ctx := context.Background()
	for {
		select {
		case <-l.wake:
		case <-tick:
			if l.lead() {
				if l.sinceCP > 0 {
					l.autoCheckpoint(ctx)
				}
				l.drain(ctx, nil)
			}
			continue
		}
		// Deferred events after their linger, or Close: commit what is
		// queued unless a leader is already at it (it drains the queue).
		if l.lead() {
			l.drain(ctx, nil)
		}
		l.mu.Lock()
		closed, idle := l.closed, !l.committing && len(l.queue) == 0
		l.mu.Unlock()
		if closed {
			if idle {
				return
			}
			// A leader is finishing: look again shortly.
			time.Sleep(time.Millisecond)
			select {
			case l.wake <- struct{}{}:
			default:
			}
		}
	}
}

// lead takes the committer role if nobody has it.
func (l *Log) lead() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.committing {
		return false
	}
	l.committing = true
	return true
}

// drain commits batches until the queue is empty, then gives up the
// committer role. Only the goroutine holding the role calls it; the role
// is released under the same lock that checks the queue, so no request is
// left behind. An appender leading for its own request (mine) stops once
// that is committed and hands what is left to the background committer,
// so that under steady load no caller keeps committing for the others.
func (l *Log) drain(ctx context.Context, mine *request) {
	for {
		l.gather()
		batch, _ := l.take()
		if len(batch) == 0 {
			l.mu.Lock()
			if len(l.queue) == 0 {
				l.committing = false
				l.mu.Unlock()
				return
			}
			l.mu.Unlock()
			continue
		}
		l.commit(ctx, batch)
		if l.cpEvery > 0 && l.sinceCP >= l.cpEvery {
			l.autoCheckpoint(ctx)
		}
		if mine != nil && isDone(mine) {
			l.mu.Lock()
			rest := len(l.queue) > 0
			l.committing = false
			l.mu.Unlock()
			if rest {
				select {
				case l.wake <- struct{}{}:
				default:
				}
			}
			return
		}
	}
}

func isDone(r *request) bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// maxYields bounds how often gather yields before a commit.
const maxYields = 64

// gather gives appends that are still encoding their events the CPU to
// finish and queue, so that they join this commit instead of waiting for
// the next one. A transaction costs far more than an event, and when CPUs
// are scarce the callers preparing events and the committer compete:
// without this the committer would run a transaction for every event or
// two. It yields once (goroutines the last commit woke get to run and
// start their next append), then as long as an append is being prepared,
// up to maxYields times. An idle log pays one yield.
func (l *Log) gather() {
	for i := range maxYields {
		if i > 0 && l.preparing.Load() == 0 {
			return
		}
		l.mu.Lock()
		full := len(l.queue) >= l.maxBatch
		l.mu.Unlock()
		if full {
			return
		}
		runtime.Gosched()
	}
}

// take removes requests from the head of the queue, up to maxBatch events
// (but always at least one request), and reports whether the log is closed.
func (l *Log) take() ([]*request, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, events := 0, 0
	for n < len(l.queue) {
		k := len(l.queue[n].evs)
		if n > 0 && events+k > l.maxBatch {
			break
		}
		events += k
		n++
	}
	batch := append(l.batch[:0], l.queue[:n]...)
	// Shift rather than reslice so the queue's array does not grow without
	// bound; it is short (one entry per waiting caller).
	rest := copy(l.queue, l.queue[n:])
	clear(l.queue[rest:])
	l.queue = l.queue[:rest]
	return batch, l.closed
}

// commit appends the batch's events in one store transaction and wakes its
// callers with the outcome. When the store refuses the batch as a whole
// and some of its requests carry credentials (a credential the store
// refuses fails its transaction), each request is committed on its own,
// so that one caller's credential cannot fail the others' events.
func (l *Log) commit(ctx context.Context, batch []*request) {
	err := l.commitBatch(ctx, batch)
	if err != nil && len(batch) > 1 && carriesCredentials(batch) &&
		(errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrInvalid)) {
		l.log.Warn("audit: a batch with credentials was refused; committing its appends one by one", "err", err)
		for _, r := range batch {
			if rerr := l.commitBatch(ctx, []*request{r}); rerr != nil {
				r.first, r.err = 0, rerr
			}
			close(r.done)
		}
	} else {
		for _, r := range batch {
			if err != nil {
				r.first, r.err = 0, err
			}
			close(r.done)
		}
	}
	clear(batch)
	l.batch = batch[:0]
}

func carriesCredentials(batch []*request) bool {
	for _, r := range batch {
		for i := range r.evs {
			if r.evs[i].Credential != nil {
				return true
			}
		}
	}
	return false
}

// commitBatch appends the batch's events in one store transaction; it sets
// each request's first sequence number and, on success, the log's head.
func (l *Log) commitBatch(ctx context.Context, batch []*request) error {
	n := 0
	for _, r := range batch {
		n += len(r.evs)
	}
	var newHead store.AuditHead
	err := l.st.AppendAudit(ctx, func(head store.AuditHead) ([]store.AuditEvent, error) {
		evs := make([]store.AuditEvent, 0, n)
		hashes := make([]byte, n*HashSize)
		seq, prev := head.Seq, head.Hash
		if seq+int64(n) > maxSeq {
			return nil, fmt.Errorf("the chain is full (%d events)", seq)
		}
		for _, r := range batch {
			r.first = seq + 1
			for _, e := range r.evs {
				seq++
				e.Seq, e.PrevHash = seq, prev
				var sum [HashSize]byte
				sum, l.scratch = hashEvent(&e, l.scratch)
				e.Hash = hashes[:HashSize:HashSize]
				hashes = hashes[HashSize:]
				copy(e.Hash, sum[:])
				evs = append(evs, e)
				prev = e.Hash
			}
		}
		newHead = store.AuditHead{Seq: seq, Hash: prev}
		return evs, nil
	})
	if err != nil {
		l.log.Error("audit: commit failed", "events", n, "err", err)
		return err
	}
	l.head = newHead
	l.sinceCP += n
	return nil
}

// autoCheckpoint signs the head the committer last wrote.
func (l *Log) autoCheckpoint(ctx context.Context) {
	if _, err := l.checkpointAt(ctx, l.head); err != nil {
		l.log.Error("audit: checkpoint failed", "seq", l.head.Seq, "err", err)
		return
	}
	l.sinceCP = 0
}

// Close flushes the queue (every event accepted before Close is committed
// or its caller gets an error), stops the committer and signs a final
// checkpoint of the head. Appends after Close return ErrClosed. It does not
// close the store. It is safe to call more than once.
func (l *Log) Close() error {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	<-l.done
	if already {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	head, err := l.st.AuditHead(ctx)
	if err != nil {
		return fmt.Errorf("audit: close: read head: %w", err)
	}
	if head.Seq == 0 {
		return nil
	}
	if _, err := l.checkpointAt(ctx, head); err != nil {
		return fmt.Errorf("audit: close: %w", err)
	}
	return nil
}
