package scim

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// userFromResource reads a POST or PUT body. old is the stored user for a
// PUT, nil for a POST. A PUT that leaves "active" out keeps the stored
// value (it neither reactivates nor deactivates by omission); a POST that
// leaves it out creates an active user.
func (h *handler) userFromResource(m map[string]any, old *User) (User, error) {
	fs, err := foldKeys(m)
	if err != nil {
		return User{}, err
	}
	if err := checkSchemas(fs, schemaUser, schemaUser, schemaEnterpriseUser); err != nil {
		return User{}, err
	}
	var u User
	activeSet := false
	for _, k := range sortedKeys(fs) {
		f := fs[k]
		switch {
		case k == "schemas" || readOnlyAttrs[k]:
			// Read-only: ignored (RFC 7644 §3.5.1).
		case k == "username":
			u.UserName, err = asString(f.val, "userName")
		case k == "externalid":
			u.ExternalID, err = asString(f.val, "externalId")
		case k == "displayname":
			u.DisplayName, err = asString(f.val, "displayName")
		case k == "name":
			err = setName(&u, f.val)
		case k == "active":
			u.Active, err = asBool(f.val, "active")
			activeSet = true
		case k == "emails":
			u.Emails, err = asEmails(f.val, false)
		case k == "roles":
			u.Roles, err = asRoles(f.val, false)
		case k == strings.ToLower(schemaEnterpriseUser):
			if _, ok := f.val.(map[string]any); !ok && f.val != nil {
				err = badRequest(invalidValue, "%s must be an object", schemaEnterpriseUser)
			} else {
				h.log.Debug("scim: enterprise extension attributes ignored")
			}
		default:
			multi, known := ignoredAttrs[k]
			switch {
			case !known:
				err = badRequest(invalidSyntax, "unknown attribute %s", q(f.name))
			case multi:
				_, err = asArray(f.val, f.name, false)
			default:
				_, err = asString(f.val, f.name)
			}
		}
		if err != nil {
			return User{}, err
		}
	}
	if u.UserName == "" {
		return User{}, badRequest(invalidValue, "userName is required")
	}
	if !activeSet {
		u.Active = old == nil || old.Active
	}
	return u, nil
}

// checkSchemas requires "schemas" to be an array of known URNs including
// required.
func checkSchemas(fs map[string]field, required string, known ...string) error {
	f, ok := fs["schemas"]
	if !ok {
		return badRequest(invalidSyntax, "schemas is required")
	}
	a, ok := f.val.([]any)
	if !ok {
		return badRequest(invalidSyntax, "schemas must be an array of URNs")
	}
	found := false
	for _, x := range a {
		s, ok := x.(string)
		if !ok {
			return badRequest(invalidSyntax, "schemas must be an array of URNs")
		}
		isKnown := false
		for _, k := range known {
			if strings.EqualFold(s, k) {
				isKnown = true
			}
		}
		if !isKnown {
			return badRequest(invalidSyntax, "unsupported schema %s", q(s))
		}
		if strings.EqualFold(s, required) {
			found = true
		}
	}
	if !found {
		return badRequest(invalidSyntax, "schemas must include %s", required)
	}
	return nil
}

func (h *handler) createUser(w http.ResponseWriter, r *http.Request) error {
	m, err := h.readObject(w, r)
	if err != nil {
		return err
	}
	u, err := h.userFromResource(m, nil)
	if err != nil {
		return err
	}
	now := h.now().UTC()
	u.ID, u.Created, u.LastModified = newID(), now, now
	out, err := h.dir.CreateUser(r.Context(), u)
	if err != nil {
		return storeError(err)
	}
	if out.ID == "" {
		return errors.New("scim: the directory returned a user without an id")
	}
	h.log.Info("scim user created", "id", out.ID, "active", out.Active)
	w.Header().Set("Location", h.location("/Users/"+url.PathEscape(out.ID)))
	writeJSON(w, http.StatusCreated, h.resource(out))
	return nil
}

func (h *handler) getUser(w http.ResponseWriter, r *http.Request, id string) error {
	u, err := h.dir.GetUser(r.Context(), id)
	if err != nil {
		return storeError(err)
	}
	writeJSON(w, http.StatusOK, h.resource(u))
	return nil
}

func (h *handler) replaceUser(w http.ResponseWriter, r *http.Request, id string) error {
	m, err := h.readObject(w, r)
	if err != nil {
		return err
	}
	old, err := h.dir.GetUser(r.Context(), id)
	if err != nil {
		return storeError(err)
	}
	u, err := h.userFromResource(m, &old)
	if err != nil {
		return err
	}
	return h.store(w, r, old, u, "PUT")
}

func (h *handler) patchUser(w http.ResponseWriter, r *http.Request, id string) error {
	m, err := h.readObject(w, r)
	if err != nil {
		return err
	}
	ops, err := parsePatch(m)
	if err != nil {
		return err
	}
	old, err := h.dir.GetUser(r.Context(), id)
	if err != nil {
		return storeError(err)
	}
	u, err := applyOps(old, ops, h.log)
	if err != nil {
		return err
	}
	return h.store(w, r, old, u, "PATCH")
}

// store writes a replaced or patched user and answers with it.
func (h *handler) store(w http.ResponseWriter, r *http.Request, old, u User, how string) error {
	u.ID, u.Created, u.LastModified = old.ID, old.Created, h.now().UTC()
	out, err := h.dir.ReplaceUser(r.Context(), u)
	if err != nil {
		return storeError(err)
	}
	switch {
	case old.Active && !out.Active:
		h.log.Info("scim user deactivated", "id", out.ID, "via", how)
	case !old.Active && out.Active:
		h.log.Info("scim user reactivated", "id", out.ID, "via", how)
	}
	writeJSON(w, http.StatusOK, h.resource(out))
	return nil
}

