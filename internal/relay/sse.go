package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// sseEvent is one server-sent event. Raw is the event exactly as read,
// including its terminating blank line, so a relay can pass it on unchanged.
// Raw and Data share the reader's buffers: they are valid until the next
// call to next.
type sseEvent struct {
	Raw  []byte
	ID   []byte
	Name []byte
	Data []byte // data lines joined with "\n"
}

// sseReader reads events from a text/event-stream body (WHATWG HTML §9.2).
type sseReader struct {
	r         *bufio.Reader
	max       int
	raw, data bytes.Buffer
}

var sseReaders = sync.Pool{New: func() any { return &sseReader{r: bufio.NewReaderSize(nil, 16<<10)} }}

// newSSEReader takes a reader from the pool; give it back with release.
func newSSEReader(r io.Reader, maxEvent int) *sseReader {
	s := sseReaders.Get().(*sseReader)
	s.r.Reset(r)
	s.max = maxEvent
	return s
}

// release returns the reader to the pool; no event it returned may be used
// afterwards.
func (s *sseReader) release() {
	s.r.Reset(nil)
	if s.raw.Cap() > 64<<10 || s.data.Cap() > 64<<10 {
		return // keep the pool's buffers small
	}
	sseReaders.Put(s)
}

var errEventTooLarge = errors.New("server-sent event too large")

// next returns the next event. Comment-only blocks (keep-alives) and blocks
// that carry only a retry or id field are returned too, with empty Data, so
// the relay forwards them; io.EOF at a clean end of stream.
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	raw, data := &s.raw, &s.data
	raw.Reset()
	data.Reset()
	hasData := false
	for {
		line, err := s.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line: collect it whole.
			buf := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = s.r.ReadSlice('\n')
				buf = append(buf, line...)
				if len(buf) > s.max {
					return ev, errEventTooLarge
				}
			}
			line = buf
		}
		if err != nil && !(err == io.EOF && len(line) > 0) {
			if err == io.EOF && raw.Len() > 0 {
				// Stream ended without the final blank line: dispatch what we have.
				ev.Raw = raw.Bytes()
				if hasData {
					ev.Data = data.Bytes()
				}
				return ev, nil
			}
			return ev, err
		}
		raw.Write(line)
		if raw.Len() > s.max {
			return ev, errEventTooLarge
		}
		content := bytes.TrimRight(line, "\r\n")
		if len(content) == 0 {
			if raw.Len() == len(line) {
				// A blank line with nothing before it: skip.
				raw.Reset()
				continue
			}
			ev.Raw = raw.Bytes()
			if hasData {
				ev.Data = data.Bytes()
			}
			return ev, nil
		}
		if content[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(content, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
		case "id":
			ev.ID = append([]byte(nil), value...)
		case "event":
			ev.Name = append([]byte(nil), value...)
		}
		if err == io.EOF {
			ev.Raw = raw.Bytes()
			if hasData {
				ev.Data = data.Bytes()
			}
			return ev, nil
		}
	}
}

// sseWriter writes events to an HTTP response and flushes each one.
type sseWriter struct {
	w  io.Writer
	rc *http.ResponseController
	// later makes the next write skip its flush; unflushed says a write
	// is waiting for one.
	later, unflushed bool
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

// writeRaw writes bytes already in event-stream form.
func (s *sseWriter) writeRaw(b []byte) error {
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	if s.later {
		s.unflushed = true
		return nil
	}
	return s.flush()
}

// writeMessage writes one JSON-RPC message as a "message" event.
func (s *sseWriter) writeMessage(id string, msg []byte) error {
	var b bytes.Buffer
	b.Grow(len(msg) + 32)
	if id != "" {
		fmt.Fprintf(&b, "id: %s\n", id)
	}
	b.WriteString("event: message\ndata: ")
	// JSON never holds a raw newline outside strings, and strings escape it,
	// but be safe with pretty-printed upstream output.
	for i, line := range bytes.Split(msg, []byte("\n")) {
		if i > 0 {
			b.WriteString("\ndata: ")
		}
		b.Write(bytes.TrimRight(line, "\r"))
	}
	b.WriteString("\n\n")
	return s.writeRaw(b.Bytes())
}

func (s *sseWriter) flush() error {
	s.unflushed = false
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
