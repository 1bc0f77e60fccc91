package ota

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mosemu/mosemu/emu/console"
	"github.com/mosemu/mosemu/rpc"
)

// Service is the OTA.* RPC service (rpc-service-ota) over an Updater.
type Service struct {
	U *Updater
	// HTTPClient returns the client OTA.Update fetches a URL with (its TLS
	// config verifying against the device's CA bundle).
	HTTPClient func(url string) (*http.Client, error)
	// ExtraHeaders returns update.extra_http_headers ("Name: value" lines).
	ExtraHeaders func() string
}

// Poll fetches url every interval (update.url, update.interval of the
// ota-http-client library) and applies it when its version differs from
// the running one, until stop is closed.
func (s *Service) Poll(url string, interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	base, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	go func() { <-stop; cancelAll() }()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if s.U.Boot.IsFirstBoot() {
			continue // an update waits for its commit
		}
		ctx, cancel := context.WithTimeout(base, 10*time.Minute)
		msg, err := s.update(ctx, url, BeginOptions{IgnoreSameVersion: true})
		cancel()
		if err != nil {
			s.U.Log.Error("Update from "+url+" failed: "+err.Error(), console.Src("mgos_ota_http_client.c", 200))
		} else {
			s.U.Log.Info(msg, console.Src("mgos_ota_http_client.c", 205))
		}
	}
}

func rpcErr(err error) error {
	var e *rpc.Error
	if errors.As(err, &e) {
		return e
	}
	msg := err.Error()
	if errors.Is(err, ErrUpdateFailed) {
		msg = msg[len(ErrUpdateFailed.Error())+2:]
	}
	return &rpc.Error{Code: -1, Message: msg}
}

// Register adds the OTA.* methods to r.
func (s *Service) Register(r rpc.Registrar) {
	u := s.U
	r.Register("OTA.Status", "", func(context.Context, *rpc.Request) (json.RawMessage, error) {
		i := u.Status()
		b, _ := json.Marshal(map[string]any{"state": int(i.State), "msg": i.Msg, "is_committed": i.IsCommitted,
			"commit_timeout": i.CommitTimeout, "partition": i.Partition, "progress_percent": i.ProgressPercent})
		return b, nil
	})
	r.Register("OTA.Begin", "{timeout: %d, commit_timeout: %d, size: %d, ignore_same_version: %B}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			Timeout           int   `json:"timeout"`
			CommitTimeout     *int  `json:"commit_timeout"`
			Size              int64 `json:"size"`
			IgnoreSameVersion bool  `json:"ignore_same_version"`
		}
		if len(req.Params) > 0 {
			if err := json.Unmarshal(req.Params, &a); err != nil {
				return nil, rpc.Errorf(400, "invalid args: %v", err)
			}
		}
		if err := u.Begin(BeginOptions{Timeout: a.Timeout, CommitTimeout: a.CommitTimeout, Size: a.Size, IgnoreSameVersion: a.IgnoreSameVersion}); err != nil {
			return nil, rpcErr(err)
		}
		return nil, nil
	})
	r.Register("OTA.Write", "{offset: %lld, data: %V}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			Offset *int64 `json:"offset"`
			Data   string `json:"data"`
		}
		if err := json.Unmarshal(req.Params, &a); err != nil || a.Offset == nil {
			return nil, rpc.Errorf(400, "offset and data are required")
		}
		data, err := base64.StdEncoding.DecodeString(a.Data)
		if err != nil {
			return nil, rpc.Errorf(400, "invalid data")
		}
		if err := u.Write(*a.Offset, data); err != nil {
			return nil, rpcErr(err)
		}
		return nil, nil
	})
	r.Register("OTA.End", "", func(context.Context, *rpc.Request) (json.RawMessage, error) {
		if err := u.End(); err != nil {
			return nil, rpcErr(err)
		}
		return nil, nil
	})
	r.Register("OTA.Update", "{url: %T, commit_timeout: %d}", func(ctx context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			URL           string `json:"url"`
			CommitTimeout *int   `json:"commit_timeout"`
		}
		if json.Unmarshal(req.Params, &a) != nil || a.URL == "" {
			u.Log.Error("Failed to start update: Malformed request", console.Src("mgos_rpc_service_ota.c", 75))
			return nil, &rpc.Error{Code: -1, Message: "Malformed request"}
		}
		msg, err := s.update(ctx, a.URL, BeginOptions{CommitTimeout: a.CommitTimeout})
		if err != nil {
			return nil, rpcErr(err)
		}
		return nil, &rpc.Error{Code: 0, Message: msg}
	})
	r.Register("OTA.Commit", "", func(context.Context, *rpc.Request) (json.RawMessage, error) {
		if !u.Commit() {
			return nil, &rpc.Error{Code: -1}
		}
		return nil, nil
	})
	r.Register("OTA.Revert", "", func(context.Context, *rpc.Request) (json.RawMessage, error) {
		if !u.Boot.Revert() {
			return nil, &rpc.Error{Code: -1}
		}
		u.Reboot(100 * time.Millisecond)
		return nil, nil
	})
	r.Register("OTA.CreateSnapshot", "{set_as_revert: %B, commit_timeout: %d}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		var a struct {
			SetAsRevert   bool `json:"set_as_revert"`
			CommitTimeout *int `json:"commit_timeout"`
		}
		if len(req.Params) > 0 {
			json.Unmarshal(req.Params, &a)
		}
		slot, err := u.Boot.CreateSnapshot()
		if err != nil {
			u.Log.Error(err.Error(), console.Src("mgos_rpc_service_ota.c", 120))
			return nil, &rpc.Error{Code: slot, Message: err.Error()}
		}
		if a.SetAsRevert {
			bs := u.Boot.State()
			bs.IsCommitted, bs.RevertSlot, bs.ActiveSlot = false, slot, u.Boot.Slot
			if err := u.Boot.SetState(bs); err != nil {
				return nil, &rpc.Error{Code: -3, Message: "Failed to set boot state"}
			}
			if a.CommitTimeout != nil && *a.CommitTimeout >= 0 {
				if err := WriteCommitTimeout(u.FS, *a.CommitTimeout); err != nil {
					return nil, &rpc.Error{Code: -4, Message: "Failed to set commit timeout"}
				}
			}
		}
		return json.RawMessage(fmt.Sprintf(`{"slot": %d}`, slot)), nil
	})
	r.Register("OTA.GetBootState", "", func(context.Context, *rpc.Request) (json.RawMessage, error) {
		bs := u.Boot.State()
		return json.RawMessage(fmt.Sprintf(`{"active_slot": %d, "is_committed": %t, "revert_slot": %d, "commit_timeout": %d}`,
			bs.ActiveSlot, bs.IsCommitted, bs.RevertSlot, ReadCommitTimeout(u.FS))), nil
	})
	r.Register("OTA.SetBootState", "{active_slot: %d, is_committed: %B, revert_slot: %d, commit_timeout: %d}", func(_ context.Context, req *rpc.Request) (json.RawMessage, error) {
		bs := u.Boot.State()
		var a struct {
			ActiveSlot    *int  `json:"active_slot"`
			IsCommitted   *bool `json:"is_committed"`
			RevertSlot    *int  `json:"revert_slot"`
			CommitTimeout *int  `json:"commit_timeout"`
		}
		if json.Unmarshal(req.Params, &a) != nil || (a.ActiveSlot == nil && a.IsCommitted == nil && a.RevertSlot == nil && a.CommitTimeout == nil) {
			return nil, &rpc.Error{Code: -2}
		}
		if a.ActiveSlot != nil {
			bs.ActiveSlot = *a.ActiveSlot
		}
		if a.IsCommitted != nil {
			bs.IsCommitted = *a.IsCommitted
		}
		if a.RevertSlot != nil {
			bs.RevertSlot = *a.RevertSlot
		}
		n := slotCount(u.Boot.env.Table)
		if bs.ActiveSlot < 0 || bs.ActiveSlot >= n || bs.RevertSlot < 0 || bs.RevertSlot >= n {
			return nil, &rpc.Error{Code: -3}
		}
		if err := u.Boot.SetState(bs); err != nil {
			return nil, &rpc.Error{Code: -3}
		}
		if a.CommitTimeout != nil && *a.CommitTimeout >= 0 {
			if err := WriteCommitTimeout(u.FS, *a.CommitTimeout); err != nil {
				return nil, &rpc.Error{Code: -4}
			}
		}
		return nil, nil
	})
}

