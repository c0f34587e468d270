package audit

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/interlock-dev/interlock/canon"
	"github.com/interlock-dev/interlock/internal/store"
)

// exportPage is how many events Export and Tail read at a time.
const exportPage = 5000

// Filter selects events for Export and Tail. Zero fields select all.
type Filter struct {
	Since   time.Time // events at or after
	AgentID string
	// Effect keeps only "decision" events whose data.effect equals it
	// ("allow", "deny", "approve").
	Effect   string
	Types    []string
	AfterSeq int64 // events with a greater seq
}

// storeFilter returns the part of f the store applies, and false if f can
// match nothing.
func (f Filter) storeFilter() (store.AuditFilter, bool) {
	sf := store.AuditFilter{AfterSeq: f.AfterSeq, Since: f.Since, AgentID: f.AgentID, Types: f.Types, Limit: exportPage}
	if f.Effect != "" {
		if len(f.Types) > 0 && !slices.Contains(f.Types, "decision") {
			return sf, false
		}
		sf.Types = []string{"decision"}
	}
	return sf, true
}

// match applies what the store cannot: Effect.
func (f Filter) match(e *store.AuditEvent) bool {
	if f.Effect == "" {
		return true
	}
	var d struct {
		Effect string `json:"effect"`
	}
	return e.Type == "decision" && json.Unmarshal(e.Data, &d) == nil && d.Effect == f.Effect
}

// AppendJSONLine appends e as one line of the export format (JSON Lines):
//
//	{"seq":N,"time":"<RFC 3339, UTC>","type":T,"call_id":C,"agent_id":A,
//	 "data":{...},"prev_hash":"<hex>","hash":"<hex>"}
//
// followed by a newline. data is written as stored (canonical JSON).
func AppendJSONLine(b []byte, e *store.AuditEvent) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, e.Seq, 10)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, timeFormat)
	b = append(b, `","type":`...)
	b = canon.AppendString(b, e.Type)
	b = append(b, `,"call_id":`...)
	b = canon.AppendString(b, e.CallID)
	b = append(b, `,"agent_id":`...)
	b = canon.AppendString(b, e.AgentID)
	b = append(b, `,"data":`...)
	if len(e.Data) == 0 {
		b = append(b, "{}"...)
	} else {
		b = append(b, e.Data...)
	}
	b = append(b, `,"prev_hash":"`...)
	b = hex.AppendEncode(b, e.PrevHash)
	b = append(b, `","hash":"`...)
	b = hex.AppendEncode(b, e.Hash)
	return append(b, "\"}\n"...)
}

// Export writes the events f selects to w as JSON Lines (AppendJSONLine), in
// seq order, and returns how many it wrote.
func Export(ctx context.Context, st store.Store, w io.Writer, f Filter) (int64, error) {
	n, _, err := export(ctx, st, w, f)
	return n, err
}

// export writes the events after f.AfterSeq and returns how many it wrote
// and the last seq it read.
func export(ctx context.Context, st store.Store, w io.Writer, f Filter) (int64, int64, error) {
	sf, ok := f.storeFilter()
	if !ok {
		return 0, f.AfterSeq, nil
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	var (
		n    int64
		line []byte
	)
	for {
		evs, err := st.ListAudit(ctx, sf)
		if err != nil {
			return n, sf.AfterSeq, fmt.Errorf("audit: export: %w", err)
		}
		for i := range evs {
			if !f.match(&evs[i]) {
				continue
			}
			line = AppendJSONLine(line[:0], &evs[i])
			if _, err := bw.Write(line); err != nil {
				return n, sf.AfterSeq, fmt.Errorf("audit: export: %w", err)
			}
			n++
		}
		if len(evs) > 0 {
			sf.AfterSeq = evs[len(evs)-1].Seq
		}
		if len(evs) < sf.Limit {
			break
		}
	}
	if err := bw.Flush(); err != nil {
		return n, sf.AfterSeq, fmt.Errorf("audit: export: %w", err)
	}
	return n, sf.AfterSeq, nil
}

// Tail writes the events f selects to w like Export; with follow, it then
// polls the store every poll (default 1s) for new ones and writes them as
// they come, until ctx ends, which is then not an error. To start near the
// end of the log, set f.AfterSeq from the store's AuditHead.
func Tail(ctx context.Context, st store.Store, w io.Writer, f Filter, follow bool, poll time.Duration) error {
	if poll <= 0 {
		poll = time.Second
	}
	var t *time.Ticker
	for {
		_, last, err := export(ctx, st, w, f)
		if err != nil {
			if follow && ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !follow {
			return nil
		}
		f.AfterSeq = last
		if t == nil {
			t = time.NewTicker(poll)
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ExportCheckpoints writes the store's checkpoints to w as JSON Lines:
//
//	{"seq":N,"hash":"<hex>","time":"<RFC 3339, UTC>","key_id":"<id>",
//	 "signature":"<hex>","public_key":"<hex of the raw Ed25519 key>"}
//
// so that an auditor can check an export's hashes against signed heads.
// public_key is the key the store holds (omitted if it holds none); an
// auditor should compare it with one obtained out of band.
func ExportCheckpoints(ctx context.Context, st store.Store, w io.Writer) (int64, error) {
	cps, err := st.ListCheckpoints(ctx)
	if err != nil {
		return 0, fmt.Errorf("audit: export checkpoints: %w", err)
	}
	pub, err := loadPublicKey(ctx, st)
	if err != nil {
		return 0, fmt.Errorf("audit: export checkpoints: %w", err)
	}
	bw := bufio.NewWriter(w)
	var b []byte
	for _, c := range cps {
		b = append(b[:0], `{"seq":`...)
		b = strconv.AppendInt(b, c.Seq, 10)
		b = append(b, `,"hash":"`...)
		b = hex.AppendEncode(b, c.Hash)
		b = append(b, `","time":"`...)
		b = c.Time.UTC().AppendFormat(b, timeFormat)
		b = append(b, `","key_id":`...)
		b = canon.AppendString(b, c.KeyID)
		b = append(b, `,"signature":"`...)
		b = hex.AppendEncode(b, c.Signature)
		b = append(b, '"')
		if pub != nil {
			b = append(b, `,"public_key":"`...)
			b = hex.AppendEncode(b, pub)
			b = append(b, '"')
		}
		b = append(b, "}\n"...)
		if _, err := bw.Write(b); err != nil {
			return 0, fmt.Errorf("audit: export checkpoints: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("audit: export checkpoints: %w", err)
	}
	return int64(len(cps)), nil
}
