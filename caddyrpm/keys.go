package caddyrpm

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/store"
)

// extractKey finds the API key in the first source that has one. Malformed
// input yields an error for the client, never a lookup.
func (h *Handler) extractKey(r *http.Request) (string, *apiError) {
	for _, src := range h.KeySources {
		values := r.Header[src.Header] // canonical names: see KeySource.Header
		if len(values) == 0 {
			continue
		}
		if len(values) > 1 {
			return "", errMultipleKeys.withDetail("the " + src.Header + " header appears more than once")
		}
		key, ours := src.credential(values[0])
		if !ours {
			// Another scheme (e.g. Basic) is not our credential; try the
			// next source.
			continue
		}
		if key == "" {
			return "", errKeyRequired.withDetail("the " + src.Header + " header carries an empty key")
		}
		return key, checkKeyShape(key)
	}
	if h.KeyQuery != "" {
		value, n := queryParam(r.URL.RawQuery, h.KeyQuery)
		switch {
		case n > 1:
			return "", errMultipleKeys.withDetail("the " + h.KeyQuery + " query parameter appears more than once")
		case n == 1 && value != "":
			key, err := url.QueryUnescape(value)
			if err != nil {
				return "", errInvalidKey.withDetail("the " + h.KeyQuery + " query parameter is not validly escaped")
			}
			return key, checkKeyShape(key)
		}
	}
	return "", errKeyRequired
}

// credential returns the key a value of the source's header carries, and
// whether the value is ours at all: with a scheme, a value of another
// scheme (e.g. Basic) belongs to someone else.
func (src KeySource) credential(value string) (key string, ours bool) {
	return gateway.Credential(value, src.Scheme)
}

// The query parameter that carries the key is found and removed on the raw
// query, with one rule for both, so that what is authenticated is what is
// removed and every other byte reaches the upstream as sent (re-encoding
// the query would break request signatures). Pairs are separated by '&'
// only; a ';' is part of the name or value it stands in. A pair is the key
// parameter when the unescaped text before its first '=' is the name.

// queryParam returns the raw value of the first pair named name and how
// many pairs have that name.
func queryParam(rawQuery, name string) (value string, n int) {
	for rest := rawQuery; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if v, ok := pairNamed(pair, name); ok {
			if n == 0 {
				value = v
			}
			n++
		}
	}
	return value, n
}

// withoutQueryParam returns rawQuery without the pairs named name (and one
// '&' each); the rest is unchanged.
func withoutQueryParam(rawQuery, name string) string {
	var b strings.Builder
	removed := false
	first := true
	for rest := rawQuery; ; {
		pair, tail, more := strings.Cut(rest, "&")
		if _, ok := pairNamed(pair, name); ok {
			removed = true
		} else {
			if !first {
				b.WriteByte('&')
			}
			b.WriteString(pair)
			first = false
		}
		if !more {
			break
		}
		rest = tail
	}
	if !removed {
		return rawQuery
	}
	return b.String()
}

// pairNamed reports whether the raw pair "k=v" (or "k") is named name, and
// returns its raw value.
func pairNamed(pair, name string) (string, bool) {
	k, v, _ := strings.Cut(pair, "=")
	if k == name {
		return v, true
	}
	if !strings.ContainsAny(k, "%+") {
		return "", false
	}
	uk, err := url.QueryUnescape(k)
	return v, err == nil && uk == name
}

// checkKeyShape rejects keys no store can hold (store.CheckKeyShape).
func checkKeyShape(key string) *apiError {
	if err := store.CheckKeyShape(key); err != nil {
		return errInvalidKey.withDetail(err.Error())
	}
	return nil
}
