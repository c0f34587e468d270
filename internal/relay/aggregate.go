package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// The aggregated endpoint /mcp puts every upstream behind one MCP server.
// Tool and prompt names get the upstream's prefix (kept within
// ^[a-zA-Z0-9_-]{1,64}$, the rule LLM tool APIs enforce); resource names get
// it too, while resource URIs stay as they are and are routed by what each
// upstream listed. Requests the relay cannot route to one upstream are
// answered here (initialize, ping, lists, logging/setLevel) by asking every
// upstream and merging.

const aggregateTimeout = 30 * time.Second

// exposedName maps an upstream's name to the unique name shown on /mcp.
func exposedName(prefix, name string) string {
	n := prefix + name
	var b strings.Builder
	for _, c := range n {
		if c == '_' || c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	out := b.String()
	if out != n || len(out) > 64 {
		// Changed or too long: keep it unique with a short hash of the original.
		sum := sha256.Sum256([]byte(n))
		h := hex.EncodeToString(sum[:4])
		if len(out) > 55 {
			out = out[:55]
		}
		if out != n {
			out = out + "_" + h
		}
	}
	return out
}

// routeName finds the upstream and original name for an exposed tool or
// prompt name.
func (s *session) routeName(method, exposed string) (*legState, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ls := range s.legs {
		table := ls.tools
		if method == "prompts/get" || method == "ref/prompt" {
			table = ls.prompts
		}
		if orig, ok := table[exposed]; ok {
			return ls, orig, true
		}
	}
	// Not listed yet: the longest prefix that matches and maps back exactly.
	var best *legState
	for _, ls := range s.legs {
		if strings.HasPrefix(exposed, ls.up.Prefix) && (best == nil || len(ls.up.Prefix) > len(best.up.Prefix)) {
			if exposedName(ls.up.Prefix, exposed[len(ls.up.Prefix):]) == exposed {
				best = ls
			}
		}
	}
	if best == nil {
		return nil, "", false
	}
	return best, exposed[len(best.up.Prefix):], true
}

func (s *session) dispatchAggregated(m message, st *stream) []byte {
	switch {
	case m.isResponse():
		s.mu.Lock()
		origin, ok := s.serverReq[idKey(m.ID)]
		delete(s.serverReq, idKey(m.ID))
		s.mu.Unlock()
		if !ok {
			return nil // an answer to nothing we asked: drop
		}
		if m2, err := withID(m, origin.id); err == nil {
			s.sendTo(s.legs[origin.leg], m2)
		}
		return nil
	case m.isNotification():
		if m.Method == "notifications/cancelled" {
			var p struct {
				RequestID json.RawMessage `json:"requestId"`
			}
			json.Unmarshal(m.Params, &p)
			s.mu.Lock()
			idx, ok := s.reqLeg[idKey(p.RequestID)]
			s.mu.Unlock()
			if ok {
				s.sendTo(s.legs[idx], m)
			}
			return nil
		}
		for _, ls := range s.legs {
			s.sendTo(ls, m)
		}
		return nil
	}

	switch m.Method {
	case "ping":
		s.answer(m.ID, resultResponse(m.ID, []byte("{}")))
	case "initialize":
		go s.aggregateInitialize(m)
	case "tools/list", "prompts/list", "resources/list", "resources/templates/list":
		go s.aggregateList(m)
	case "logging/setLevel":
		go s.fanOutEmpty(m)
	case "tools/call", "prompts/get":
		var p callParams
		json.Unmarshal(m.Params, &p)
		ls, orig, ok := s.routeName(m.Method, p.Name)
		if !ok {
			s.answer(m.ID, unknownNameResponse(&m, p.Name))
			return nil
		}
		params, err := setParam(m.Params, "name", orig)
		if err == nil {
			m, err = withParams(m, params)
		}
		if err != nil {
			s.answer(m.ID, errorResponse(m.ID, codeInvalidParams, err.Error()))
			return nil
		}
		s.sendTo(ls, m)
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		var p callParams
		json.Unmarshal(m.Params, &p)
		ls := s.routeURI(p.URI)
		if ls == nil {
			s.answer(m.ID, errorResponse(m.ID, codeInvalidParams, fmt.Sprintf("no upstream serves resource %q", p.URI)))
			return nil
		}
		s.sendTo(ls, m)
	case "completion/complete":
		s.routeCompletion(m)
	default:
		if len(s.legs) == 1 {
			s.sendTo(s.legs[0], m)
			return nil
		}
		s.answer(m.ID, errorResponse(m.ID, codeMethodNotFound,
			fmt.Sprintf("method %q is not available on the aggregated endpoint; use /mcp/{upstream}", m.Method)))
	}
	return nil
}

func (s *session) routeURI(uri string) *legState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.legs) == 1 {
		return s.legs[0]
	}
	var best *legState
	bestLen := -1
	for _, ls := range s.legs {
		for _, pfx := range ls.resourcePrefixes() {
			if strings.HasPrefix(uri, pfx) && len(pfx) > bestLen {
				best, bestLen = ls, len(pfx)
			}
		}
	}
	return best
}

