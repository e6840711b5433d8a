package admin

import (
	"cmp"
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/store"
)

// rpmStatus is the answer of GET /admin/users/{id}/rpm-status.
type rpmStatus struct {
	UserID         int64         `json:"user_id"`
	UserRPMUsed    int64         `json:"user_rpm_used"`
	UserRPMLimit   int64         `json:"user_rpm_limit"`
	PerGroup       []groupStatus `json:"per_group"`
	PerZone        []zoneStatus  `json:"per_zone"`
	WindowResetsIn int64         `json:"window_resets_in"`
	WindowResetsAt time.Time     `json:"window_resets_at"`
}

// groupStatus is one group of a user in rpm-status.
type groupStatus struct {
	GroupID   int64  `json:"group_id"`
	GroupName string `json:"group_name"`
	Used      int64  `json:"used"`
	Limit     int64  `json:"limit"`
	Source    string `json:"source"` // "override" or "group"
}

// zoneStatus is one route zone in rpm-status. Used is the user's count in
// the zone for zones limited per user; zones limited per key count each
// key separately, so they report no Used (the limit still shows).
type zoneStatus struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
	Used  *int64 `json:"used,omitempty"`
	Limit int64  `json:"limit"`
}

// rpmStatus answers the user's current-window counts and limits. Limits
// come from the store (not the snapshot cache), counts from the limiter
// without incrementing anything. A limit of 0 means unlimited.
func (h *Handler) rpmStatus(w http.ResponseWriter, r *http.Request, b Backend) {
	uid, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	u, err := b.Store().UserRPM(r.Context(), uid)
	if err != nil {
		h.storeError(w, r, "read user limits", err)
		return
	}

	slices.SortStableFunc(u.Groups, func(a, b store.UserGroup) int { return cmp.Compare(a.GroupID, b.GroupID) })

	ck := b.CounterKeys()
	keys := make([]string, 0, 1+len(u.Groups))
	keys = append(keys, ck.User(uid))
	for _, g := range u.Groups {
		keys = append(keys, ck.UserGroup(uid, g.GroupID))
	}
	zones := b.Zones()
	zoneIdx := make([]int, len(zones))
	for i, z := range zones {
		zoneIdx[i] = -1
		if z.Scope == "user" {
			zoneIdx[i] = len(keys)
			keys = append(keys, ck.ZoneUser(z.Name, uid))
		}
	}

	counts, resetIn, err := b.Limiter().Peek(r.Context(), keys)
	if err != nil {
		h.logger.Warn("rpm-status: read counters", zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, "rate limiter unavailable: cannot read the counters")
		return
	}

	st := rpmStatus{
		UserID:       uid,
		UserRPMUsed:  counts[0],
		UserRPMLimit: u.RPMLimit,
		PerGroup:     make([]groupStatus, 0, len(u.Groups)),
		PerZone:      make([]zoneStatus, 0, len(zones)),
	}
	for i, g := range u.Groups {
		gs := groupStatus{GroupID: g.GroupID, GroupName: g.Name, Used: counts[1+i], Limit: g.RPMLimit, Source: "group"}
		if g.Override != nil {
			gs.Limit, gs.Source = *g.Override, "override"
		}
		st.PerGroup = append(st.PerGroup, gs)
	}
	for i, z := range zones {
		zs := zoneStatus{Name: z.Name, Scope: z.Scope, Limit: z.Limit}
		if j := zoneIdx[i]; j >= 0 {
			used := counts[j]
			zs.Used = &used
		}
		st.PerZone = append(st.PerZone, zs)
	}
	st.WindowResetsIn, st.WindowResetsAt = windowFields(resetIn, time.Now())
	writeJSON(w, http.StatusOK, st)
}

// windowFields computes rpm-status's window fields from the time left.
func windowFields(resetIn time.Duration, now time.Time) (int64, time.Time) {
	secs := int64((resetIn + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return secs, now.Add(resetIn).UTC().Truncate(time.Second)
}