// update fetches url and feeds it to the updater (OTA.Update).
func (s *Service) update(ctx context.Context, url string, opts BeginOptions) (string, error) {
	u := s.U
	hc, err := s.HTTPClient(url)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", &rpc.Error{Code: -1, Message: "Malformed request"}
	}
	if s.ExtraHeaders != nil {
		for _, line := range strings.Split(s.ExtraHeaders(), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
	}
	if err := u.Begin(opts); err != nil {
		return "", err
	}
	u.Log.Info("Fetching "+url, console.Src("mgos_ota_http_client.c", 120))
	resp, err := hc.Do(req)
	if err != nil {
		u.mu.Lock()
		if u.sess != nil {
			u.failLocked(fmt.Errorf("Failed to connect: %v", err))
		}
		u.mu.Unlock()
		return "", errors.Join(u.End(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		u.mu.Lock()
		if u.sess != nil {
			u.failLocked(fmt.Errorf("Invalid HTTP response code: %d", resp.StatusCode))
		}
		u.mu.Unlock()
		return "", u.End()
	}
	u.mu.Lock()
	if u.sess != nil {
		u.sess.size = resp.ContentLength
	}
	u.mu.Unlock()
	buf := make([]byte, 4096)
	var off int64
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if err := u.Write(off, buf[:n]); err != nil {
				u.End()
				return "", err
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			u.mu.Lock()
			if u.sess != nil {
				u.failLocked(fmt.Errorf("Connection closed: %v", rerr))
			}
			u.mu.Unlock()
			return "", u.End()
		}
	}
	u.mu.Lock()
	skipped := u.sess != nil && u.sess.be.skipped
	u.mu.Unlock()
	if err := u.End(); err != nil {
		return "", err
	}
	if skipped {
		return "Version is the same as current", nil
	}
	return "Update applied, finalizing", nil
}
