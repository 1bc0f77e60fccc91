// Package httpd is the device's HTTP server (the http-server library of
// Mongoose OS): static files from the filesystem with index_files and
// hidden_files, /upload guarded by upload_acl, digest protection from
// http.auth_domain/http.auth_file, extra_headers. /rpc is mounted by the
// device and is never under http.auth_* (it has rpc.auth_*).
//
// As on the firmware, hidden_files only hides files from this server: the
// FS.Get RPC still returns them to anyone the RPC ACL lets in.
package httpd

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/mosemu/mosemu/internal/glob"
	"github.com/mosemu/mosemu/rpc"
	"github.com/mosemu/mosemu/rpc/auth"
	"github.com/spf13/afero"
)

// Settings are the http.* keys.
type Settings struct {
	DocumentRoot, IndexFiles, HiddenFiles, UploadACL string
	AuthDomain, AuthFile                             string
	AuthAlgo                                         int
	ExtraHeaders                                     string
}

// Handler serves everything but /rpc.
type Handler struct {
	FS       afero.Fs
	Settings func() Settings
	Log      *slog.Logger
	Now      func() time.Time // nil: time.Now
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.Settings()
	if s.AuthDomain != "" && s.AuthFile != "" && !h.authorized(w, r, s) {
		return
	}
	for _, kv := range strings.Split(s.ExtraHeaders, "\r\n") {
		if k, v, ok := strings.Cut(kv, ":"); ok {
			w.Header().Set(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	if path.Clean(r.URL.Path) == "/upload" && r.Method == http.MethodPost {
		h.upload(w, r, s)
		return
	}
	h.serveFile(w, r, s)
}

// authorized checks HTTP digest credentials, answering 401 when missing or
// wrong.
func (h *Handler) authorized(w http.ResponseWriter, r *http.Request, s Settings) bool {
	d := rpc.ParseDigestHeader(r)
	if d != nil {
		user, err := auth.VerifyHTTPDigest(h.FS, s.AuthFile, s.AuthDomain, s.AuthAlgo, d, h.now(), h.Log)
		if err == nil && user != "" {
			return true
		}
	}
	// The challenge step of every login is not a finding; refused
	// credentials were logged as one by VerifyHTTPDigest.
	h.Log.Info(fmt.Sprintf("HTTP %s %s from %s: authentication required", r.Method, r.URL.Path, r.RemoteAddr), "src", "mgos_http_server.c:201")
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Digest qop="auth", realm="%s", nonce="%x"`, s.AuthDomain, h.now().Unix()))
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusUnauthorized)
	return false
}

// hidden applies http.hidden_files as mongoose does: a path is hidden when
// the pattern matches its start (so "rpc_auth.txt|*.pem" also hides
// rpc_auth.txt.bak and key.pem.old), checked on the path and its base name.
func (h *Handler) hidden(s Settings, p string) bool {
	return s.HiddenFiles != "" && (glob.MatchPrefix(s.HiddenFiles, strings.TrimPrefix(p, "/")) >= 0 || glob.MatchPrefix(s.HiddenFiles, path.Base(p)) >= 0)
}

func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, s Settings) {
	p := path.Clean("/" + r.URL.Path)
	if h.hidden(s, p) {
		h.Log.Warn(fmt.Sprintf("HTTP %s %s from %s: hidden file", r.Method, p, r.RemoteAddr), "src", "mgos_http_server.c:260", "finding", "hidden file")
		http.NotFound(w, r)
		return
	}
	full := path.Join(s.DocumentRoot, p)
	st, err := h.FS.Stat(full)
	if err == nil && st.IsDir() {
		found := false
		for _, idx := range strings.Split(s.IndexFiles, ",") {
			if idx = strings.TrimSpace(idx); idx != "" {
				if _, err := h.FS.Stat(path.Join(full, idx)); err == nil {
					full, found = path.Join(full, idx), true
					break
				}
			}
		}
		if !found {
			http.NotFound(w, r)
			return
		}
	} else if err != nil {
		http.NotFound(w, r)
		return
	}
	f, err := h.FS.Open(full)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	http.ServeContent(w, r, path.Base(full), time.Time{}, f)
}

// upload stores the files of a multipart POST /upload whose names pass
// upload_acl.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request, s Settings) {
	mr, err := r.MultipartReader()
	if err != nil {
		http.Error(w, "Bad request", http.StatusBadRequest)
		return
	}
	var done []string
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, "Bad request", http.StatusBadRequest)
			return
		}
		name := path.Base(part.FileName())
		if name == "." || name == "/" || part.FileName() == "" || strings.ContainsRune(name, 0) {
			continue
		}
		if !aclAllows(s.UploadACL, name) {
			h.Log.Warn(fmt.Sprintf("HTTP upload of %s from %s refused by upload_acl", name, r.RemoteAddr), "src", "mgos_http_server.c:320", "finding", "denied")
			http.Error(w, "Not allowed", http.StatusForbidden)
			return
		}
		f, err := h.FS.Create(name)
		if err != nil {
			http.Error(w, "Failed to open file", http.StatusInternalServerError)
			return
		}
		n, err := io.Copy(f, part)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			http.Error(w, "Failed to write file", http.StatusInternalServerError)
			return
		}
		done = append(done, fmt.Sprintf("Ok, %s - %d bytes.", name, n))
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, strings.Join(done, "\r\n")+"\r\n")
}

// aclAllows applies upload_acl to a file name.
func aclAllows(acl, name string) bool { return glob.MatchList(acl, name) }
