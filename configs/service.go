package configs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mosemu/mosemu/rpc"
)

// Store holds a device's running config. Readers get immutable snapshots;
// Config.Set swaps in a modified copy.
type Store struct {
	Loader *Loader
	mu     sync.RWMutex
	cur    *Config
}

// NewStore returns a store whose running config is c.
func NewStore(l *Loader, c *Config) *Store { return &Store{Loader: l, cur: c} }

// Get returns the running config. Callers must not modify it.
func (s *Store) Get() *Config {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur
}

// Update applies f to a copy of the running config and makes it current
// when f succeeds.
func (s *Store) Update(f func(c *Config) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.cur.Clone()
	if err := f(n); err != nil {
		return err
	}
	s.cur = n
	return nil
}

// Rebooter restarts the device after a delay.
type Rebooter interface{ Reboot(delay time.Duration) }

// RegisterService registers Config.Get, Config.Set and Config.Save.
//
// Config.Set ignores keys that are not in the schema, as the firmware
// does: `rpc.http.enable` (a spelling seen in some guides) is silently
// ignored, the real key being `rpc.http_enable`.
func RegisterService(r rpc.Registrar, s *Store, reboot Rebooter, log *slog.Logger) {
	r.Register("Config.Get", "{key: %Q, level: %d}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			Key   string `json:"key"`
			Level *int   `json:"level"`
		}
		if err := parseArgs(req, &a); err != nil {
			return nil, err
		}
		c := s.Get()
		if a.Level != nil && *a.Level >= 0 && *a.Level < 9 {
			var err error
			if c, err = s.Loader.Load(*a.Level, false); err != nil {
				return nil, rpc.Errorf(400, "failed to load config")
			}
		}
		out, err := c.JSON(a.Key)
		if err != nil {
			return nil, rpc.Errorf(404, "invalid config key")
		}
		return out, nil
	})
	r.Register("Config.Set", "{key: %Q, config: %T, value: %T, level: %d, save: %B, try_once: %B, reboot: %B}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			Key     string          `json:"key"`
			Config  json.RawMessage `json:"config"`
			Value   json.RawMessage `json:"value"`
			Level   *int            `json:"level"`
			Save    bool            `json:"save"`
			TryOnce bool            `json:"try_once"`
			Reboot  bool            `json:"reboot"`
		}
		if err := parseArgs(req, &a); err != nil {
			return nil, err
		}
		val := a.Config
		if val == nil {
			val = a.Value
		}
		if val == nil {
			return nil, rpc.Errorf(400, "value is required")
		}
		level := 9
		if a.Level != nil {
			level = *a.Level
		}
		if level == 0 {
			return nil, rpc.Errorf(400, "not allowed")
		}
		if level < 0 || level > 9 {
			level = 9
		}
		if _, ok := s.Get().Schema().Lookup(a.Key); !ok {
			return nil, rpc.Errorf(404, "invalid config key")
		}
		denied := func(p string) { log.Error(fmt.Sprintf("Not allowed to set [%s]", p), "src", "mgos_config_util.c:198") }
		badValue := func(err error) error {
			var pe *ParseError
			if errors.As(err, &pe) {
				return rpc.Errorf(400, "invalid config value: %s", pe.Msg)
			}
			return rpc.Errorf(400, "invalid config value: %v", err)
		}
		if level < 9 {
			// A lower level: that level's config as loaded, changed under
			// the running conf_acl, saved to that level's file only. The
			// running config does not change until a reboot.
			lc, err := s.Loader.Load(level, false)
			if err != nil {
				return nil, rpc.Errorf(400, "failed to load config")
			}
			if err := lc.Apply(a.Key, val, s.Get().String("conf_acl"), denied); err != nil {
				return nil, badValue(err)
			}
			if !a.Save {
				return json.RawMessage(`{"saved": false}`), nil
			}
			if err := s.Loader.Save(lc, level, a.TryOnce); err != nil {
				return nil, &rpc.Error{Code: -1, Message: "error saving config: " + err.Error()}
			}
			if a.Reboot {
				reboot.Reboot(500 * time.Millisecond)
			}
			return json.RawMessage(`{"saved": true}`), nil
		}
		var toSave *Config
		err := s.Update(func(c *Config) error {
			if err := c.Apply(a.Key, val, c.String("conf_acl"), denied); err != nil {
				return err
			}
			toSave = c
			return nil
		})
		if err != nil {
			return nil, badValue(err)
		}
		if !a.Save {
			return json.RawMessage(`{"saved": false}`), nil
		}
		if err := s.Loader.Save(toSave, level, a.TryOnce); err != nil {
			return nil, &rpc.Error{Code: -1, Message: "error saving config: " + err.Error()}
		}
		if a.Reboot {
			reboot.Reboot(500 * time.Millisecond)
		}
		return json.RawMessage(`{"saved": true}`), nil
	})
	r.Register("Config.Save", "{try_once: %B, reboot: %B}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			TryOnce bool `json:"try_once"`
			Reboot  bool `json:"reboot"`
		}
		if err := parseArgs(req, &a); err != nil {
			return nil, err
		}
		if err := s.Loader.Save(s.Get(), 9, a.TryOnce); err != nil {
			return nil, &rpc.Error{Code: -1, Message: "error saving config: " + err.Error()}
		}
		if a.Reboot {
			reboot.Reboot(500 * time.Millisecond)
		}
		return json.RawMessage(`{"saved": true}`), nil
	})
}

// parseArgs decodes the request's params; absent params leave a zero value.
func parseArgs(req *rpc.Request, v any) error {
	if len(req.Params) == 0 || string(req.Params) == "null" {
		return nil
	}
	if err := json.Unmarshal(req.Params, v); err != nil {
		return rpc.Errorf(400, "invalid args: %v", err)
	}
	return nil
}
