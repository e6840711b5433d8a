package caddyrpm

import (
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// sharedLogger is the logger of something shared across configurations
// (the Redis limiter, the key filter). A configuration's logger would be
// kept by the first configuration that created it, and a logger taken from
// caddy.Log() once would keep writing to a default log that a reload has
// replaced (and closed). This one writes through Caddy's default logger
// as it is at the time of each entry.
func sharedLogger(name string) *zap.Logger {
	return zap.New(defaultLogCore{}).Named(name)
}

// defaultLogCore is a zapcore.Core that hands every entry to the core of
// caddy.Log() at write time, with the fields added by With.
type defaultLogCore struct {
	fields []zapcore.Field
}

func (c defaultLogCore) current() zapcore.Core {
	core := caddy.Log().Core()
	if len(c.fields) > 0 {
		core = core.With(c.fields)
	}
	return core
}

func (c defaultLogCore) Enabled(l zapcore.Level) bool { return caddy.Log().Core().Enabled(l) }

func (c defaultLogCore) With(fields []zapcore.Field) zapcore.Core {
	return defaultLogCore{fields: append(c.fields[:len(c.fields):len(c.fields)], fields...)}
}

func (c defaultLogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	// The current core decides (Caddy's filters apply) and writes.
	return c.current().Check(e, ce)
}

func (c defaultLogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	return c.current().Write(e, fields)
}

func (c defaultLogCore) Sync() error { return caddy.Log().Core().Sync() }
