package auth

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/mosemu/mosemu/rpc"
	"github.com/spf13/afero"
)

func guard(s Settings, files map[string]string) *Guard {
	fs := afero.NewMemMapFs()
	for n, d := range files {
		afero.WriteFile(fs, n, []byte(d), 0o644)
	}
	return &Guard{FS: fs, Settings: func() Settings { return s }, Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return time.Unix(1700000000, 0) }}
}

func TestWorkedExample(t *testing.T) {
	// rpc.md §3.3: admin/secret, realm RPC, nonce 1700000000, cnonce 12345.
	ha1 := md5.Sum([]byte("admin:RPC:secret"))
	if hex.EncodeToString(ha1[:]) != "cf685a4a101de8b1eec42ddc7c7efcf0" {
		t.Fatal("HA1")
	}
	g := guard(Settings{ACL: `[{"method":"*","acl":"admin"}]`, AuthDomain: "RPC", AuthFile: "pw"},
		map[string]string{"pw": "admin:RPC:cf685a4a101de8b1eec42ddc7c7efcf0\n"})
	req := &rpc.Request{Method: "Sys.GetInfo", Channel: rpc.ChannelInfo{Type: rpc.ChanWS},
		Auth: &rpc.FrameAuth{Realm: "RPC", Username: "admin", Nonce: "1700000000", CNonce: "12345", Response: "4dc7072db857c6822275e4bddf7176b0"}}
	if err := g.Check(context.Background(), req); err != nil || req.User != "admin" {
		t.Fatalf("worked example: %v user %q", err, req.User)
	}
}

func TestGuardRules(t *testing.T) {
	files := map[string]string{"pw": "admin:RPC:cf685a4a101de8b1eec42ddc7c7efcf0\n", "acl.json": `[{"method":"FS.*","acl":"+admin"}]`}
	good := &rpc.FrameAuth{Realm: "RPC", Username: "admin", Nonce: "1700000000", CNonce: "12345", Response: "4dc7072db857c6822275e4bddf7176b0"}
	tests := []struct {
		name   string
		s      Settings
		method string
		auth   *rpc.FrameAuth
		code   int // 0 allow, -1 drop
	}{
		{"no ACL allows all", Settings{AuthDomain: "RPC", AuthFile: "pw"}, "FS.Get", nil, 0},
		{"acl and acl_file both set drops", Settings{ACL: "[]", ACLFile: "acl.json"}, "FS.Get", nil, -1},
		{"unreadable acl file drops", Settings{ACLFile: "missing.json"}, "FS.Get", nil, -1},
		{"no matching entry", Settings{ACLFile: "acl.json"}, "Sys.Reboot", nil, 403},
		{"@file form", Settings{ACL: "@acl.json", AuthDomain: "RPC", AuthFile: "pw"}, "FS.Get", nil, 401},
		{"authenticated", Settings{ACLFile: "acl.json", AuthDomain: "RPC", AuthFile: "pw"}, "fs.get", good, 0},
		{"realm mismatch is 400", Settings{ACLFile: "acl.json", AuthDomain: "Other", AuthFile: "pw"}, "FS.Get", good, 400},
		{"algorithm mismatch is 400", Settings{ACLFile: "acl.json", AuthDomain: "RPC", AuthFile: "pw", AuthAlgo: 1}, "FS.Get", good, 400},
		{"missing field is 400", Settings{ACLFile: "acl.json", AuthDomain: "RPC", AuthFile: "pw"}, "FS.Get", &rpc.FrameAuth{Username: "admin"}, 400},
		{"password file missing", Settings{ACLFile: "acl.json", AuthDomain: "RPC", AuthFile: "nope"}, "FS.Get", good, 500},
		{"deny all entry", Settings{ACL: `[{"method":"*","acl":"-*"}]`}, "FS.Get", nil, 403},
		{"ch_type entry", Settings{ACL: `[{"ch_type":"UART","acl":"*"}]`}, "FS.Get", nil, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &rpc.Request{Method: tt.method, Auth: tt.auth, Channel: rpc.ChannelInfo{Type: rpc.ChanWS}}
			err := guard(tt.s, files).Check(context.Background(), req)
			var e *rpc.Error
			switch {
			case tt.code == 0 && err != nil, tt.code == -1 && !errors.Is(err, rpc.ErrDrop):
				t.Fatalf("err %v", err)
			case tt.code > 0 && (!errors.As(err, &e) || e.Code != tt.code):
				t.Fatalf("err %v, want %d", err, tt.code)
			}
		})
	}
}

func TestChallengeMessage(t *testing.T) {
	g := guard(Settings{ACL: `[{"method":"*","acl":"joe"}]`, AuthDomain: "RPC", AuthFile: "pw", AuthAlgo: 1}, nil)
	err := g.Check(context.Background(), &rpc.Request{Method: "X", Channel: rpc.ChannelInfo{Type: rpc.ChanUART}})
	var e *rpc.Error
	if !errors.As(err, &e) || e.Code != 401 {
		t.Fatal(err)
	}
	want := `{"auth_type": "digest", "nonce": 1700000000, "nc": 1, "realm": "RPC", "algorithm": "SHA-256"}`
	if e.Message != want {
		t.Fatalf("message %s\nwant    %s", e.Message, want)
	}
	reply := rpc.Reply(&rpc.Request{ID: json.RawMessage("1")}, "dev", nil, e)
	if string(reply) != `{"id":1,"src":"dev","error":{"code":401,"message":"{\"auth_type\": \"digest\", \"nonce\": 1700000000, \"nc\": 1, \"realm\": \"RPC\", \"algorithm\": \"SHA-256\"}"}}` {
		t.Fatalf("wire: %s", reply)
	}
}

func TestUserAllowed(t *testing.T) {
	for _, tt := range []struct {
		list, user string
		want       bool
	}{
		{"+joe,-mallory", "joe", true}, {"+joe,-mallory", "mallory", false}, {"+joe", "bob", false},
		{"-bad,*", "anyone", true}, {"jo?", "joe", true},
	} {
		if got := UserAllowed(tt.list, tt.user); got != tt.want {
			t.Errorf("UserAllowed(%q,%q) = %v", tt.list, tt.user, got)
		}
	}
}

func FuzzParseACL(f *testing.F) {
	f.Add([]byte(`[{"method":"FS.*","ch_type":"WS_in","acl":"+a,-b"},{"acl":"x"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		acl, err := ParseACL(b, nil)
		if err == nil {
			Match(acl, "FS.Get", "WS_in")
		}
	})
}

func FuzzHTDigest(f *testing.F) {
	f.Add([]byte("joe:RPC:0123\nbad line\n:::"), "joe", "RPC")
	f.Fuzz(func(t *testing.T, file []byte, user, realm string) { HTDigest(file, user, realm) })
}
