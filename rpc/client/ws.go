package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
)

type wsTransport struct {
	c  *websocket.Conn
	mu sync.Mutex
}

func dialWS(ctx context.Context, url string, tc *tls.Config) (*wsTransport, error) {
	d := websocket.Dialer{TLSClientConfig: tc, Subprotocols: []string{"clubby.cesanta.com"}}
	h := http.Header{"Origin": {"https://api.cesanta.com/"}}
	c, _, err := d.DialContext(ctx, url, h)
	if err != nil {
		return nil, err
	}
	return &wsTransport{c: c}, nil
}

func (t *wsTransport) roundTrip(ctx context.Context, frame []byte, id int64) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		t.c.SetReadDeadline(dl)
	}
	if err := t.c.WriteMessage(websocket.TextMessage, append(frame, '\n')); err != nil {
		return nil, err
	}
	for {
		_, msg, err := t.c.ReadMessage()
		if err != nil {
			return nil, err
		}
		var r struct {
			ID int64 `json:"id"`
		}
		if json.Unmarshal(msg, &r) == nil && r.ID == id {
			return msg, nil
		}
	}
}

func (t *wsTransport) Close() error { return t.c.Close() }
