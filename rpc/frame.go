package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// ErrInvalidFrame is returned for bytes that are not an RPC frame.
var ErrInvalidFrame = errors.New("rpc: invalid frame")

// Frame is a parsed frame (request or response) as the device reads it.
type Frame struct {
	ID      json.RawMessage
	Src     string
	Dst     string
	Tag     string
	Method  string
	Params  json.RawMessage
	Auth    *FrameAuth
	Result  json.RawMessage
	ErrCode int
	ErrMsg  string
	IsError bool
}

// ParseFrame decodes a frame following the firmware's rules: one JSON
// object; "params" and legacy "args" are synonyms; id is a number or a
// string; an object with none of the known keys is invalid.
func ParseFrame(b []byte) (*Frame, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return nil, ErrInvalidFrame
	}
	f := &Frame{}
	known := 0
	str := func(key string, dst *string) error {
		v, ok := raw[key]
		if !ok {
			return nil
		}
		known++
		if err := json.Unmarshal(v, dst); err != nil {
			return ErrInvalidFrame
		}
		return nil
	}
	for _, k := range []struct {
		key string
		dst *string
	}{{"src", &f.Src}, {"dst", &f.Dst}, {"tag", &f.Tag}, {"method", &f.Method}} {
		if err := str(k.key, k.dst); err != nil {
			return nil, err
		}
	}
	if v, ok := raw["id"]; ok {
		known++
		v = bytes.TrimSpace(v)
		if len(v) == 0 || !(v[0] == '"' || v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
			return nil, ErrInvalidFrame
		}
		f.ID = v
	}
	if _, ok := raw["v"]; ok {
		known++
	}
	for _, k := range []string{"args", "params"} {
		if v, ok := raw[k]; ok {
			known++
			f.Params = v
		}
	}
	if v, ok := raw["auth"]; ok {
		known++
		var a FrameAuth
		if err := json.Unmarshal(v, &a); err == nil {
			f.Auth = &a
		} else {
			f.Auth = &FrameAuth{} // malformed: rejected later as a bad request
		}
	}
	if v, ok := raw["result"]; ok {
		known++
		f.Result = v
	}
	if v, ok := raw["error"]; ok {
		known++
		f.IsError = true
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		json.Unmarshal(v, &e)
		f.ErrCode, f.ErrMsg = e.Code, e.Message
	}
	if known == 0 {
		return nil, ErrInvalidFrame
	}
	return f, nil
}

// idText renders an id as the firmware echoes it: raw when it is all
// digits (so a string "123" comes back as the number 123), quoted otherwise.
func idText(id json.RawMessage) string {
	s := string(id)
	if len(s) >= 2 && s[0] == '"' {
		var u string
		if json.Unmarshal(id, &u) == nil {
			s = u
		}
	}
	digits := s != ""
	for _, c := range s {
		if c < '0' || c > '9' {
			digits = false
			break
		}
	}
	if digits {
		return s
	}
	return strconv.Quote(s)
}

// Reply renders a response frame exactly as the firmware does:
// {"id":..,"src":"..","dst":"..","tag":"..",<payload>} with no spaces added.
func Reply(req *Request, localID string, result json.RawMessage, rerr *Error) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":`)
	b.WriteString(idText(req.ID))
	src := localID
	if req.Dst != "" {
		src = req.Dst
	}
	b.WriteString(`,"src":`)
	writeJSONString(&b, src)
	if req.Src != "" {
		b.WriteString(`,"dst":`)
		writeJSONString(&b, req.Src)
	}
	if req.Tag != "" {
		b.WriteString(`,"tag":`)
		writeJSONString(&b, req.Tag)
	}
	if rerr != nil {
		b.WriteString(`,"error":{"code":`)
		b.WriteString(strconv.Itoa(rerr.Code))
		if rerr.Message != "" {
			b.WriteString(`,"message":`)
			writeJSONString(&b, rerr.Message)
		}
		b.WriteString(`}}`)
		return b.Bytes()
	}
	b.WriteString(`,"result":`)
	if len(result) == 0 {
		b.WriteString("null")
	} else {
		b.Write(result)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	b.Truncate(b.Len() - 1) // Encode's newline
}
