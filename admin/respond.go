package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/store"
)

// maxBody bounds request bodies.
const maxBody = 1 << 20

// maxLimit is the largest limit the store's int columns hold.
const maxLimit = math.MaxInt32

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// storeError answers an error from the store or the limiter: known store
// errors map to 404, 409 and 400, a call that ran out of time (the
// request's requestTimeout or a connect timeout) to 504; anything else is
// logged and answers 500 with a generic message.
func (h *Handler) storeError(w http.ResponseWriter, r *http.Request, op string, err error) {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		h.logger.Warn("admin request timed out",
			zap.String("op", op),
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path),
			zap.Error(err))
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf(
			"%s: the database or Redis did not answer in time (an admin request waits at most %v); "+
				"a change may or may not have been applied: retry", op, requestTimeout))
	case errors.Is(err, store.ErrReadOnly):
		writeError(w, http.StatusConflict, store.ErrReadOnly.Error())
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		h.logger.Error("admin request failed",
			zap.String("op", op),
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path),
			zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error: "+op+" failed; see the server log")
	}
}

// pathID parses the path value name as a positive int64; on failure it
// answers 400 and returns false.
func pathID(w http.ResponseWriter, r *http.Request, name string) (int64, bool) {
	s := r.PathValue(name)
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || s[0] < '0' || s[0] > '9' {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid %s %q: want a positive integer", name, s))
		return 0, false
	}
	return id, true
}

// decodeBody reads exactly one JSON value into v, rejecting unknown
// fields, wrong types, trailing data and bodies over maxBody; on failure
// it answers 400 (413 when too large) and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&json.RawMessage{}) != io.EOF {
			err = errors.New("unexpected data after the JSON value")
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBody))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "invalid body: a JSON object is required")
	default:
		writeError(w, http.StatusBadRequest, "invalid body: "+err.Error())
	}
	return false
}

// checkLimit validates an RPM limit or override value.
func checkLimit(field string, v int64) error {
	if v < 0 {
		return fmt.Errorf("%s must be >= 0, got %d", field, v)
	}
	if v > maxLimit {
		return fmt.Errorf("%s must be <= %d, got %d", field, maxLimit, v)
	}
	return nil
}

// checkStatus validates a status value.
func checkStatus(s string) error {
	if s != "active" && s != "disabled" {
		return fmt.Errorf(`status must be "active" or "disabled", got %q`, s)
	}
	return nil
}
