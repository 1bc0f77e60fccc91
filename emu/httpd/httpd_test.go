package httpd

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/spf13/afero"
)

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }

func server(s Settings) (*httptest.Server, afero.Fs) {
	fs := afero.NewMemMapFs()
	afero.WriteFile(fs, "/index.html", []byte("<h1>device</h1>"), 0o644)
	afero.WriteFile(fs, "/secret.key", []byte("KEY"), 0o644)
	afero.WriteFile(fs, "pw", []byte("joe:dev:"+md5hex("joe:dev:secret")+"\n"), 0o644)
	h := &Handler{FS: fs, Settings: func() Settings { return s }, Log: slog.New(slog.DiscardHandler)}
	return httptest.NewServer(h), fs
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

func TestStaticFiles(t *testing.T) {
	srv, _ := server(Settings{DocumentRoot: "/", IndexFiles: "index.html", HiddenFiles: "*.key", UploadACL: "*", ExtraHeaders: "X-Device: emu"})
	defer srv.Close()
	tests := []struct {
		path string
		code int
		body string
	}{
		{"/", 200, "<h1>device</h1>"},
		{"/index.html", 200, "<h1>device</h1>"},
		{"/secret.key", 404, ""},
		{"/missing", 404, ""},
	}
	for _, tt := range tests {
		code, body := get(t, srv.URL+tt.path)
		if code != tt.code || (tt.body != "" && body != tt.body) {
			t.Errorf("%s: %d %q", tt.path, code, body)
		}
	}
	r, _ := http.Get(srv.URL + "/")
	if r.Header.Get("X-Device") != "emu" {
		t.Error("extra_headers not sent")
	}
}

func upload(t *testing.T, url, name, data string, hdr http.Header) int {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, _ := mw.CreateFormFile("file", name)
	io.WriteString(fw, data)
	mw.Close()
	req, _ := http.NewRequest("POST", url+"/upload", &b)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	for k, v := range hdr {
		req.Header[k] = v
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	return r.StatusCode
}

func TestUploadACL(t *testing.T) {
	srv, fs := server(Settings{DocumentRoot: "/", UploadACL: "*.txt,-*"})
	defer srv.Close()
	if c := upload(t, srv.URL, "notes.txt", "hello", nil); c != 200 {
		t.Fatalf("allowed upload: %d", c)
	}
	if b, _ := afero.ReadFile(fs, "notes.txt"); string(b) != "hello" {
		t.Fatalf("stored %q", b)
	}
	if c := upload(t, srv.URL, "conf9.json", "{}", nil); c != 403 {
		t.Fatalf("denied upload: %d", c)
	}
}

// TestDigest protects files with http.auth_*: no credentials gives 401 with
// a challenge; a client that answers it (as a browser does) gets the file.
func TestDigest(t *testing.T) {
	srv, _ := server(Settings{DocumentRoot: "/", AuthDomain: "dev", AuthFile: "pw", UploadACL: "*"})
	defer srv.Close()
	r, _ := http.Get(srv.URL + "/index.html")
	r.Body.Close()
	ch := r.Header.Get("WWW-Authenticate")
	m := regexp.MustCompile(`nonce="([0-9a-f]+)"`).FindStringSubmatch(ch)
	if r.StatusCode != 401 || m == nil {
		t.Fatalf("%d %q", r.StatusCode, ch)
	}
	answer := func(pass string) int {
		ha1 := md5hex("joe:dev:" + pass)
		ha2 := md5hex("GET:/index.html")
		resp := md5hex(ha1 + ":" + m[1] + ":00000001:abc:auth:" + ha2)
		req, _ := http.NewRequest("GET", srv.URL+"/index.html", nil)
		req.Header.Set("Authorization", fmt.Sprintf(`Digest username="joe", realm="dev", nonce="%s", uri="/index.html", qop=auth, nc=00000001, cnonce="abc", response="%s"`, m[1], resp))
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if c := answer("secret"); c != 200 {
		t.Fatalf("right password: %d", c)
	}
	if c := answer("wrong"); c != 401 {
		t.Fatalf("wrong password: %d", c)
	}
	// A header captured for /index.html does not open /secret.key, whether
	// it is sent as is or with its uri= edited to the new path.
	ha1 := md5hex("joe:dev:secret")
	resp := md5hex(ha1 + ":" + m[1] + ":00000001:abc:auth:" + md5hex("GET:/index.html"))
	for _, uri := range []string{"/index.html", "/secret.key"} {
		req, _ := http.NewRequest("GET", srv.URL+"/secret.key", nil)
		req.Header.Set("Authorization", fmt.Sprintf(`Digest username="joe", realm="dev", nonce="%s", uri="%s", qop=auth, nc=00000001, cnonce="abc", response="%s"`, m[1], uri, resp))
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 401 {
			t.Fatalf("header for /index.html (uri=%s) on /secret.key: %d", uri, r.StatusCode)
		}
	}
	_ = time.Now
}

// TestHiddenFilesMatchTheStart: mongoose hides a path when hidden_files
// matches its start.
func TestHiddenFilesMatchTheStart(t *testing.T) {
	srv, fs := server(Settings{DocumentRoot: "/", HiddenFiles: "rpc_auth.txt|*.pem", UploadACL: "*"})
	defer srv.Close()
	for name, hidden := range map[string]bool{"rpc_auth.txt": true, "rpc_auth.txt.bak": true, "key.pem": true,
		"key.pem.old": true, "index.html": false, "my_rpc_auth.txt": false} {
		afero.WriteFile(fs, "/"+name, []byte("x"), 0o644)
		if code, _ := get(t, srv.URL+"/"+name); (code == 404) != hidden {
			t.Errorf("%s: %d, hidden %v", name, code, hidden)
		}
	}
}
