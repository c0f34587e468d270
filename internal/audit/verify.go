package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/interlock-dev/interlock/canon"
	"github.com/interlock-dev/interlock/internal/store"
)

// verifyPage is how many events Verify reads at a time.
const verifyPage = 10000

// Report is the outcome of Verify.
type Report struct {
	Events      int64 // events checked (up to the first bad one)
	Checkpoints int64 // checkpoints checked
	// FirstBad is the seq of the first event that is changed, missing,
	// inserted or out of place; 0 when every event checked out.
	FirstBad int64
	// BadCheckpoint is the seq of the first checkpoint whose signature does
	// not verify or which does not match the chain; 0 when none.
	BadCheckpoint int64
	// Problem says what is wrong, in words ("" when nothing is).
	Problem string
}

// OK reports whether the chain and every checkpoint verified.
func (r Report) OK() bool { return r.FirstBad == 0 && r.BadCheckpoint == 0 }

// Verify walks the whole chain in seq order, recomputing every event's hash,
// and checks every checkpoint's signature (with the key in the store's meta)
// and that the hash it signed is the chain's hash at its seq. It detects any
// changed, deleted, inserted or reordered event and names the first bad seq
// in Report.FirstBad. Where events were rewritten with consistently
// recomputed hashes, only a checkpoint can tell: FirstBad is then the first
// event after the last checkpoint that still matches.
//
// The returned error is for failures to read the store; what is wrong with
// the log is in the Report. progress, if not nil, is called after each page
// with the events checked so far and the chain's length when Verify began.
//
// Events appended after the newest checkpoint are protected by the chain
// only: someone able to write the database can rewrite or drop them and
// recompute their hashes. Checkpoints bound that window (docs/audit.md).
func Verify(ctx context.Context, st store.Store, progress func(done, total int64)) (Report, error) {
	var rep Report
	// Checkpoints before the head: a checkpoint signed meanwhile is then
	// never past the head this walk ends at.
	cps, err := st.ListCheckpoints(ctx)
	if err != nil {
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	head, err := st.AuditHead(ctx)
	if err != nil {
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	pub, err := loadPublicKey(ctx, st)
	if err != nil {
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	v := verifier{pub: pub, cps: cps, prev: make([]byte, HashSize), want: 1}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := fetchPages(ctx, st, head.Seq)
	for k := range pages.pages {
		p := pages.get(k)
		if p.err != nil {
			return rep, fmt.Errorf("audit: verify: %w", p.err)
		}
		if v.page(p.evs) {
			break
		}
		if progress != nil {
			progress(v.events, head.Seq)
		}
	}
	cancel()
	v.finish()
	rep = Report{Events: v.events, Checkpoints: v.cpsChecked, FirstBad: v.firstBad, BadCheckpoint: v.badCP}
	var problems []string
	if v.evProblem != "" {
		problems = append(problems, v.evProblem)
	}
	if v.cpProblem != "" {
		problems = append(problems, v.cpProblem)
	}
	rep.Problem = strings.Join(problems, "; ")
	if progress != nil {
		progress(v.events, head.Seq)
	}
	return rep, nil
}

type pageResult struct {
	evs []store.AuditEvent
	err error
}

// fetchPages reads the chain up to seq last in pages of verifyPage seqs,
// several pages at a time (reading is most of the cost of verification),
// and returns a pager to take them from in seq order. Page k holds the
// events with seqs in (k*verifyPage, (k+1)*verifyPage]; fetchers run at
// most a few pages ahead of the consumer, and stop when ctx ends.
func fetchPages(ctx context.Context, st store.Store, last int64) *pager {
	n := int((last + verifyPage - 1) / verifyPage)
	pages := make([]chan pageResult, n)
	for i := range pages {
		pages[i] = make(chan pageResult, 1)
	}
	workers := max(2, runtime.GOMAXPROCS(0))
	ahead := make(chan struct{}, workers+1) // pages fetched or being fetched, not yet consumed
	var next atomic.Int64
	for range workers {
		go func() {
			for {
				select {
				case ahead <- struct{}{}:
				case <-ctx.Done():
					return
				}
				k := next.Add(1) - 1
				if k >= int64(n) {
					return
				}
				lo, hi := k*verifyPage, (k+1)*verifyPage
				evs, err := st.ListAudit(ctx, store.AuditFilter{AfterSeq: lo, Limit: verifyPage})
				// Where events are missing the page runs into the next
				// one's range: that belongs to the next page.
				for len(evs) > 0 && evs[len(evs)-1].Seq > hi {
					evs = evs[:len(evs)-1]
				}
				pages[k] <- pageResult{evs: evs, err: err}
			}
		}()
	}
	return &pager{pages: pages, ahead: ahead}
}

// pager hands out the pages fetchPages reads.
type pager struct {
	pages []chan pageResult
	ahead chan struct{}
}

// get waits for page k; pages must be taken in order.
func (p *pager) get(k int) pageResult {
	r := <-p.pages[k]
	<-p.ahead // one more page may be fetched
	return r
}

type verifier struct {
	pub  ed25519.PublicKey
	cps  []store.Checkpoint
	next int // index of the next checkpoint to check

	prev   []byte // hash of the last good event
	want   int64  // seq the next event must have
	events int64
	lastCP int64 // seq of the newest checkpoint that matched the chain

	firstBad, badCP      int64
	evProblem, cpProblem string
	cpsChecked           int64
}

// page checks a page of events and reports whether the walk must stop (an
// event is bad).
func (v *verifier) page(evs []store.AuditEvent) bool {
	bad := checkHashes(evs)
	for i := range evs {
		e := &evs[i]
		switch {
		case e.Seq != v.want:
			v.badEvent(v.want, fmt.Sprintf("event %d is missing (the next event has seq %d)", v.want, e.Seq))
			return true
		case !bytes.Equal(e.PrevHash, v.prev):
			v.badEvent(e.Seq, fmt.Sprintf("event %d: prev_hash %x is not the hash of event %d (%x)", e.Seq, e.PrevHash, e.Seq-1, v.prev))
			return true
		case bad[i] != "":
			v.badEvent(e.Seq, fmt.Sprintf("event %d: %s", e.Seq, bad[i]))
			return true
		}
		v.events++
		v.want++
		v.prev = e.Hash
		for v.next < len(v.cps) && v.cps[v.next].Seq == e.Seq {
			v.checkpoint(v.cps[v.next], e.Hash)
			v.next++
			if v.firstBad != 0 {
				return true
			}
		}
	}
	return false
}

func (v *verifier) badEvent(seq int64, problem string) {
	v.firstBad, v.evProblem = seq, problem
}

func (v *verifier) badCheckpoint(seq int64, problem string) {
	if v.badCP == 0 {
		v.badCP, v.cpProblem = seq, problem
	}
}

// checkpoint checks c against the hash the chain has at c.Seq.
func (v *verifier) checkpoint(c store.Checkpoint, chainHash []byte) {
	v.cpsChecked++
	switch {
	case v.pub == nil:
		v.badCheckpoint(c.Seq, fmt.Sprintf("checkpoint %d: the store holds no checkpoint key", c.Seq))
	case !VerifyCheckpoint(v.pub, c):
		v.badCheckpoint(c.Seq, fmt.Sprintf("checkpoint %d: signature does not verify with key %s", c.Seq, KeyID(v.pub)))
	case !bytes.Equal(c.Hash, chainHash):
		// The chain is consistent but not the one that was signed: events
		// after the previous good checkpoint were rewritten.
		v.badCheckpoint(c.Seq, fmt.Sprintf("checkpoint %d signed hash %x but the chain has %x there", c.Seq, c.Hash, chainHash))
		v.badEvent(v.lastCP+1, fmt.Sprintf("events %d to %d were rewritten (they do not match checkpoint %d)", v.lastCP+1, c.Seq, c.Seq))
	default:
		v.lastCP = c.Seq
	}
}

// finish handles checkpoints past the end of the walk: if the walk ended
// at the end of the chain, events they cover were deleted from its end.
func (v *verifier) finish() {
	if v.firstBad != 0 {
		return
	}
	for ; v.next < len(v.cps); v.next++ {
		c := v.cps[v.next]
		v.cpsChecked++
		if v.pub != nil && !VerifyCheckpoint(v.pub, c) {
			v.badCheckpoint(c.Seq, fmt.Sprintf("checkpoint %d: signature does not verify with key %s", c.Seq, KeyID(v.pub)))
			continue
		}
		v.badCheckpoint(c.Seq, fmt.Sprintf("checkpoint %d is past the end of the chain (last event %d)", c.Seq, v.want-1))
		if v.firstBad == 0 {
			v.badEvent(v.want, fmt.Sprintf("events %d to %d are missing (checkpoint %d covers them)", v.want, c.Seq, c.Seq))
		}
	}
}

// checkHashes recomputes the hash of each event and checks that its data is
// a canonical JSON object, spreading the work over the CPUs. It returns, per
// event, "" or what is wrong.
func checkHashes(evs []store.AuditEvent) []string {
	bad := make([]string, len(evs))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(evs)/256))
	var wg sync.WaitGroup
	chunk := (len(evs) + workers - 1) / workers
	for w := range workers {
		lo, hi := w*chunk, min((w+1)*chunk, len(evs))
		if lo >= hi {
			break
		}
		wg.Go(func() {
			var scratch []byte
			for i := lo; i < hi; i++ {
				e := &evs[i]
				var sum [HashSize]byte
				sum, scratch = hashEvent(e, scratch)
				switch {
				case !bytes.Equal(sum[:], e.Hash):
					bad[i] = fmt.Sprintf("hash %x does not match its contents (%x)", e.Hash, sum)
				case !isCanonicalObject(e.Data):
					bad[i] = "data is not a canonical JSON object"
				}
			}
		})
	}
	wg.Wait()
	return bad
}

func isCanonicalObject(data []byte) bool {
	if len(data) < 2 || data[0] != '{' {
		return false
	}
	return canon.IsCanonical(data)
}
