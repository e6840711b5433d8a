package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// Identifier is a store that can name itself. Deployments that share one
// Redis keep their keys apart by this identity: instances of one store get
// the same ID, instances of different stores (another database, another
// schema, another keys file content) get different ones.
type Identifier interface {
	// StoreID returns a short identity (16 lowercase hex digits) that is
	// the same on every instance of this store and stable across restarts.
	StoreID(ctx context.Context) (string, error)
}

var (
	_ Identifier = (*Postgres)(nil)
	_ Identifier = (*File)(nil)
)

// storeIDSQL reads what identifies a Postgres store: the database, the
// schema the search_path resolves to, and whether the role may read the
// cluster's system identifier (controlSQL). That identifier is kept by
// physical replicas and failover, so all instances of one deployment agree
// on it. pg_control_system() is executable by every role by default; where
// an administrator revoked that, the identity falls back to database and
// schema alone rather than failing. (Privileges of a function are checked
// when a query starts, even in a branch never taken, hence two queries.)
const (
	storeIDSQL = `select current_database(), current_schema(),
	has_function_privilege('pg_catalog.pg_control_system()', 'execute')`
	controlSQL = `select system_identifier::text from pg_catalog.pg_control_system()`
)

// StoreID implements Identifier. It fails if the database cannot be
// reached or the search_path names no existing schema.
func (p *Postgres) StoreID(ctx context.Context) (string, error) {
	var db string
	var schema *string
	var mayControl bool
	if err := p.pool.QueryRow(ctx, storeIDSQL).Scan(&db, &schema, &mayControl); err != nil {
		return "", fmt.Errorf("read store identity: %w", err)
	}
	if schema == nil {
		return "", errors.New("read store identity: no schema of the search_path exists")
	}
	system := ""
	if mayControl {
		if err := p.pool.QueryRow(ctx, controlSQL).Scan(&system); err != nil {
			return "", fmt.Errorf("read store identity: %w", err)
		}
	} else if p.Logger != nil {
		p.Logger.Warn("pg_control_system() is not executable by this role: the store identity " +
			"derives from the database and schema names only, so give every instance of a " +
			"deployment the same access, and deployments on other clusters other names or key_prefix")
	}
	return shortID("postgres", system, db, *schema), nil
}

// StoreID implements Identifier: a hash of the file's content, so every
// instance that loads the same content shares one identity, and an edit
// (even of a single key's status) yields a new one.
func (f *File) StoreID(context.Context) (string, error) { return f.id, nil }

// shortID hashes its parts unambiguously (each is length-prefixed) to 16
// hex digits: 64 bits, ample to keep the few deployments of one Redis apart.
func shortID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
