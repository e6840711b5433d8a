package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// Postgres is the Postgres store, the source of truth. Its writes notify
// listeners through the schema's triggers.
type Postgres struct {
	pool *pgxpool.Pool

	// Logger receives listener errors and reconnects, and keys refused for
	// an invalid IP list entry; nil logs nothing. Set it before calling
	// Listen.
	Logger *zap.Logger

	// ListenTimeout bounds the listener's connection setup (taking a
	// connection, LISTEN) and each of its pings, so a connection stuck on a
	// dead network path is given up and replaced. Set it before calling
	// Listen. Default: 2s.
	ListenTimeout time.Duration

	listenPID atomic.Uint32 // backend pid of the current LISTEN connection
}

var (
	_ Source     = (*Postgres)(nil)
	_ ManySource = (*Postgres)(nil)
	_ Writable   = (*Postgres)(nil)
	_ Listener   = (*Postgres)(nil)
)

// NewPostgres returns a store on pool. The caller owns the pool and closes
// it after the store.
func NewPostgres(pool *pgxpool.Pool) *Postgres { return &Postgres{pool: pool} }

// snapshotColumns and snapshotFrom read everything a snapshot needs in one
// round trip; loadSnapshotSQL for one key, loadSnapshotsSQL for many
// (each row led by its key_hash).
const (
	snapshotColumns = `
	k.id, k.user_id, k.group_id, k.status, k.ip_whitelist, k.ip_blacklist,
	k.quota::float8, k.quota_used::float8, k.expires_at,
	u.status, u.role, u.rpm_limit, u.concurrency, u.balance::float8,
	g.id, g.name, g.platform, g.status, g.rpm_limit,
	o.rpm_override`
	snapshotFrom = `
from rpm_api_keys k
join rpm_users u on u.id = k.user_id
left join rpm_groups g on g.id = k.group_id
left join rpm_user_group_overrides o on o.user_id = k.user_id and o.group_id = k.group_id`
	loadSnapshotSQL  = `select` + snapshotColumns + snapshotFrom + ` where k.key_hash = $1`
	loadSnapshotsSQL = `select k.key_hash,` + snapshotColumns + snapshotFrom + ` where k.key_hash = any($1)`
)