func (h *handler) deleteUser(w http.ResponseWriter, r *http.Request, id string) error {
	if err := h.dir.DeleteUser(r.Context(), id); err != nil {
		return storeError(err)
	}
	h.log.Info("scim user deleted", "id", id)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func storeError(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return &apiError{status: http.StatusNotFound, detail: "no such user", err: err}
	case errors.Is(err, ErrConflict):
		return &apiError{status: http.StatusConflict, scimType: uniqueness, detail: "userName is already taken", err: err}
	case errors.Is(err, ErrInvalidValue):
		return &apiError{status: http.StatusBadRequest, scimType: invalidValue, detail: err.Error(), err: err}
	}
	return err
}

func (h *handler) listUsers(w http.ResponseWriter, r *http.Request) error {
	qv := r.URL.Query()
	startIndex, count := 1, defaultCount
	if s := qv.Get("startIndex"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return badRequest(invalidValue, "startIndex must be an integer")
		}
		startIndex = max(n, 1) // RFC 7644 §3.4.2.4: less than 1 means 1
	}
	if s := qv.Get("count"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return badRequest(invalidValue, "count must be an integer")
		}
		count = min(max(n, 0), maxResults) // negative means 0
	}
	f, err := parseFilter(qv.Get("filter"))
	if err != nil {
		return err
	}
	users, total, err := h.query(r, f, startIndex, count)
	if err != nil {
		return err
	}
	res := make([]userResource, 0, len(users))
	for _, u := range users {
		res = append(res, h.resource(u))
	}
	writeJSON(w, http.StatusOK, listResponse{
		Schemas:      []string{schemaListResponse},
		TotalResults: total,
		StartIndex:   startIndex,
		ItemsPerPage: len(res),
		Resources:    res,
	})
	return nil
}

// query runs a parsed filter: directly against the Directory when one
// Filter says it all, otherwise over the candidates of the most selective
// clause, checked here against every clause.
func (h *handler) query(r *http.Request, f filter, startIndex, count int) ([]User, int, error) {
	ctx := r.Context()
	if len(f) == 0 {
		return h.dir.ListUsers(ctx, Filter{}, startIndex, count)
	}
	if len(f) == 1 && f[0].exact && f[0].id == "" {
		return h.dir.ListUsers(ctx, f[0].dir, startIndex, count)
	}
	var cands []User
	if id := f.id(); id != "" {
		u, err := h.dir.GetUser(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, 0, err
		default:
			cands = []User{u}
		}
	} else {
		us, total, err := h.dir.ListUsers(ctx, f[0].dir, 1, maxCandidates)
		if err != nil {
			return nil, 0, err
		}
		if total > len(us) {
			return nil, 0, badRequest(tooMany, "the filter matches too many users to evaluate; narrow it")
		}
		cands = us
	}
	var matched []User
	for _, u := range cands {
		if f.match(u) {
			matched = append(matched, u)
		}
	}
	total := len(matched)
	lo := min(startIndex-1, total)
	hi := min(lo+count, total)
	return matched[lo:hi], total, nil
}

func (h *handler) location(rel string) string { return h.baseURL + rel }

type listResponse struct {
	Schemas      []string `json:"schemas"`
	TotalResults int      `json:"totalResults"`
	StartIndex   int      `json:"startIndex"`
	ItemsPerPage int      `json:"itemsPerPage"`
	Resources    any      `json:"Resources"`
}

type nameJSON struct {
	Formatted  string `json:"formatted,omitempty"`
	FamilyName string `json:"familyName,omitempty"`
	GivenName  string `json:"givenName,omitempty"`
}

type emailJSON struct {
	Value   string `json:"value"`
	Type    string `json:"type,omitempty"`
	Primary bool   `json:"primary,omitempty"`
}

type roleJSON struct {
	Value string `json:"value"`
}

type metaJSON struct {
	ResourceType string `json:"resourceType"`
	Created      string `json:"created,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
	Location     string `json:"location,omitempty"`
}

// userResource is the JSON form of a User. Absent values are left out
// rather than sent as null (Entra ID asks for that).
type userResource struct {
	Schemas     []string    `json:"schemas"`
	ID          string      `json:"id"`
	ExternalID  string      `json:"externalId,omitempty"`
	UserName    string      `json:"userName"`
	Name        *nameJSON   `json:"name,omitempty"`
	DisplayName string      `json:"displayName,omitempty"`
	Active      bool        `json:"active"`
	Emails      []emailJSON `json:"emails,omitempty"`
	Roles       []roleJSON  `json:"roles,omitempty"`
	Meta        metaJSON    `json:"meta"`
}

func scimTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func (h *handler) resource(u User) userResource {
	res := userResource{
		Schemas:     []string{schemaUser},
		ID:          u.ID,
		ExternalID:  u.ExternalID,
		UserName:    u.UserName,
		DisplayName: u.DisplayName,
		Active:      u.Active,
		Meta: metaJSON{
			ResourceType: "User",
			Created:      scimTime(u.Created),
			LastModified: scimTime(u.LastModified),
			Location:     h.location("/Users/" + url.PathEscape(u.ID)),
		},
	}
	if u.GivenName != "" || u.FamilyName != "" || u.Formatted != "" {
		res.Name = &nameJSON{Formatted: u.Formatted, FamilyName: u.FamilyName, GivenName: u.GivenName}
	}
	for _, e := range u.Emails {
		res.Emails = append(res.Emails, emailJSON(e))
	}
	for _, r := range u.Roles {
		res.Roles = append(res.Roles, roleJSON{Value: r})
	}
	return res
}