func (s *session) routeCompletion(m message) {
	var p struct {
		Ref struct {
			Type string `json:"type"`
			Name string `json:"name"`
			URI  string `json:"uri"`
		} `json:"ref"`
	}
	json.Unmarshal(m.Params, &p)
	var ls *legState
	switch p.Ref.Type {
	case "ref/prompt":
		var orig string
		var ok bool
		ls, orig, ok = s.routeName("ref/prompt", p.Ref.Name)
		if ok {
			ref := map[string]string{"type": p.Ref.Type, "name": orig}
			if params, err := setParam(m.Params, "ref", ref); err == nil {
				m, _ = withParams(m, params)
			}
		}
	case "ref/resource":
		ls = s.routeURI(p.Ref.URI)
	}
	if ls == nil {
		s.answer(m.ID, errorResponse(m.ID, codeInvalidParams, "cannot tell which upstream this completion is for"))
		return
	}
	s.sendTo(ls, m)
}

// resourcePrefixes are the URIs and URI-template prefixes this upstream
// listed (from resources/list and resources/templates/list).
func (ls *legState) resourcePrefixes() []string { return ls.uris }

// aggregateInitialize initializes every upstream with the client's params and
// answers with the merged capabilities.
func (s *session) aggregateInitialize(m message) {
	ctx, cancel := context.WithTimeout(context.Background(), aggregateTimeout)
	defer cancel()
	results := s.fanOut(ctx, m.Method, m.Params)
	caps := map[string]map[string]json.RawMessage{}
	version := ""
	var instructions []string
	ok := 0
	for i, res := range results {
		if res.err != nil {
			s.r.log.Warn("upstream initialize failed", "upstream", s.legs[i].up.Name, "err", res.err)
			continue
		}
		var r struct {
			ProtocolVersion string                     `json:"protocolVersion"`
			Capabilities    map[string]json.RawMessage `json:"capabilities"`
			Instructions    string                     `json:"instructions"`
		}
		if json.Unmarshal(res.result, &r) != nil {
			continue
		}
		ok++
		if version == "" {
			version = r.ProtocolVersion
		}
		for k, v := range r.Capabilities {
			var fields map[string]json.RawMessage
			json.Unmarshal(v, &fields)
			if caps[k] == nil {
				caps[k] = map[string]json.RawMessage{}
			}
			for fk, fv := range fields {
				if string(fv) == "true" || caps[k][fk] == nil {
					caps[k][fk] = fv
				}
			}
		}
		if r.Instructions != "" {
			instructions = append(instructions, fmt.Sprintf("[%s] %s", s.legs[i].up.Name, r.Instructions))
		}
	}
	if ok == 0 {
		s.answer(m.ID, errorResponse(m.ID, codeUpstreamError, "no upstream could be initialized"))
		return
	}
	result, _ := json.Marshal(map[string]any{
		"protocolVersion": version,
		"capabilities":    caps,
		"serverInfo":      map[string]string{"name": "interlock", "version": "aggregated"},
		"instructions":    strings.Join(instructions, "\n"),
	})
	s.answer(m.ID, resultResponse(m.ID, result))
}

type fanResult struct {
	result json.RawMessage
	err    error
}

// fanOut sends one request to every live leg and collects the results.
func (s *session) fanOut(ctx context.Context, method string, params json.RawMessage) []fanResult {
	out := make([]fanResult, len(s.legs))
	var wg sync.WaitGroup
	for i, ls := range s.legs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].result, out[i].err = s.callRaw(ctx, ls, method, params)
		}()
	}
	wg.Wait()
	return out
}