// LoadSnapshot implements Source with a single query.
func (p *Postgres) LoadSnapshot(ctx context.Context, keyHash string) (*snapshot.Snapshot, error) {
	var hash [32]byte
	if !decodeKeyHash(&hash, keyHash) {
		return nil, fmt.Errorf("load snapshot: %w", ErrNotFound)
	}
	var row snapshotRow
	err := p.pool.QueryRow(ctx, loadSnapshotSQL, hash[:]).Scan(row.dest()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("load snapshot: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	return p.snapshotOf(&row), nil
}

// LoadSnapshots returns the snapshots of many keys (SHA-256 as lowercase
// hex) with one query, in the order of keyHashes; nil for a key the store
// lacks. Background reloads of many keys use it.
func (p *Postgres) LoadSnapshots(ctx context.Context, keyHashes []string) ([]*snapshot.Snapshot, error) {
	hashes := make([][]byte, 0, len(keyHashes))
	at := make(map[[32]byte][]int, len(keyHashes)) // a key may be asked twice
	for i, k := range keyHashes {
		var h [32]byte
		if decodeKeyHash(&h, k) {
			if at[h] == nil {
				hashes = append(hashes, h[:])
			}
			at[h] = append(at[h], i)
		}
	}
	out := make([]*snapshot.Snapshot, len(keyHashes))
	if len(hashes) == 0 {
		return out, nil
	}
	rows, err := p.pool.Query(ctx, loadSnapshotsSQL, hashes)
	if err != nil {
		return nil, fmt.Errorf("load snapshots: %w", err)
	}
	defer rows.Close()
	var hash []byte
	var row snapshotRow
	dest := append([]any{&hash}, row.dest()...)
	for rows.Next() {
		row = snapshotRow{}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("load snapshots: %w", err)
		}
		if len(hash) != 32 {
			continue
		}
		for _, i := range at[[32]byte(hash)] {
			out[i] = p.snapshotOf(&row)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load snapshots: %w", err)
	}
	return out, nil
}

// snapshotRow is one row of snapshotColumns as scanned.
type snapshotRow struct {
	s         snapshot.Snapshot
	user      snapshot.User
	groupID   pgtype.Int8
	expiresAt pgtype.Timestamptz
	gID       pgtype.Int8
	gName     pgtype.Text
	gPlatform pgtype.Text
	gStatus   pgtype.Text
	gLimit    pgtype.Int8
	override  pgtype.Int8
	// The IP lists' elements may be NULL (plain SQL); scanned as nullable
	// text so that such a row fails closed instead of failing to load.
	whitelist, blacklist []pgtype.Text
}

// dest is what Scan fills, in the order of snapshotColumns.
func (r *snapshotRow) dest() []any {
	s, u := &r.s, &r.user
	return []any{
		&s.APIKeyID, &s.UserID, &r.groupID, &s.Status, &r.whitelist, &r.blacklist,
		&s.Quota, &s.QuotaUsed, &r.expiresAt,
		&u.Status, &u.Role, &u.RPMLimit, &u.Concurrency, &u.Balance,
		&r.gID, &r.gName, &r.gPlatform, &r.gStatus, &r.gLimit,
		&r.override,
	}
}

// snapshotOf turns a scanned row into its snapshot.
func (p *Postgres) snapshotOf(r *snapshotRow) *snapshot.Snapshot {
	s := new(snapshot.Snapshot)
	*s = r.s
	u := r.user
	s.User = &u
	s.IPWhitelist, s.IPBlacklist = ipList(r.whitelist), ipList(r.blacklist)
	if r.groupID.Valid {
		id := r.groupID.Int64
		s.GroupID = &id
	}
	if r.expiresAt.Valid {
		t := r.expiresAt.Time
		s.ExpiresAt = &t
	}
	var g *snapshot.Group
	if r.gID.Valid {
		g = &snapshot.Group{ID: r.gID.Int64, Name: r.gName.String, Platform: r.gPlatform.String, Status: r.gStatus.String, RPMLimit: r.gLimit.Int64}
	}
	var ov *int64
	if r.override.Valid {
		v := r.override.Int64
		ov = &v
	}
	if err := completeSnapshot(s, g, ov); err != nil && p.Logger != nil {
		// A row's IP list is not checked on write (plain SQL may set it), so
		// a bad entry shows up here. The snapshot fails closed: the key is
		// refused 403 IP_NOT_ALLOWED until the row is fixed. Serving it
		// keeps it cached, rather than reloading on every request or
		// falling back to a stale snapshot with the old lists.
		p.Logger.Warn("api key refused: invalid IP list entry", zap.Int64("api_key_id", s.APIKeyID), zap.Error(err))
	}
	return s
}

// ipList converts a scanned IP list; a NULL element becomes "", which is no
// address, so the snapshot fails closed.
func ipList(in []pgtype.Text) []string {
	if len(in) == 0 {
		return nil
	}
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = v.String // "" when NULL
	}
	return out
}

// KeyHashes implements Source.
func (p *Postgres) KeyHashes(ctx context.Context, scope Scope, id int64) ([]string, error) {
	var (
		sql  string
		args []any
	)
	switch scope {
	case ScopeKey:
		sql, args = `select encode(key_hash, 'hex') from rpm_api_keys where id = $1`, []any{id}
	case ScopeUser:
		sql, args = `select encode(key_hash, 'hex') from rpm_api_keys where user_id = $1`, []any{id}
	case ScopeGroup:
		sql, args = `select encode(key_hash, 'hex') from rpm_api_keys where group_id = $1`, []any{id}
	case ScopeAll:
		sql = `select encode(key_hash, 'hex') from rpm_api_keys`
	default:
		return nil, fmt.Errorf("key hashes: %w: unknown scope %q", ErrInvalid, scope)
	}
	rows, err := p.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("key hashes of %s %d: %w", scope, id, err)
	}
	hashes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("key hashes of %s %d: %w", scope, id, err)
	}
	return hashes, nil
}

