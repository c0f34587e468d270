package scim

import (
	"log/slog"
	"strings"
)

// patchOp is one PATCH operation (RFC 7644 §3.5.2).
type patchOp struct {
	op       string // "add", "replace" or "remove"
	path     string // "" when absent
	value    any
	hasValue bool
}

// parsePatch reads a PatchOp message. Member names and op values are
// matched case-insensitively: Entra ID sends "Replace", "Add", "Remove".
func parsePatch(m map[string]any) ([]patchOp, error) {
	fs, err := foldKeys(m)
	if err != nil {
		return nil, err
	}
	if err := checkSchemas(fs, schemaPatchOp, schemaPatchOp); err != nil {
		return nil, err
	}
	for k, f := range fs {
		if k != "schemas" && k != "operations" {
			return nil, badRequest(invalidSyntax, "unknown member %s in PatchOp", q(f.name))
		}
	}
	arr, ok := fs["operations"].val.([]any)
	if !ok || len(arr) == 0 {
		return nil, badRequest(invalidSyntax, "Operations must be a non-empty array")
	}
	ops := make([]patchOp, 0, len(arr))
	for i, x := range arr {
		om, ok := x.(map[string]any)
		if !ok {
			return nil, badRequest(invalidSyntax, "operation %d is not an object", i)
		}
		ofs, err := foldKeys(om)
		if err != nil {
			return nil, err
		}
		var op patchOp
		for k, f := range ofs {
			switch k {
			case "op":
				s, _ := f.val.(string)
				op.op = strings.ToLower(s)
			case "path":
				switch p := f.val.(type) {
				case nil:
				case string:
					op.path = strings.TrimSpace(p)
				default:
					return nil, badRequest(invalidPath, "operation %d: path must be a string", i)
				}
			case "value":
				op.value, op.hasValue = f.val, true
			default:
				return nil, badRequest(invalidSyntax, "operation %d: unknown member %s", i, q(f.name))
			}
		}
		switch op.op {
		case "add", "replace":
			if !op.hasValue {
				return nil, badRequest(invalidSyntax, "operation %d: %s needs a value", i, op.op)
			}
		case "remove":
			if op.path == "" {
				return nil, badRequest(noTarget, "operation %d: remove needs a path", i)
			}
		default:
			return nil, badRequest(invalidSyntax, "operation %d: op must be add, replace or remove", i)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// applyPatch decodes, parses and applies a PATCH body: what the fuzz test
// drives.
func applyPatch(u User, body []byte, log *slog.Logger) (User, error) {
	m, err := decodeObject(body)
	if err != nil {
		return User{}, err
	}
	ops, err := parsePatch(m)
	if err != nil {
		return User{}, err
	}
	return applyOps(u, ops, log)
}

// applyOps applies every operation to a copy of u, or none: the first
// failure fails the request and nothing is stored.
func applyOps(u User, ops []patchOp, log *slog.Logger) (User, error) {
	u = cloneUser(u)
	for _, op := range ops {
		if err := applyOp(&u, op, log); err != nil {
			return User{}, err
		}
	}
	if u.UserName == "" {
		return User{}, badRequest(invalidValue, "userName is required")
	}
	for _, e := range u.Emails {
		if e.Value == "" {
			return User{}, badRequest(invalidValue, "an emails value needs a value")
		}
	}
	return u, onePrimary(u.Emails)
}

func applyOp(u *User, op patchOp, log *slog.Logger) error {
	if op.path != "" {
		p, err := parsePath(op.path)
		if err != nil {
			return err
		}
		return applyAt(u, op.op, p, op.value, op.hasValue, log)
	}
	// No path: the value is an object of attributes, each applied as if it
	// were the path (RFC 7644 §3.5.2.1, §3.5.2.3). Okta deactivates with
	// {"active":false}; Entra ID sends dotted and URN-qualified names.
	obj, ok := op.value.(map[string]any)
	if !ok {
		return badRequest(invalidValue, "%s without a path takes an object of attributes, not %s", op.op, typeName(op.value))
	}
	fs, err := foldKeys(obj)
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(fs) {
		f := fs[k]
		switch k {
		case "schemas", "meta":
			continue
		case "id":
			if s, ok := f.val.(string); ok && s == u.ID {
				continue // Okta repeats the id
			}
			return badRequest(mutability, "id is read-only")
		}
		p, err := parsePath(f.name)
		if err != nil {
			return err
		}
		if err := applyAt(u, op.op, p, f.val, true, log); err != nil {
			return err
		}
	}
	return nil
}

// applyAt applies one operation at a parsed path.
func applyAt(u *User, op string, p attrPath, v any, hasValue bool, log *slog.Logger) error {
	remove := op == "remove"
	if p.ext {
		log.Debug("scim: enterprise extension attribute ignored", "path", p.raw)
		return nil
	}
	if p.filter != nil && p.attr != "emails" && p.attr != "roles" && !isIgnored(p.attr) {
		return badRequest(invalidPath, "%s is not multi-valued", q(p.attr))
	}
	switch p.attr {
	case "username", "displayname", "externalid", "active":
		if p.sub != "" {
			return badRequest(invalidPath, "%s has no sub-attributes", q(p.attr))
		}
	}
	switch p.attr {
	case "username":
		if remove {
			return badRequest(invalidValue, "userName is required")
		}
		s, err := asString(v, "userName")
		if err == nil && s == "" {
			err = badRequest(invalidValue, "userName is required")
		}
		u.UserName = s
		return err
	case "displayname":
		return setString(&u.DisplayName, "displayName", v, remove)
	case "externalid":
		return setString(&u.ExternalID, "externalId", v, remove)
	case "active":
		if remove {
			// An unassigned administrative status grants nothing.
			u.Active = false
			return nil
		}
		b, err := asBool(v, "active")
		if err != nil {
			return err
		}
		u.Active = b
		return nil
	case "name":
		switch {
		case p.sub != "":
			return setNameSub(u, p.sub, p.sub, v, remove)
		case remove:
			return setName(u, nil)
		}
		if v == nil {
			return setName(u, nil)
		}
		return setName(u, v)
	case "emails":
		return applyEmails(u, op, p, v, hasValue)
	case "roles":
		return applyRoles(u, op, p, v, hasValue)
	case "schemas":
		return badRequest(invalidPath, "schemas cannot be patched")
	}
	if readOnlyAttrs[p.attr] {
		return badRequest(mutability, "%s is read-only", p.attr)
	}
	if isIgnored(p.attr) {
		if p.attr == "password" {
			log.Debug("scim: password ignored")
		} else {
			log.Debug("scim: attribute not kept, ignored", "path", p.raw)
		}
		return nil
	}
	return badRequest(invalidPath, "unknown attribute %s", q(p.attr))
}

func isIgnored(attr string) bool {
	_, ok := ignoredAttrs[attr]
	return ok
}

func setString(dst *string, attr string, v any, remove bool) error {
	if remove {
		*dst = ""
		return nil
	}
	s, err := asString(v, attr)
	if err == nil {
		*dst = s
	}
	return err
}

// applyEmails handles every path on "emails".
func applyEmails(u *User, op string, p attrPath, v any, hasValue bool) error {
	if p.sub != "" && !multiSubAttrs[p.sub] {
		return badRequest(invalidPath, "unknown sub-attribute emails.%s", p.sub)
	}
	if p.filter != nil {
		if err := checkEmailFilter(p.filter); err != nil {
			return err
		}
	}
	switch {
	case p.filter == nil && p.sub == "":
		switch op {
		case "remove":
			if !hasValue || v == nil {
				u.Emails = nil
				return nil
			}
			// Entra ID style: remove the listed values.
			drop, err := asEmails(v, true)
			if err != nil {
				return err
			}
			u.Emails = slicesDeleteFunc(u.Emails, func(e Email) bool {
				for _, d := range drop {
					if strings.EqualFold(d.Value, e.Value) {
						return true
					}
				}
				return false
			})
			return nil
		case "replace":
			es, err := asEmails(v, true)
			u.Emails = es
			return err
		}
		es, err := asEmails(v, true)
		if err != nil {
			return err
		}
		for _, e := range es {
			addEmail(u, e)
		}
		return nil
	case p.filter == nil:
		// emails.type and the like: every value (RFC 7644 §3.5.2).
		if len(u.Emails) == 0 && op != "remove" {
			u.Emails = []Email{{}}
		}
		idx := make([]int, len(u.Emails))
		for i := range idx {
			idx[i] = i
		}
		return setEmailSub(u, idx, op, p.sub, v)
	}
	var idx []int
	for i, e := range u.Emails {
		if p.filter.matchEmail(e) {
			idx = append(idx, i)
		}
	}
	if op == "remove" {
		if p.sub == "" {
			u.Emails = slicesDeleteFunc(u.Emails, p.filter.matchEmail)
			return nil
		}
		return setEmailSub(u, idx, op, p.sub, v)
	}
	if len(idx) == 0 {
		// No value matches: make one from the filter's terms, so that
		// `emails[type eq "work"].value` sets the work email whether or not
		// there was one. (For replace, RFC 7644 §3.5.2.3 says noTarget;
		// failing here could fail a PATCH that also deactivates.)
		var e Email
		for _, c := range p.filter {
			switch c.attr {
			case "value":
				e.Value, _ = c.value.(string)
			case "type":
				e.Type, _ = c.value.(string)
			case "primary":
				e.Primary, _ = condBool(c.value)
			}
		}
		if p.sub == "" {
			ne, err := mergeEmail(e, v)
			if err != nil {
				return err
			}
			addEmail(u, ne)
			return nil
		}
		u.Emails = append(u.Emails, e)
		idx = []int{len(u.Emails) - 1}
	}
	if p.sub == "" {
		for _, i := range idx {
			base := u.Emails[i]
			if op == "replace" {
				base = Email{}
			}
			ne, err := mergeEmail(base, v)
			if err != nil {
				return err
			}
			u.Emails[i] = ne
			if ne.Primary {
				clearPrimary(u, i)
			}
		}
		return nil
	}
	return setEmailSub(u, idx, op, p.sub, v)
}

// setEmailSub sets or removes one sub-attribute of the listed emails. A
// removed value removes the email.
func setEmailSub(u *User, idx []int, op, sub string, v any) error {
	var drop []int
	for _, i := range idx {
		e := &u.Emails[i]
		switch sub {
		case "value":
			if op == "remove" {
				drop = append(drop, i)
				continue
			}
			s, err := asString(v, "emails.value")
			if err != nil {
				return err
			}
			if s == "" {
				drop = append(drop, i)
			}
			e.Value = s
		case "type":
			if err := setString(&e.Type, "emails.type", v, op == "remove"); err != nil {
				return err
			}
		case "primary":
			if op == "remove" || v == nil {
				e.Primary = false
				continue
			}
			b, err := asBool(v, "emails.primary")
			if err != nil {
				return err
			}
			e.Primary = b
			if b {
				clearPrimary(u, i)
			}
		default: // display, $ref: not kept
			if op != "remove" {
				if _, err := asString(v, "emails."+sub); err != nil {
					return err
				}
			}
		}
	}
	for k := len(drop) - 1; k >= 0; k-- {
		i := drop[k]
		u.Emails = append(u.Emails[:i], u.Emails[i+1:]...)
	}
	return nil
}

// mergeEmail applies an object's sub-attributes over e.
func mergeEmail(e Email, v any) (Email, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return e, badRequest(invalidValue, "an emails value must be an object, not %s", typeName(v))
	}
	fs, err := foldKeys(m)
	if err != nil {
		return e, err
	}
	withValue := map[string]any{"value": e.Value, "type": e.Type, "primary": e.Primary}
	for k, f := range fs {
		withValue[k] = f.val
	}
	return asEmail(withValue)
}

// addEmail adds e unless an equal value is there (then it updates it); a
// new primary clears the others (RFC 7644 §3.5.2).
func addEmail(u *User, e Email) {
	i := -1
	for j, x := range u.Emails {
		if strings.EqualFold(x.Value, e.Value) && strings.EqualFold(x.Type, e.Type) {
			i = j
		}
	}
	if i < 0 {
		u.Emails = append(u.Emails, e)
		i = len(u.Emails) - 1
	} else {
		u.Emails[i] = e
	}
	if e.Primary {
		clearPrimary(u, i)
	}
}

func clearPrimary(u *User, keep int) {
	for j := range u.Emails {
		if j != keep {
			u.Emails[j].Primary = false
		}
	}
}

func slicesDeleteFunc[T any](s []T, del func(T) bool) []T {
	out := s[:0]
	for _, x := range s {
		if !del(x) {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// applyRoles handles every path on "roles". Only values are kept, so a
// filter may only test value.
func applyRoles(u *User, op string, p attrPath, v any, hasValue bool) error {
	if p.sub != "" && !multiSubAttrs[p.sub] {
		return badRequest(invalidPath, "unknown sub-attribute roles.%s", p.sub)
	}
	for _, c := range p.filter {
		if _, ok := c.value.(string); c.attr != "value" || !ok {
			return badRequest(invalidFilter, "roles can only be filtered on value")
		}
	}
	if p.sub != "" && p.sub != "value" {
		return nil // display, type, primary: not kept
	}
	if p.filter == nil {
		switch {
		case op == "remove" && (!hasValue || v == nil):
			u.Roles = nil
			return nil
		case op == "remove":
			drop, err := asRoles(v, true)
			if err != nil {
				return err
			}
			u.Roles = slicesDeleteFunc(u.Roles, func(r string) bool { return contains(drop, r) })
			return nil
		case op == "replace":
			rs, err := asRoles(v, true)
			u.Roles = rs
			return err
		}
		rs, err := asRoles(v, true)
		if err != nil {
			return err
		}
		for _, r := range rs {
			u.Roles = appendRole(u.Roles, r)
		}
		return nil
	}
	match := func(r string) bool {
		for _, c := range p.filter {
			if c.value.(string) != r {
				return false
			}
		}
		return true
	}
	if op == "remove" {
		u.Roles = slicesDeleteFunc(u.Roles, match)
		return nil
	}
	var nv string
	var err error
	if p.sub == "value" {
		nv, err = asString(v, "roles.value")
	} else {
		nv, err = asRole(v)
	}
	if err != nil {
		return err
	}
	kept := slicesDeleteFunc(u.Roles, match)
	if nv != "" {
		kept = appendRole(kept, nv)
	}
	u.Roles = kept
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
