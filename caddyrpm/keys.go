package caddyrpm

import (
	"net/http"
	"strings"
)

// maxKeyLen bounds accepted keys; longer ones are malformed, not looked up.
const maxKeyLen = 256

// extractKey finds the API key in the first source that has one. Malformed
// input yields an error for the client, never a lookup.
func (h *Handler) extractKey(r *http.Request) (string, *apiError) {
	for _, src := range h.KeySources {
		values := r.Header.Values(src.Header)
		if len(values) == 0 {
			continue
		}
		if len(values) > 1 {
			return "", errMultipleKeys.withDetail("the " + src.Header + " header appears more than once")
		}
		key := values[0]
		if src.Scheme != "" {
			scheme, rest, found := strings.Cut(strings.TrimSpace(key), " ")
			if !strings.EqualFold(scheme, src.Scheme) {
				// Another scheme (e.g. Basic) is not our credential; try the
				// next source.
				continue
			}
			if !found {
				rest = ""
			}
			key = rest
		}
		key = strings.TrimSpace(key)
		if key == "" {
			return "", errKeyRequired.withDetail("the " + src.Header + " header carries an empty key")
		}
		return key, checkKeyShape(key)
	}
	if h.KeyQuery != "" {
		values := r.URL.Query()[h.KeyQuery]
		switch {
		case len(values) > 1:
			return "", errMultipleKeys.withDetail("the " + h.KeyQuery + " query parameter appears more than once")
		case len(values) == 1 && values[0] != "":
			return values[0], checkKeyShape(values[0])
		}
	}
	return "", errKeyRequired
}

// checkKeyShape rejects keys no store can hold: too long, or with bytes
// outside printable ASCII.
func checkKeyShape(key string) *apiError {
	if len(key) > maxKeyLen {
		return errInvalidKey.withDetail("the API key is too long")
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x21 || c > 0x7e {
			return errInvalidKey.withDetail("the API key contains characters that are not printable ASCII")
		}
	}
	return nil
}
