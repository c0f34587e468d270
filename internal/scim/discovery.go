package scim

import (
	"net/http"
	"net/url"
	"strings"
)

// The discovery endpoints (RFC 7644 §4, RFC 7643 §5-7) describe what is
// kept and supported, not everything that is tolerated.

func (h *handler) serviceProviderConfig() map[string]any {
	return map[string]any{
		"schemas":          []string{schemaSPConfig},
		"documentationUri": "https://www.rfc-editor.org/rfc/rfc7644",
		"patch":            map[string]any{"supported": true},
		"bulk":             map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":           map[string]any{"supported": true, "maxResults": maxResults},
		"changePassword":   map[string]any{"supported": false},
		"sort":             map[string]any{"supported": false},
		"etag":             map[string]any{"supported": false},
		"authenticationSchemes": []map[string]any{{
			"type":        "oauthbearertoken",
			"name":        "OAuth Bearer Token",
			"description": "Authentication with a bearer token in the Authorization header",
			"specUri":     "https://www.rfc-editor.org/rfc/rfc6750",
			"primary":     true,
		}},
		"meta": map[string]any{"resourceType": "ServiceProviderConfig", "location": h.location("/ServiceProviderConfig")},
	}
}

func (h *handler) userResourceType() map[string]any {
	return map[string]any{
		"schemas":          []string{schemaResourceType},
		"id":               "User",
		"name":             "User",
		"endpoint":         "/Users",
		"description":      "User Account",
		"schema":           schemaUser,
		"schemaExtensions": []any{},
		"meta":             map[string]any{"resourceType": "ResourceType", "location": h.location("/ResourceTypes/User")},
	}
}

func (h *handler) resourceTypes(w http.ResponseWriter, rest []string) error {
	if len(rest) == 1 {
		if !strings.EqualFold(rest[0], "User") {
			return errorf(http.StatusNotFound, "", "no such resource type")
		}
		writeJSON(w, http.StatusOK, h.userResourceType())
		return nil
	}
	writeJSON(w, http.StatusOK, list(h.userResourceType()))
	return nil
}

func (h *handler) schemas(w http.ResponseWriter, rest []string) error {
	if len(rest) == 1 {
		if !strings.EqualFold(rest[0], schemaUser) {
			return errorf(http.StatusNotFound, "", "no such schema")
		}
		writeJSON(w, http.StatusOK, h.userSchema())
		return nil
	}
	writeJSON(w, http.StatusOK, list(h.userSchema()))
	return nil
}

func list(rs ...map[string]any) listResponse {
	return listResponse{Schemas: []string{schemaListResponse}, TotalResults: len(rs), StartIndex: 1, ItemsPerPage: len(rs), Resources: rs}
}

// attrDef describes an attribute (RFC 7643 §7).
func attrDef(name, typ string, multi, required bool, mut string, caseExact bool, uniq string, subs ...map[string]any) map[string]any {
	a := map[string]any{
		"name": name, "type": typ, "multiValued": multi, "required": required,
		"caseExact": caseExact, "mutability": mut, "returned": "default", "uniqueness": uniq,
	}
	if len(subs) > 0 {
		a["subAttributes"] = subs
	}
	return a
}

func (h *handler) userSchema() map[string]any {
	str := func(name string) map[string]any {
		return attrDef(name, "string", false, false, "readWrite", false, "none")
	}
	return map[string]any{
		"schemas":     []string{schemaSchema},
		"id":          schemaUser,
		"name":        "User",
		"description": "User Account",
		"attributes": []map[string]any{
			attrDef("userName", "string", false, true, "readWrite", false, "server"),
			attrDef("name", "complex", false, false, "readWrite", false, "none",
				str("formatted"), str("familyName"), str("givenName")),
			str("displayName"),
			attrDef("active", "boolean", false, false, "readWrite", false, "none"),
			attrDef("emails", "complex", true, false, "readWrite", false, "none",
				str("value"), str("type"), attrDef("primary", "boolean", false, false, "readWrite", false, "none")),
			attrDef("roles", "complex", true, false, "readWrite", false, "none", str("value")),
		},
		"meta": map[string]any{"resourceType": "Schema", "location": h.location("/Schemas/" + url.PathEscape(schemaUser))},
	}
}
