package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/gateway"
)

// maxBody bounds request bodies.
const maxBody = 1 << 20

// Errors are caddy.APIError values: on Caddy's admin endpoint Caddy
// renders them ({"error": "<message>"}) and logs them; on a site
// (SiteHandler) writeAPIError renders the same body.

// apiError is an error answer with a status and a message.
func apiError(status int, msg string) error {
	return caddy.APIError{HTTPStatus: status, Message: msg}
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeAPIError answers err as Caddy's admin endpoint does.
func writeAPIError(w http.ResponseWriter, err error) {
	var ae caddy.APIError
	if !errors.As(err, &ae) {
		ae = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	if ae.HTTPStatus == 0 {
		ae.HTTPStatus = http.StatusInternalServerError
	}
	if ae.Message == "" && ae.Err != nil {
		ae.Message = ae.Err.Error()
	}
	writeJSON(w, ae.HTTPStatus, ae)
}

// coreError turns an error of the gateway into an answer: known errors map
// to 404, 409, 400 and 503, a call that ran out of time (the request's
// requestTimeout or a connect timeout) to 504; anything else is logged and
// answers 500 with a generic message.
func (h *Handler) coreError(r *http.Request, op string, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		h.logger.Warn("admin request timed out",
			zap.String("op", op),
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path),
			zap.Error(err))
		return apiError(http.StatusGatewayTimeout, fmt.Sprintf(
			"%s: the database or Redis did not answer in time (an admin request waits at most %v); "+
				"a change may or may not have been applied: retry", op, requestTimeout))
	case errors.Is(err, gateway.ErrReadOnly):
		return apiError(http.StatusConflict, gateway.ErrReadOnly.Error())
	case errors.Is(err, gateway.ErrNotFound):
		return apiError(http.StatusNotFound, err.Error())
	case errors.Is(err, gateway.ErrInvalid):
		return apiError(http.StatusBadRequest, err.Error())
	case errors.Is(err, gateway.ErrCountersUnavailable):
		h.logger.Warn("rpm-status: read counters", zap.Error(err))
		return apiError(http.StatusServiceUnavailable, gateway.ErrCountersUnavailable.Error())
	}
	h.logger.Error("admin request failed",
		zap.String("op", op),
		zap.String("method", r.Method),
		zap.String("path", r.URL.Path),
		zap.Error(err))
	return apiError(http.StatusInternalServerError, "internal error: "+op+" failed; see the server log")
}

// pathID parses the path value name as a positive int64.
func pathID(r *http.Request, name string) (int64, error) {
	s := r.PathValue(name)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || s[0] < '0' || s[0] > '9' {
		return 0, apiError(http.StatusBadRequest, fmt.Sprintf("invalid %s %q: want a positive integer", name, s))
	}
	return id, nil
}

// decodeBody reads exactly one JSON value into v, rejecting unknown
// fields, wrong types, trailing data and bodies over maxBody (413).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&json.RawMessage{}) != io.EOF {
			err = errors.New("unexpected data after the JSON value")
		}
	}
	if err == nil {
		return nil
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return apiError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBody))
	case errors.Is(err, io.EOF):
		return apiError(http.StatusBadRequest, "invalid body: a JSON object is required")
	}
	return apiError(http.StatusBadRequest, "invalid body: "+err.Error())
}

// badRequest is a 400 answer with err's message.
func badRequest(err error) error { return apiError(http.StatusBadRequest, err.Error()) }
