// Package auth is RPC authentication and authorization as the Mongoose OS
// firmware does it: HTTP digest (MD5 or SHA-256) against an htdigest file,
// in-frame or in the channel's Authorization header, and the RPC ACL.
//
// Known weakness, kept on purpose because the real firmware has it: there
// is no per-nonce replay tracking and nc is not checked, so a captured
// authenticated frame can be replayed as long as its nonce is less than an
// hour old.
package auth

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/mosemu/mosemu/internal/digest"
	"github.com/mosemu/mosemu/internal/glob"
	"github.com/mosemu/mosemu/rpc"
	"github.com/spf13/afero"
)

// NonceWindow is how long a nonce stays valid.
const NonceWindow = 3600 * time.Second

// Settings are the rpc.* keys that drive the guard.
type Settings struct {
	ACL        string // rpc.acl: JSON text or "@file"
	ACLFile    string // rpc.acl_file
	AuthDomain string // rpc.auth_domain
	AuthFile   string // rpc.auth_file
	AuthAlgo   int    // rpc.auth_algo: 0 MD5, 1 SHA-256
}

// Guard implements rpc.Guard.
type Guard struct {
	FS       afero.Fs
	Settings func() Settings
	Now      func() time.Time // nil: time.Now
	// Log receives the firmware's lines and the security findings: every
	// refused call is logged at WARN with a "finding" attribute.
	Log *slog.Logger
}

// Entry is one RPC ACL entry.
type Entry struct {
	Method string `json:"method"`
	ChType string `json:"ch_type"`
	ACL    string `json:"acl"`
}