// UserRPM implements Source: the groups of the user's keys and of their
// overrides, by group id.
func (p *Postgres) UserRPM(ctx context.Context, userID int64) (*UserRPM, error) {
	rows, err := p.pool.Query(ctx, `select u.rpm_limit, u.concurrency, g.id, g.name, g.rpm_limit, o.rpm_override
from rpm_users u
left join rpm_groups g on
	g.id in (select k.group_id from rpm_api_keys k where k.user_id = u.id)
	or g.id in (select x.group_id from rpm_user_group_overrides x where x.user_id = u.id)
left join rpm_user_group_overrides o on o.user_id = u.id and o.group_id = g.id
where u.id = $1
order by g.id`, userID)
	if err != nil {
		return nil, fmt.Errorf("user %d rpm: %w", userID, err)
	}
	defer rows.Close()
	var out *UserRPM
	for rows.Next() {
		var (
			limit    int64
			conc     int64
			gID      pgtype.Int8
			gName    pgtype.Text
			gLimit   pgtype.Int8
			override pgtype.Int8
		)
		if err := rows.Scan(&limit, &conc, &gID, &gName, &gLimit, &override); err != nil {
			return nil, fmt.Errorf("user %d rpm: %w", userID, err)
		}
		if out == nil {
			out = &UserRPM{UserID: userID, RPMLimit: limit, Concurrency: conc, Groups: []UserGroup{}}
		}
		if !gID.Valid {
			continue
		}
		ug := UserGroup{GroupID: gID.Int64, Name: gName.String, RPMLimit: gLimit.Int64}
		if override.Valid {
			v := override.Int64
			ug.Override = &v
		}
		out.Groups = append(out.Groups, ug)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("user %d rpm: %w", userID, err)
	}
	if out == nil {
		return nil, fmt.Errorf("user %d: %w", userID, ErrNotFound)
	}
	return out, nil
}

