package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/mosemu/mosemu/rpc"
)

type httpTransport struct {
	url string
	hc  *http.Client
	c   *Client
}

func newHTTP(u string, tc *tls.Config, c *Client) *httpTransport {
	return &httpTransport{url: u, c: c, hc: &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}}
}

func (t *httpTransport) roundTrip(ctx context.Context, frame []byte, _ int64) ([]byte, error) {
	send := func(auth string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(append(frame, '\n')))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return t.hc.Do(req)
	}
	resp, err := send("")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == 401 && t.c.user == "" {
		resp.Body.Close()
		return nil, &rpc.Error{Code: 401, Message: "credentials required: " + resp.Header.Get("WWW-Authenticate")}
	}
	if resp.StatusCode == 401 {
		resp.Body.Close()
		auth := t.digest(resp.Header.Get("WWW-Authenticate"))
		if resp, err = send(auth); err != nil {
			return nil, err
		}
		if resp.StatusCode == 401 {
			resp.Body.Close()
			return nil, &rpc.Error{Code: 401, Message: "authentication failed"}
		}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("client: server returned an error: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// digest answers a WWW-Authenticate challenge as mos does (method POST,
// uri = URL path, nc 00000001).
func (t *httpTransport) digest(hdr string) string {
	p := (&http.Request{Header: http.Header{"Authorization": {strings.Replace(hdr, "Digest", "Digest", 1)}}})
	d := rpc.ParseDigestHeader(p)
	if d == nil {
		return ""
	}
	u, _ := url.Parse(t.url)
	algo := d.Params["algorithm"]
	h := hasher(algo)
	var cb [4]byte
	rand.Read(cb[:])
	cnonce := fmt.Sprint(binary.LittleEndian.Uint32(cb[:]))
	ha1 := hexsum(h, t.c.user+":"+d.Params["realm"]+":"+t.c.pass)
	ha2 := hexsum(h, "POST:"+u.Path)
	resp := hexsum(h, ha1+":"+d.Params["nonce"]+":00000001:"+cnonce+":"+d.Params["qop"]+":"+ha2)
	if algo == "" {
		algo = "MD5"
	}
	return fmt.Sprintf(`Digest username="%s", realm="%s", uri="%s", algorithm=%s, nonce="%s", nc=00000001, cnonce="%s", qop=%s, response="%s"`,
		t.c.user, d.Params["realm"], u.Path, algo, d.Params["nonce"], cnonce, d.Params["qop"], resp)
}

func (t *httpTransport) Close() error { t.hc.CloseIdleConnections(); return nil }
