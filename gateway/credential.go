package gateway

import "strings"

// Credential returns the credential a header value carries under an auth
// scheme such as "Bearer" (matched case-insensitively), and whether the
// value uses that scheme at all: a value of another scheme (e.g. Basic)
// belongs to someone else. With scheme "" the whole value is the
// credential. Surrounding white space is trimmed; the credential may be
// empty. It is the one parser of API keys and of the admin token.
func Credential(value, scheme string) (cred string, ours bool) {
	value = strings.TrimSpace(value)
	if scheme == "" {
		return value, true
	}
	got, rest, _ := strings.Cut(value, " ")
	if !strings.EqualFold(got, scheme) {
		return "", false
	}
	return strings.TrimSpace(rest), true
}
