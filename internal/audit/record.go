package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/interlock-dev/interlock/canon"
	"github.com/interlock-dev/interlock/internal/store"
)

// HashSize is the length of an event hash: SHA-256.
const HashSize = sha256.Size

// The hashed record of an event is the RFC 8785 canonical JSON of
//
//	{"seq":N,"time":"<RFC 3339, UTC, to the microsecond>","type":T,
//	 "call_id":C,"agent_id":A,"data":<the event's data object>,
//	 "prev_hash":"<hex of the previous event's hash>"}
//
// and the event's hash is the SHA-256 of those bytes. Canonical JSON sorts
// the members, so the bytes always read
//
//	{"agent_id":A,"call_id":C,"data":D,"prev_hash":"P","seq":N,"time":"T","type":Y}
//
// appendRecord writes exactly that without a general-purpose encoder: D is
// already canonical (it is stored that way and checked by Verify), strings
// go through canon.AppendString, and seq is a positive integer below 2^53,
// whose canonical form is its decimal digits. TestRecordIsJCS checks the
// equivalence against canon.Marshal.

// timeFormat is how event and checkpoint times are written: RFC 3339 with
// as many fractional digits as needed (none for a whole second), in UTC.
const timeFormat = time.RFC3339Nano

// appendRecord appends the canonical record of e to b.
func appendRecord(b []byte, e *store.AuditEvent) []byte {
	b = append(b, `{"agent_id":`...)
	b = canon.AppendString(b, e.AgentID)
	b = append(b, `,"call_id":`...)
	b = canon.AppendString(b, e.CallID)
	b = append(b, `,"data":`...)
	b = append(b, e.Data...)
	b = append(b, `,"prev_hash":"`...)
	b = hex.AppendEncode(b, e.PrevHash)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, e.Seq, 10)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, timeFormat)
	b = append(b, `","type":`...)
	b = canon.AppendString(b, e.Type)
	return append(b, '}')
}

// hashEvent returns the SHA-256 of e's canonical record, using scratch as
// the buffer (returned for reuse).
func hashEvent(e *store.AuditEvent, scratch []byte) ([HashSize]byte, []byte) {
	scratch = appendRecord(scratch[:0], e)
	return sha256.Sum256(scratch), scratch
}

// maxSeq keeps seq numbers exact as JSON numbers (doubles).
const maxSeq = 1<<53 - 1

var errNotObject = errors.New("data is not a JSON object")

// prepare turns ev into a store event without Seq, PrevHash and Hash: the
// time defaulted and normalised, the data canonical.
func prepare(ev Event, now func() time.Time) (store.AuditEvent, error) {
	if ev.Type == "" {
		return store.AuditEvent{}, errors.New("event type is empty")
	}
	for _, f := range []struct{ name, v string }{{"type", ev.Type}, {"call_id", ev.CallID}, {"agent_id", ev.AgentID}} {
		if !utf8.ValidString(f.v) {
			return store.AuditEvent{}, fmt.Errorf("event %s is not valid UTF-8", f.name)
		}
	}
	t := ev.Time
	if t.IsZero() {
		t = now()
	}
	t = store.NormalizeTime(t)
	if y := t.Year(); y < 1 || y > 9999 {
		return store.AuditEvent{}, fmt.Errorf("event time %v is outside years 1-9999", t)
	}
	data, err := canonicalData(ev.Data)
	if err != nil {
		return store.AuditEvent{}, fmt.Errorf("event %s: %w", ev.Type, err)
	}
	return store.AuditEvent{Time: t, Type: ev.Type, CallID: ev.CallID, AgentID: ev.AgentID, Data: data, Credential: ev.Credential}, nil
}

// canonicalData returns the canonical JSON of v, which must encode as an
// object; nil (and a nil map or pointer) is the empty object.
func canonicalData(v any) ([]byte, error) {
	if v == nil {
		return []byte("{}"), nil
	}
	b, err := canon.Marshal(v)
	if err != nil {
		return nil, err
	}
	if string(b) == "null" { // a nil map or pointer
		return []byte("{}"), nil
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, errNotObject
	}
	return b, nil
}