func (s *session) callRaw(ctx context.Context, ls *legState, method string, params json.RawMessage) (json.RawMessage, error) {
	var p any = params
	if params == nil {
		p = struct{}{}
	}
	resp, err := s.call(ctx, ls, method, p)
	if err != nil {
		return nil, err
	}
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Raw, &r); err != nil {
		return nil, err
	}
	if r.Error != nil {
		return nil, fmt.Errorf("upstream %q: %s (code %d)", ls.up.Name, r.Error.Message, r.Error.Code)
	}
	return r.Result, nil
}

func (s *session) fanOutEmpty(m message) {
	ctx, cancel := context.WithTimeout(context.Background(), aggregateTimeout)
	defer cancel()
	s.fanOut(ctx, m.Method, m.Params)
	s.answer(m.ID, resultResponse(m.ID, []byte("{}")))
}

// aggregateList lists from every upstream (all pages), renames, and answers.
func (s *session) aggregateList(m message) {
	ctx, cancel := context.WithTimeout(context.Background(), aggregateTimeout)
	defer cancel()
	key := map[string]string{"tools/list": "tools", "prompts/list": "prompts",
		"resources/list": "resources", "resources/templates/list": "resourceTemplates"}[m.Method]
	items := make([][]map[string]json.RawMessage, len(s.legs))
	var wg sync.WaitGroup
	for i, ls := range s.legs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cursor := ""
			for page := 0; page < 1000; page++ {
				params := map[string]any{}
				if cursor != "" {
					params["cursor"] = cursor
				}
				raw, _ := json.Marshal(params)
				res, err := s.callRaw(ctx, ls, m.Method, raw)
				if err != nil {
					s.r.log.Debug("upstream list failed", "upstream", ls.up.Name, "method", m.Method, "err", err)
					return
				}
				var r map[string]json.RawMessage
				if json.Unmarshal(res, &r) != nil {
					return
				}
				var list []map[string]json.RawMessage
				json.Unmarshal(r[key], &list)
				items[i] = append(items[i], list...)
				cursor = ""
				json.Unmarshal(r["nextCursor"], &cursor)
				if cursor == "" {
					return
				}
			}
		}()
	}
	wg.Wait()

	var all []map[string]json.RawMessage
	s.mu.Lock()
	for i, ls := range s.legs {
		table := map[string]string{}
		var uris []string
		for _, it := range items[i] {
			var name string
			json.Unmarshal(it["name"], &name)
			if name != "" {
				exp := exposedName(ls.up.Prefix, name)
				table[exp] = name
				it["name"], _ = json.Marshal(exp)
			}
			var uri string
			if json.Unmarshal(it["uri"], &uri) == nil && uri != "" {
				uris = append(uris, uri)
			}
			if json.Unmarshal(it["uriTemplate"], &uri) == nil && uri != "" {
				if j := strings.IndexByte(uri, '{'); j >= 0 {
					uri = uri[:j]
				}
				uris = append(uris, uri)
			}
			all = append(all, it)
		}
		switch m.Method {
		case "tools/list":
			ls.tools = table
		case "prompts/list":
			ls.prompts = table
		default:
			ls.uris = mergeUnique(ls.uris, uris)
		}
	}
	s.mu.Unlock()
	if all == nil {
		all = []map[string]json.RawMessage{}
	}
	result, _ := json.Marshal(map[string]any{key: all})
	s.answer(m.ID, resultResponse(m.ID, result))
}

func mergeUnique(a, b []string) []string {
	seen := map[string]bool{}
	for _, x := range a {
		seen[x] = true
	}
	for _, x := range b {
		if !seen[x] {
			seen[x] = true
			a = append(a, x)
		}
	}
	sort.Strings(a)
	return a
}

// rewriteNotification fixes ids in upstream notifications on /mcp.
func (s *session) rewriteNotification(ls *legState, m *message) {
	if m.Method != "notifications/cancelled" {
		return
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(m.Params, &p) != nil || p["requestId"] == nil {
		return
	}
	nid := quoteID(fmt.Sprintf("%d~%s", ls.idx, p["requestId"]))
	p["requestId"] = nid
	raw, _ := json.Marshal(p)
	if m2, err := withParams(*m, raw); err == nil {
		*m = m2
	}
	s.mu.Lock()
	delete(s.serverReq, idKey(nid))
	s.mu.Unlock()
}