// ParseACL parses an RPC ACL document: a JSON array of objects each with
// "acl" and at least one of "method" and "ch_type". Invalid entries are
// skipped and reported through skipped.
func ParseACL(b []byte, skipped func(msg string)) ([]Entry, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		var anyv any
		if json.Unmarshal(b, &anyv) == nil {
			return nil, errors.New("root element must be an array")
		}
		return nil, fmt.Errorf("failed to parse ACL JSON: %v", err)
	}
	var out []Entry
	for _, r := range raw {
		var e Entry
		if err := json.Unmarshal(r, &e); err != nil || e.ACL == "" || (e.Method == "" && e.ChType == "") {
			if skipped != nil {
				skipped(fmt.Sprintf("failed to parse ACL JSON entry %s", r))
			}
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Match returns the first entry matching the method and channel type.
func Match(acl []Entry, method, chType string) (Entry, bool) {
	for _, e := range acl {
		if e.ChType != "" && e.ChType != chType {
			continue
		}
		if e.Method != "" && !glob.Match(e.Method, method) {
			continue
		}
		return e, true
	}
	return Entry{}, false
}

// UserAllowed applies an entry's user list ("+u1,-u2,*"): the first
// matching pattern decides, '-' denies; no match denies.
func UserAllowed(list, user string) bool { return glob.MatchList(list, user) }

// HTDigest looks up user and realm in an htdigest file ("user:realm:HA1").
func HTDigest(file []byte, user, realm string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(file))
	for sc.Scan() {
		parts := strings.SplitN(strings.TrimSpace(sc.Text()), ":", 3)
		if len(parts) == 3 && parts[0] == user && parts[1] == realm {
			return parts[2], true
		}
	}
	return "", false
}

var (
	hasher = digest.Hasher
	hexsum = digest.Hex
)

func algoName(n int) string {
	if n == 1 {
		return "SHA-256"
	}
	return "MD5"
}

func (g *Guard) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

func (g *Guard) finding(kind string, req *rpc.Request, detail string) {
	msg := fmt.Sprintf("RPC %s: %s via %s %s", kind, req.Method, req.Channel.Type, req.Channel.Info)
	if req.User != "" {
		msg += " user " + req.User
	}
	if detail != "" {
		msg += " (" + detail + ")"
	}
	g.Log.Warn(msg, "src", "mgos_rpc.c:170", "finding", kind)
}

// loadACL returns the configured ACL, nil when there is none, or ErrDrop
// when the configuration is broken.
func (g *Guard) loadACL(s Settings) ([]Entry, error) {
	text := s.ACL
	if text != "" && s.ACLFile != "" {
		g.Log.Error("Both rpc.acl and rpc.acl_file are set", "src", "mgos_rpc.c:120")
		return nil, rpc.ErrDrop
	}
	name := ""
	switch {
	case strings.HasPrefix(text, "@"):
		name = text[1:]
	case text == "" && s.ACLFile != "":
		name = s.ACLFile
	case text == "":
		return nil, nil
	}
	b := []byte(text)
	if name != "" {
		var err error
		if b, err = afero.ReadFile(g.FS, name); err != nil {
			g.Log.Error(fmt.Sprintf("failed to read ACL file %s", name), "src", "mgos_rpc.c:131")
			return nil, rpc.ErrDrop
		}
	}
	acl, err := ParseACL(b, func(m string) { g.Log.Error(m, "src", "mgos_rpc.c:95") })
	if err != nil {
		g.Log.Error(err.Error(), "src", "mgos_rpc.c:90")
		return nil, rpc.ErrDrop
	}
	return acl, nil
}

// Check implements rpc.Guard in the firmware's order.
func (g *Guard) Check(_ context.Context, req *rpc.Request) error {
	s := g.Settings()
	acl, err := g.loadACL(s)
	if err != nil {
		g.finding("dropped", req, "broken ACL configuration")
		return err
	}
	if acl == nil {
		return nil // no ACL: everything allowed, no authentication asked
	}
	e, ok := Match(acl, req.Method, req.Channel.Type)
	if !ok {
		g.finding("denied", req, "no matching ACL entry")
		return rpc.Errorf(403, "unauthorized")
	}
	switch e.ACL {
	case "*", "+*":
		return nil
	case "-*":
		g.finding("denied", req, "ACL entry -*")
		return rpc.Errorf(403, "unauthorized")
	}
	if s.AuthDomain != "" && s.AuthFile != "" {
		if req.Auth != nil {
			user, err := g.checkFrameAuth(req.Auth, s)
			if err != nil {
				g.finding("bad request", req, err.Error())
				return err
			}
			req.User = user
		}
		if req.User == "" && req.Channel.HTTPAuth != nil {
			user, err := g.checkHTTPAuth(req.Channel.HTTPAuth, s)
			if err != nil {
				return err
			}
			req.User = user
		}
	}
	if req.User == "" {
		nonce := g.now().Unix()
		msg := fmt.Sprintf(`{"auth_type": "digest", "nonce": %d, "nc": 1, "realm": %s, "algorithm": "%s"}`,
			nonce, strconv.Quote(s.AuthDomain), algoName(s.AuthAlgo))
		// Every login starts here: this is the challenge step, not a finding
		// (refused credentials are logged as "bad password" findings).
		g.Log.Info(fmt.Sprintf("RPC auth requested: %s via %s %s", req.Method, req.Channel.Type, req.Channel.Info), "src", "mgos_rpc.c:170")
		return &rpc.Error{Code: 401, Message: msg, Challenge: &rpc.Challenge{Realm: s.AuthDomain, Nonce: nonce, Algorithm: algoName(s.AuthAlgo)}}
	}
	if !UserAllowed(e.ACL, req.User) {
		g.finding("denied", req, "user not in ACL "+e.ACL)
		return rpc.Errorf(403, "unauthorized")
	}
	return nil
}

func (g *Guard) ha1(s Settings, user, realm string) (string, error) {
	b, err := afero.ReadFile(g.FS, s.AuthFile)
	if err != nil {
		return "", rpc.Errorf(500, "failed to open password file")
	}
	ha1, ok := HTDigest(b, user, realm)
	if !ok {
		return "", nil
	}
	return ha1, nil
}

func (g *Guard) fresh(nonce uint64) bool {
	now := uint64(g.now().Unix())
	return now >= nonce && now-nonce < uint64(NonceWindow/time.Second)
}

// checkFrameAuth verifies the in-frame auth object; "" means not
// authenticated (stale nonce or wrong password), an error a bad request.
func (g *Guard) checkFrameAuth(a *rpc.FrameAuth, s Settings) (string, error) {
	if a.Realm == "" || a.Username == "" || a.Nonce == "" || a.CNonce == "" || a.Response == "" {
		return "", rpc.Errorf(400, "bad request")
	}
	algo := a.Algorithm
	if algo == "" {
		algo = "MD5"
	}
	if (algo != "MD5" && algo != "SHA-256") || algo != algoName(s.AuthAlgo) || a.Realm != s.AuthDomain {
		return "", rpc.Errorf(400, "bad request")
	}
	nonce, err := strconv.ParseUint(string(a.Nonce), 10, 64)
	if err != nil || !g.fresh(nonce) {
		return "", nil
	}
	ha1, err := g.ha1(s, a.Username, a.Realm)
	if err != nil {
		return "", err
	}
	h := hasher(algo)
	want := hexsum(h, fmt.Sprintf("%s:%s:1:%s:auth:%s", ha1, a.Nonce, a.CNonce, hexsum(h, "dummy_method:dummy_uri")))
	if ha1 == "" || !strings.EqualFold(want, a.Response) {
		g.Log.Warn("Invalid digest auth for user "+a.Username, "src", "mg_rpc.c:680", "finding", "bad password")
		return "", nil
	}
	g.Log.Debug("Auth ok, user "+a.Username, "src", "mg_rpc.c:684")
	return a.Username, nil
}

// checkHTTPAuth verifies an Authorization: Digest header (hex nonce, the
// request's method and URI).
func (g *Guard) checkHTTPAuth(d *rpc.HTTPDigest, s Settings) (string, error) {
	return VerifyHTTPDigest(g.FS, s.AuthFile, s.AuthDomain, s.AuthAlgo, d, g.now(), g.Log)
}

// VerifyHTTPDigest checks an HTTP Authorization: Digest header against an
// htdigest file as mongoose does: hex nonce no older than an hour, HA2 over
// the request's method and URI. It returns the user name, "" when the
// credentials are wrong or stale, or an error when the file is missing.
func VerifyHTTPDigest(fsys afero.Fs, authFile, realm string, algo int, d *rpc.HTTPDigest, now time.Time, log *slog.Logger) (string, error) {
	p := d.Params
	for _, k := range []string{"username", "cnonce", "response", "uri", "qop", "nc", "nonce"} {
		if p[k] == "" {
			return "", nil
		}
	}
	nonce, err := strconv.ParseUint(p["nonce"], 16, 64)
	if err != nil || uint64(now.Unix()) < nonce || uint64(now.Unix())-nonce >= uint64(NonceWindow/time.Second) {
		return "", nil
	}
	file, err := afero.ReadFile(fsys, authFile)
	if err != nil {
		return "", rpc.Errorf(500, "failed to open password file")
	}
	ha1, ok := HTDigest(file, p["username"], realm)
	if !ok {
		return "", nil
	}
	// The response is bound to the request it came with: mongoose hashes
	// the actual request URI (path and query), so a header captured for
	// one URL is refused on another.
	if p["uri"] != d.URI {
		log.Warn(fmt.Sprintf("Digest auth for user %s: uri %q does not match the request %q", p["username"], p["uri"], d.URI), "src", "mg_rpc.c:680", "finding", "bad request")
		return "", nil
	}
	h := hasher(algoName(algo))
	ha2 := hexsum(h, d.Method+":"+d.URI)
	want := hexsum(h, ha1+":"+p["nonce"]+":"+p["nc"]+":"+p["cnonce"]+":"+p["qop"]+":"+ha2)
	if !strings.EqualFold(want, p["response"]) {
		log.Warn("Invalid digest auth for user "+p["username"], "src", "mg_rpc.c:680", "finding", "bad password")
		return "", nil
	}
	return p["username"], nil
}
