package store

// ListenPID returns the backend pid of the current LISTEN connection, or 0.
func (p *Postgres) ListenPID() uint32 { return p.listenPID.Load() }

// The identity queries of Postgres.StoreID.
const (
	StoreIDSQL = storeIDSQL
	ControlSQL = controlSQL
)
