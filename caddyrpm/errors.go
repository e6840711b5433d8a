package caddyrpm

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is a refusal with its documented status and code.
type apiError struct {
	status  int
	code    string
	message string
}

// Error codes of refusals by a rate limit (the authentication codes are
// in the errors below).
const (
	codeUserRPM  = "USER_RPM_EXCEEDED"
	codeGroupRPM = "GROUP_RPM_EXCEEDED"
	codeRouteRPM = "ROUTE_RPM_EXCEEDED"
)

var (
	errKeyRequired        = &apiError{http.StatusUnauthorized, "API_KEY_REQUIRED", "An API key is required: send it as 'Authorization: Bearer <key>'."}
	errInvalidKey         = &apiError{http.StatusUnauthorized, "INVALID_API_KEY", "The API key is not valid."}
	errKeyDisabled        = &apiError{http.StatusUnauthorized, "API_KEY_DISABLED", "The API key is disabled."}
	errKeyExpired         = &apiError{http.StatusUnauthorized, "API_KEY_EXPIRED", "The API key has expired."}
	errQuotaExhausted     = &apiError{http.StatusForbidden, "API_KEY_QUOTA_EXHAUSTED", "The API key's quota is used up."}
	errIPNotAllowed       = &apiError{http.StatusForbidden, "IP_NOT_ALLOWED", "Requests from this IP address are not allowed for this API key."}
	errUserDisabled       = &apiError{http.StatusForbidden, "USER_DISABLED", "The user of this API key is disabled."}
	errGroupDisabled      = &apiError{http.StatusForbidden, "GROUP_DISABLED", "The group of this API key is disabled."}
	errMultipleKeys       = &apiError{http.StatusBadRequest, "MULTIPLE_API_KEYS", "The request carries more than one API key."}
	errAuthUnavailable    = &apiError{http.StatusServiceUnavailable, "AUTH_UNAVAILABLE", "Authentication is temporarily unavailable at the gateway; retry shortly."}
	errLimiterUnavailable = &apiError{http.StatusServiceUnavailable, "RATE_LIMIT_UNAVAILABLE", "Rate limiting is temporarily unavailable at the gateway; retry shortly."}
)

// withDetail returns a copy whose message is more specific.
func (e *apiError) withDetail(detail string) *apiError {
	c := *e
	c.message = e.message + " (" + detail + ")"
	return &c
}

// errorFormat writes an apiError body in one client-compatible style.
type errorFormat struct {
	contentType string
	body        func(e *apiError) any
}

var errorFormats = map[string]errorFormat{
	"openai": {"application/json", func(e *apiError) any {
		return map[string]any{"error": map[string]any{
			"message": e.message, "type": errorType(e.status), "code": e.code,
		}}
	}},
	"anthropic": {"application/json", func(e *apiError) any {
		return map[string]any{"type": "error", "error": map[string]any{
			"type": errorType(e.status), "message": e.message, "code": e.code,
		}}
	}},
	"problem": {"application/problem+json", func(e *apiError) any {
		return map[string]any{
			"type": "about:blank", "status": e.status, "title": http.StatusText(e.status),
			"detail": e.message, "code": e.code,
		}
	}},
}

// errorType maps a status to the error type both OpenAI and Anthropic
// clients understand.
func errorType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusBadRequest:
		return "invalid_request_error"
	}
	return "api_error"
}

// deny writes e and records the decision. The request ends here.
func (h *Handler) deny(w http.ResponseWriter, e *apiError) error {
	h.app.metrics.decisions.WithLabelValues("refused", e.code).Inc()
	hdr := w.Header()
	if e.status == http.StatusUnauthorized {
		hdr.Set("WWW-Authenticate", `Bearer realm="api"`)
	}
	if e.status == http.StatusServiceUnavailable {
		hdr.Set("Retry-After", "1")
	}
	return h.writeError(w, e)
}

func (h *Handler) writeError(w http.ResponseWriter, e *apiError) error {
	body, err := json.Marshal(h.format.body(e))
	if err != nil {
		return err
	}
	hdr := w.Header()
	hdr.Set("Content-Type", h.format.contentType)
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(e.status)
	_, err = w.Write(body)
	return err
}
