package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/interlock-dev/interlock/internal/audit"
	"github.com/interlock-dev/interlock/internal/scim"
	"github.com/interlock-dev/interlock/internal/store"
)

// SCIMBy is who SCIM changes are made by, in the audit log and in agents'
// state history.
const SCIMBy = "scim"

// SCIMDirectory is the registry's users as a scim.Directory: the identity
// provider's view of interlock's owners and approvers.
//
// Mapping (documented in docs/identity.md):
//   - userName is the user's email (it must be an email address; when it is
//     not, the primary, else the first, of "emails" is used; neither is a
//     400). Lookups by userName and by emails.value are by email,
//     case-insensitive.
//   - externalId is kept (case-exact); displayName, else name.formatted,
//     else "givenName familyName", is the user's name.
//   - active false runs the kill switch (Lifecycle.DeactivateUser); active
//     true makes the user active again but does not reactivate agents
//     orphaned meanwhile. DELETE deactivates and marks the user deleted:
//     GET then answers 404, but the user stays stored for the audit
//     history and the orphaned agents; a later POST of the same userName
//     brings the user back (still without its agents).
//   - roles are managed in interlock only (they grant approval rights):
//     roles sent over SCIM are ignored and the user's interlock roles are
//     returned, read-only.
//   - All users are visible, local ones too (so that a provider's first
//     sync matches the users created locally by userName); a user written
//     over SCIM gets Source "scim".
type SCIMDirectory struct {
	r *Registry
	l *Lifecycle
}

// NewSCIMDirectory returns the Directory over l's registry.
func NewSCIMDirectory(l *Lifecycle) *SCIMDirectory { return &SCIMDirectory{r: l.r, l: l} }

var _ scim.Directory = (*SCIMDirectory)(nil)

func toSCIM(u store.User) scim.User {
	return scim.User{
		ID: u.ID, ExternalID: u.ExternalID, UserName: u.Email, DisplayName: u.Name,
		Emails: []scim.Email{{Value: u.Email, Type: "work", Primary: true}},
		Active: u.Active, Roles: u.Roles, Created: u.CreatedAt, LastModified: u.UpdatedAt,
	}
}

// scimEmail picks the email of a SCIM user.
func scimEmail(u scim.User) (string, error) {
	if e, err := parseEmail(u.UserName); err == nil {
		return e, nil
	}
	cands := make([]string, 0, len(u.Emails))
	for _, e := range u.Emails {
		if e.Primary {
			cands = append([]string{e.Value}, cands...)
		} else {
			cands = append(cands, e.Value)
		}
	}
	if len(cands) > 0 {
		if e, err := parseEmail(cands[0]); err == nil {
			return e, nil
		}
	}
	return "", fmt.Errorf("%w: userName %q is not an email address and no usable email is given", scim.ErrInvalidValue, u.UserName)
}

func scimName(u scim.User) string {
	switch {
	case strings.TrimSpace(u.DisplayName) != "":
		return strings.TrimSpace(u.DisplayName)
	case strings.TrimSpace(u.Formatted) != "":
		return strings.TrimSpace(u.Formatted)
	}
	return strings.TrimSpace(u.GivenName + " " + u.FamilyName)
}

func scimErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %w", scim.ErrNotFound, err)
	case errors.Is(err, store.ErrAlreadyExists):
		return fmt.Errorf("%w: %w", scim.ErrConflict, err)
	}
	return err
}

// CreateUser implements scim.Directory.
func (d *SCIMDirectory) CreateUser(ctx context.Context, su scim.User) (scim.User, error) {
	email, err := scimEmail(su)
	if err != nil {
		return scim.User{}, err
	}
	now := store.NormalizeTime(d.r.now())
	old, err := d.r.store.GetUserByEmail(ctx, email)
	switch {
	case err == nil && old.DeletedAt.IsZero():
		return scim.User{}, fmt.Errorf("%w: %s", scim.ErrConflict, email)
	case err == nil:
		// A deleted user provisioned again: the same person (or at least
		// the same address) comes back; the agents stay orphaned.
		u, err := d.r.UpdateUser(ctx, old.ID, func(x store.User) (store.User, error) {
			x.Name, x.ExternalID, x.Active, x.Source, x.UpdatedAt = scimName(su), su.ExternalID, su.Active, "scim", now
			x.DeletedAt = time.Time{}
			return x, nil
		})
		if err != nil {
			return scim.User{}, scimErr(err)
		}
		return toSCIM(u), d.auditUser(ctx, "user_created", u, map[string]any{"restored": true})
	case !errors.Is(err, store.ErrNotFound):
		return scim.User{}, err
	}
	id, err := d.r.newID("usr_")
	if err != nil {
		return scim.User{}, err
	}
	u := store.User{ID: id, Email: email, Name: scimName(su), Active: su.Active, Source: "scim",
		ExternalID: su.ExternalID, CreatedAt: now, UpdatedAt: now}
	err = d.r.store.CreateUser(ctx, u)
	d.r.invalidate()
	if err != nil {
		return scim.User{}, scimErr(err)
	}
	return toSCIM(u), d.auditUser(ctx, "user_created", u, nil)
}

