package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// KeySet is implemented by stores that can list every key, for the
// in-process filter of valid keys (package keyfilter).
type KeySet interface {
	// ScanKeyHashes calls sized once with the number of keys, then fn with
	// the SHA-256 of every key, all from one consistent view of the store.
	// The pointer given to fn is valid only during the call.
	ScanKeyHashes(ctx context.Context, sized func(n int), fn func(hash *[32]byte)) error
}

var (
	_ KeySet = (*Postgres)(nil)
	_ KeySet = (*File)(nil)
)

// ScanKeyHashes implements KeySet: a count and one streaming scan of
// rpm_api_keys in a read-only repeatable-read transaction, so both see the
// same rows; rows are read as they arrive, never collected.
func (p *Postgres) ScanKeyHashes(ctx context.Context, sized func(n int), fn func(hash *[32]byte)) error {
	tx, err := p.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("scan key hashes: %w", err)
	}
	// Read-only: a failed rollback only closes the connection.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var n int64
	if err := tx.QueryRow(ctx, `select count(*) from rpm_api_keys`).Scan(&n); err != nil {
		return fmt.Errorf("scan key hashes: count: %w", err)
	}
	sized(int(n))
	rows, err := tx.Query(ctx, `select key_hash from rpm_api_keys`)
	if err != nil {
		return fmt.Errorf("scan key hashes: %w", err)
	}
	defer rows.Close()
	var (
		hash [32]byte
		buf  []byte
	)
	for rows.Next() {
		raw := rows.RawValues()[0]
		if rows.FieldDescriptions()[0].Format != pgx.BinaryFormatCode {
			// Text format (e.g. a simple-protocol connection): let pgx decode.
			if err := rows.Scan(&buf); err != nil {
				return fmt.Errorf("scan key hashes: %w", err)
			}
			raw = buf
		}
		// The column's check constraint makes every hash 32 bytes.
		if len(raw) != len(hash) {
			return fmt.Errorf("scan key hashes: a key_hash of %d bytes", len(raw))
		}
		copy(hash[:], raw)
		fn(&hash)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan key hashes: %w", err)
	}
	return nil
}

// ScanKeyHashes implements KeySet from the file's records.
func (f *File) ScanKeyHashes(_ context.Context, sized func(n int), fn func(hash *[32]byte)) error {
	sized(len(f.keys))
	for hash := range f.keys {
		fn(&hash)
	}
	return nil
}
