package admin

import "net/http"

// rpmStatus answers GET /admin/users/{id}/rpm-status: the user's
// current-window counts and limits (gateway.Status).
func (h *Handler) rpmStatus(w http.ResponseWriter, r *http.Request, c Core) error {
	uid, err := pathID(r, "id")
	if err != nil {
		return err
	}
	st, err := c.Status(r.Context(), uid)
	if err != nil {
		return h.coreError(r, "read user limits", err)
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}