// GroupOverrides implements Source.
func (p *Postgres) GroupOverrides(ctx context.Context, groupID int64) ([]Override, error) {
	rows, err := p.pool.Query(ctx, `select o.user_id, o.rpm_override
from rpm_groups g
left join rpm_user_group_overrides o on o.group_id = g.id
where g.id = $1
order by o.user_id`, groupID)
	if err != nil {
		return nil, fmt.Errorf("group %d overrides: %w", groupID, err)
	}
	defer rows.Close()
	var out []Override
	for rows.Next() {
		var uid, v pgtype.Int8
		if err := rows.Scan(&uid, &v); err != nil {
			return nil, fmt.Errorf("group %d overrides: %w", groupID, err)
		}
		if out == nil {
			out = []Override{}
		}
		if uid.Valid {
			value := v.Int64
			out = append(out, Override{UserID: uid.Int64, RPMOverride: &value})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("group %d overrides: %w", groupID, err)
	}
	if out == nil {
		return nil, fmt.Errorf("group %d: %w", groupID, ErrNotFound)
	}
	return out, nil
}

// ReplaceGroupOverrides implements Writable in one transaction: afterwards the
// group has exactly the entries with a non-nil RPMOverride. Rows that keep
// their value are not touched, so they send no notification.
func (p *Postgres) ReplaceGroupOverrides(ctx context.Context, groupID int64, entries []Override) error {
	users := make([]int64, 0, len(entries))
	values := make([]int64, 0, len(entries))
	all := make([]int64, 0, len(entries))
	seen := make(map[int64]bool, len(entries))
	for i, e := range entries {
		if seen[e.UserID] {
			return fmt.Errorf("replace group %d overrides: %w: entries[%d]: duplicate user_id %d", groupID, ErrInvalid, i, e.UserID)
		}
		seen[e.UserID] = true
		all = append(all, e.UserID)
		if e.RPMOverride == nil {
			continue
		}
		if !validLimit(*e.RPMOverride) {
			return fmt.Errorf("replace group %d overrides: %w: entries[%d]: rpm_override must be between 0 and %d, got %d",
				groupID, ErrInvalid, i, math.MaxInt32, *e.RPMOverride)
		}
		users = append(users, e.UserID)
		values = append(values, *e.RPMOverride)
	}

	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		// Lock the group so concurrent replaces of one group serialize.
		var id int64
		err := tx.QueryRow(ctx, `select id from rpm_groups where id = $1 for no key update`, groupID).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("group %d: %w", groupID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		var missing pgtype.Int8
		err = tx.QueryRow(ctx, `select min(x) from unnest($1::bigint[]) x
where not exists (select 1 from rpm_users u where u.id = x)`, all).Scan(&missing)
		if err != nil {
			return err
		}
		if missing.Valid {
			return fmt.Errorf("user %d: %w", missing.Int64, ErrNotFound)
		}
		if _, err := tx.Exec(ctx, `delete from rpm_user_group_overrides
where group_id = $1 and user_id <> all($2::bigint[])`, groupID, users); err != nil {
			return err
		}
		if len(users) == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `insert into rpm_user_group_overrides (user_id, group_id, rpm_override)
select u, $1, v from unnest($2::bigint[], $3::integer[]) as t(u, v)
on conflict (user_id, group_id) do update set rpm_override = excluded.rpm_override
where rpm_user_group_overrides.rpm_override <> excluded.rpm_override`, groupID, users, values)
		return err
	})
	if err != nil {
		return fmt.Errorf("replace group %d overrides: %w", groupID, mapError(err))
	}
	return nil
}

// ClearGroupOverrides implements Writable.
func (p *Postgres) ClearGroupOverrides(ctx context.Context, groupID int64) (int64, error) {
	var found bool
	var n int64
	err := p.pool.QueryRow(ctx, `with g as (select id from rpm_groups where id = $1),
d as (delete from rpm_user_group_overrides o using g where o.group_id = g.id returning 1)
select exists (select 1 from g), (select count(*) from d)`, groupID).Scan(&found, &n)
	if err != nil {
		return 0, fmt.Errorf("clear group %d overrides: %w", groupID, err)
	}
	if !found {
		return 0, fmt.Errorf("clear group %d overrides: group %d: %w", groupID, groupID, ErrNotFound)
	}
	return n, nil
}

// SetOverride implements Writable.
func (p *Postgres) SetOverride(ctx context.Context, userID, groupID int64, value *int64) error {
	if value != nil && !validLimit(*value) {
		return fmt.Errorf("set override of user %d in group %d: %w: rpm_override must be between 0 and %d, got %d",
			userID, groupID, ErrInvalid, math.MaxInt32, *value)
	}
	var sql string
	args := []any{userID, groupID}
	if value != nil {
		sql = `with u as (select id from rpm_users where id = $1),
g as (select id from rpm_groups where id = $2),
w as (
	insert into rpm_user_group_overrides (user_id, group_id, rpm_override)
	select u.id, g.id, $3 from u, g
	on conflict (user_id, group_id) do update set rpm_override = excluded.rpm_override
	where rpm_user_group_overrides.rpm_override <> excluded.rpm_override
	returning 1)
select exists (select 1 from u), exists (select 1 from g)`
		args = append(args, *value)
	} else {
		sql = `with u as (select id from rpm_users where id = $1),
g as (select id from rpm_groups where id = $2),
w as (delete from rpm_user_group_overrides where user_id = $1 and group_id = $2 returning 1)
select exists (select 1 from u), exists (select 1 from g)`
	}
	var userFound, groupFound bool
	if err := p.pool.QueryRow(ctx, sql, args...).Scan(&userFound, &groupFound); err != nil {
		return fmt.Errorf("set override of user %d in group %d: %w", userID, groupID, mapError(err))
	}
	switch {
	case !userFound:
		return fmt.Errorf("set override: user %d: %w", userID, ErrNotFound)
	case !groupFound:
		return fmt.Errorf("set override: group %d: %w", groupID, ErrNotFound)
	}
	return nil
}