func (d *SCIMDirectory) auditUser(ctx context.Context, typ string, u store.User, extra map[string]any) error {
	data := map[string]any{"user_id": u.ID, "email": u.Email, "external_id": u.ExternalID, "active": u.Active, "by": SCIMBy}
	for k, v := range extra {
		data[k] = v
	}
	if _, err := d.l.o.Audit.Append(ctx, audit.Event{Type: typ, Data: data}); err != nil {
		return fmt.Errorf("registry: audit %s: %w", typ, err)
	}
	return nil
}

func (d *SCIMDirectory) get(ctx context.Context, id string) (store.User, error) {
	u, err := d.r.store.GetUser(ctx, id)
	if err != nil {
		return store.User{}, scimErr(err)
	}
	if !u.DeletedAt.IsZero() {
		return store.User{}, fmt.Errorf("%w: user %s was deleted", scim.ErrNotFound, id)
	}
	return u, nil
}

// GetUser implements scim.Directory. Deleted users are not found.
func (d *SCIMDirectory) GetUser(ctx context.Context, id string) (scim.User, error) {
	u, err := d.get(ctx, id)
	if err != nil {
		return scim.User{}, err
	}
	return toSCIM(u), nil
}

// ListUsers implements scim.Directory, in email order.
func (d *SCIMDirectory) ListUsers(ctx context.Context, f scim.Filter, startIndex, count int) ([]scim.User, int, error) {
	var users []store.User
	switch f.Attr {
	case "userName", "emails.value":
		u, err := d.r.store.GetUserByEmail(ctx, strings.TrimSpace(f.Value))
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, 0, err
		case u.DeletedAt.IsZero():
			users = []store.User{u}
		}
	default:
		all, err := d.r.store.ListUsers(ctx)
		if err != nil {
			return nil, 0, err
		}
		for _, u := range all {
			if u.DeletedAt.IsZero() && (f.Attr != "externalId" || u.ExternalID == f.Value) {
				users = append(users, u)
			}
		}
		if f.Attr != "" && f.Attr != "externalId" {
			return nil, 0, fmt.Errorf("registry: scim filter on %q is not supported", f.Attr)
		}
	}
	total := len(users)
	lo := min(max(startIndex, 1)-1, total)
	hi := min(lo+max(count, 0), total)
	out := make([]scim.User, 0, hi-lo)
	for _, u := range users[lo:hi] {
		out = append(out, toSCIM(u))
	}
	return out, total, nil
}

// ReplaceUser implements scim.Directory. A user turning inactive is
// deactivated first (the kill switch), before any other attribute is
// written; a user turning active is written, then activated.
func (d *SCIMDirectory) ReplaceUser(ctx context.Context, su scim.User) (scim.User, error) {
	old, err := d.get(ctx, su.ID)
	if err != nil {
		return scim.User{}, err
	}
	email, err := scimEmail(su)
	if err != nil {
		return scim.User{}, err
	}
	if old.Active && !su.Active {
		if _, _, err := d.l.DeactivateUser(ctx, old.ID, SCIMBy, "deactivated in the identity provider"); err != nil {
			// The user is inactive whatever else failed (it is written
			// first); the provider retries on an error and completes the
			// cascade.
			return scim.User{}, err
		}
	}
	name := scimName(su)
	now := store.NormalizeTime(d.r.now())
	changed := map[string]any{}
	u, err := d.r.UpdateUser(ctx, old.ID, func(x store.User) (store.User, error) {
		if x.Email != email {
			changed["email"] = map[string]string{"from": x.Email, "to": email}
		}
		if x.Name != name {
			changed["name"] = name
		}
		if x.ExternalID != su.ExternalID {
			changed["external_id"] = su.ExternalID
		}
		if len(changed) == 0 && x.Source == "scim" {
			return x, errUnchanged
		}
		x.Email, x.Name, x.ExternalID, x.Source, x.UpdatedAt = email, name, su.ExternalID, "scim", now
		return x, nil
	})
	switch {
	case errors.Is(err, errUnchanged):
		u, err = d.get(ctx, old.ID)
		if err != nil {
			return scim.User{}, err
		}
	case err != nil:
		return scim.User{}, scimErr(err)
	case len(changed) > 0:
		if err := d.auditUser(ctx, "user_updated", u, map[string]any{"changed": changed}); err != nil {
			return scim.User{}, err
		}
	}
	if !u.Active && su.Active {
		if u, err = d.l.ActivateUser(ctx, old.ID, SCIMBy, "activated in the identity provider"); err != nil {
			return scim.User{}, err
		}
	}
	return toSCIM(u), nil
}

// DeleteUser implements scim.Directory: deactivate (the kill switch) and
// mark deleted; nothing is removed.
func (d *SCIMDirectory) DeleteUser(ctx context.Context, id string) error {
	if _, err := d.get(ctx, id); err != nil {
		return err
	}
	_, _, err := d.l.DeleteUser(ctx, id, SCIMBy, "deleted in the identity provider")
	return err
}