// UpdateUser implements Writable.
func (p *Postgres) UpdateUser(ctx context.Context, id int64, patch Patch) error {
	return p.update(ctx, "user", `update rpm_users set
	rpm_limit = coalesce($2, rpm_limit), status = coalesce($3, status),
	concurrency = coalesce($4, concurrency)
where id = $1`, id, patch, true, true)
}

// UpdateGroup implements Writable. Groups have no concurrency.
func (p *Postgres) UpdateGroup(ctx context.Context, id int64, patch Patch) error {
	return p.update(ctx, "group", `update rpm_groups set
	rpm_limit = coalesce($2, rpm_limit), status = coalesce($3, status)
where id = $1 and $4::integer is null`, id, patch, true, false)
}

// UpdateKey implements Writable. Keys have a status but no rpm_limit.
func (p *Postgres) UpdateKey(ctx context.Context, id int64, patch Patch) error {
	return p.update(ctx, "api key", `update rpm_api_keys set
	status = coalesce($3, status)
where id = $1 and $2::integer is null and $4::integer is null`, id, patch, false, false)
}

// update runs sql with $1 the id and $2..$4 the patch's rpm_limit, status
// and concurrency; withLimit and withConcurrency say which of these the
// record has (the validation refuses the others before any query).
func (p *Postgres) update(ctx context.Context, what, sql string, id int64, patch Patch, withLimit, withConcurrency bool) error {
	if err := validatePatch(patch, withLimit, withConcurrency); err != nil {
		return fmt.Errorf("update %s %d: %w", what, id, err)
	}
	tag, err := p.pool.Exec(ctx, sql, id, patch.RPMLimit, patch.Status, patch.Concurrency)
	if err != nil {
		return fmt.Errorf("update %s %d: %w", what, id, mapError(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("update %s %d: %w", what, id, ErrNotFound)
	}
	return nil
}

// NewAPIKey describes a key to create with CreateKey.
type NewAPIKey struct {
	UserID  int64
	GroupID *int64 // nil: no group
	Name    string
}

// CreateKey generates a random key for k.UserID, stores its SHA-256 and
// display prefix, and returns the new key's id and the generated key, whose
// raw form exists nowhere else. An unknown user or group yields ErrNotFound.
func (p *Postgres) CreateKey(ctx context.Context, k NewAPIKey) (int64, GeneratedKey, error) {
	gen, err := NewKey()
	if err != nil {
		return 0, GeneratedKey{}, err
	}
	var id int64
	err = p.pool.QueryRow(ctx, `insert into rpm_api_keys (key_hash, key_prefix, name, user_id, group_id)
values ($1, $2, $3, $4, $5) returning id`, gen.Hash[:], gen.Prefix, k.Name, k.UserID, k.GroupID).Scan(&id)
	if err != nil {
		return 0, GeneratedKey{}, fmt.Errorf("create key for user %d: %w", k.UserID, mapError(err))
	}
	return id, gen, nil
}

// mapError turns constraint violations into the package's sentinel errors.
func mapError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23503": // foreign_key_violation
			return fmt.Errorf("%w: %s", ErrNotFound, pgErr.Detail)
		case "23514", "22003": // check_violation, numeric_value_out_of_range
			return fmt.Errorf("%w: %s", ErrInvalid, pgErr.Message)
		}
	}
	return err
}
