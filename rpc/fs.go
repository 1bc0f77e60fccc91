package rpc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/afero"
)

// RegisterFS registers the FS.* methods over the device filesystem.
func RegisterFS(r Registrar, fsys afero.Fs, log *slog.Logger) {
	r.Register("FS.List", "{path: %Q}", func(_ context.Context, req *Request) (json.RawMessage, error) {
		infos, err := listDir(fsys, req)
		if err != nil {
			return nil, err
		}
		names := make([]string, len(infos))
		for i, fi := range infos {
			names[i] = fi.Name()
		}
		b, _ := json.Marshal(names)
		return b, nil
	})
	r.Register("FS.ListExt", "{path: %Q}", func(_ context.Context, req *Request) (json.RawMessage, error) {
		infos, err := listDir(fsys, req)
		if err != nil {
			return nil, err
		}
		parts := make([]string, len(infos))
		for i, fi := range infos {
			parts[i] = fmt.Sprintf(`{"name": %s, "size": %d}`, quote(fi.Name()), fi.Size())
		}
		return json.RawMessage("[" + strings.Join(parts, ",") + "]"), nil
	})
	r.Register("FS.Get", "{filename: %Q, offset: %ld, len: %ld}", func(_ context.Context, req *Request) (json.RawMessage, error) {
		a := struct {
			Filename string `json:"filename"`
			Offset   int64  `json:"offset"`
			Len      int64  `json:"len"`
		}{Len: -1}
		json.Unmarshal(req.Params, &a)
		if a.Filename == "" {
			return nil, Errorf(400, "filename is required")
		}
		if !validName(a.Filename) {
			return nil, Errorf(400, "invalid filename")
		}
		if a.Offset < 0 {
			return nil, Errorf(400, "illegal offset")
		}
		f, err := fsys.Open(a.Filename)
		if err != nil {
			return nil, Errorf(400, "failed to open file %q", a.Filename)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || st.IsDir() {
			return nil, Errorf(400, "failed to open file %q", a.Filename)
		}
		size := st.Size()
		off := min(a.Offset, size)
		n := size - off
		if a.Len >= 0 {
			n = min(n, a.Len)
		}
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
			return nil, Errorf(500, "fread")
		}
		log.Info("Sending "+a.Filename, "src", "mgos_service_fs.c:196")
		return marshalf(`{"data": %s, "left": %d}`, quote(base64.StdEncoding.EncodeToString(buf)), size-off-n), nil
	})
	r.Register("FS.Put", "{filename: %Q, offset: %ld, data: %V, append: %B}", func(_ context.Context, req *Request) (json.RawMessage, error) {
		a := struct {
			Filename string `json:"filename"`
			Offset   int64  `json:"offset"`
			Data     string `json:"data"`
			Append   bool   `json:"append"`
		}{Offset: -1}
		json.Unmarshal(req.Params, &a)
		if a.Filename == "" {
			return nil, Errorf(400, "filename is required")
		}
		if !validName(a.Filename) {
			return nil, Errorf(400, "invalid filename")
		}
		data, err := base64.StdEncoding.DecodeString(a.Data)
		if err != nil {
			return nil, Errorf(400, "invalid data")
		}
		var flag int
		switch {
		case a.Offset < 0 && a.Append:
			flag = os.O_WRONLY | os.O_CREATE | os.O_APPEND
		case a.Offset <= 0:
			flag = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		default:
			flag = os.O_RDWR
		}
		f, err := fsys.OpenFile(a.Filename, flag, 0o644)
		if err != nil {
			return nil, Errorf(400, "failed to open file %q", a.Filename)
		}
		if a.Offset > 0 {
			if _, err := f.Seek(a.Offset, io.SeekStart); err != nil {
				f.Close()
				return nil, Errorf(400, "failed to seek to %d", a.Offset)
			}
		}
		log.Info("Receiving "+a.Filename, "src", "mgos_service_fs.c:262")
		_, werr := f.Write(data)
		cerr := f.Close()
		if werr != nil || cerr != nil {
			return nil, Errorf(500, "failed to write data")
		}
		return nil, nil
	})
	r.Register("FS.Remove", "{filename: %Q}", func(_ context.Context, req *Request) (json.RawMessage, error) {
		var a struct {
			Filename string `json:"filename"`
		}
		json.Unmarshal(req.Params, &a)
		if a.Filename == "" {
			return nil, Errorf(400, "filename is required")
		}
		if !validName(a.Filename) {
			return nil, Errorf(400, "invalid filename")
		}
		err := fsys.Remove(a.Filename)
		rc := 0
		if err != nil {
			rc = -1
		}
		log.Info(fmt.Sprintf("Remove %s -> %d", a.Filename, rc), "src", "mgos_service_fs.c:322")
		if err != nil {
			return nil, Errorf(500, "remove failed")
		}
		return nil, nil
	})
	r.Register("FS.Rename", "{src: %Q, dst: %Q}", func(_ context.Context, req *Request) (json.RawMessage, error) {
		var a struct {
			Src string `json:"src"`
			Dst string `json:"dst"`
		}
		json.Unmarshal(req.Params, &a)
		if a.Src == "" || a.Dst == "" {
			return nil, Errorf(400, "src and dst are required")
		}
		if !validName(a.Src) || !validName(a.Dst) {
			return nil, Errorf(400, "invalid filename")
		}
		if err := fsys.Rename(a.Src, a.Dst); err != nil {
			return nil, Errorf(500, "rename failed")
		}
		return nil, nil
	})
}

// RegisterFSDirs registers FS.Mkdir and FS.Rmdir: {path: %Q}, making or
// removing one directory (its parent must exist; Rmdir needs it empty).
// rpc-service-fs of Mongoose OS 2.20 has no such methods (a real device
// answers 404 "No handler for FS.Mkdir"); mosemu offers them so that a
// directory tree can be laid out over RPC, in the style of its other FS.*
// methods: 400 when path is missing, 500 when the filesystem refuses.
func RegisterFSDirs(r Registrar, fsys afero.Fs, log *slog.Logger) {
	dirOp := func(method, verb string, op func(string) error) {
		r.Register(method, "{path: %Q}", func(_ context.Context, req *Request) (json.RawMessage, error) {
			var a struct {
				Path string `json:"path"`
			}
			json.Unmarshal(req.Params, &a)
			if a.Path == "" {
				return nil, Errorf(400, "path is required")
			}
			if !validName(a.Path) {
				return nil, Errorf(400, "invalid filename")
			}
			err := op(a.Path)
			rc := 0
			if err != nil {
				rc = -1
			}
			log.Info(fmt.Sprintf("%s %s -> %d", verb, a.Path, rc))
			if err != nil {
				return nil, Errorf(500, "%s failed", strings.ToLower(verb))
			}
			return nil, nil
		})
	}
	dirOp("FS.Mkdir", "Mkdir", func(p string) error { return fsys.Mkdir(p, 0o755) })
	dirOp("FS.Rmdir", "Rmdir", func(p string) error {
		st, err := fsys.Stat(p)
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("%s: not a directory", p)
		}
		return fsys.Remove(p)
	})
}

// validName refuses names the firmware's C strings cannot hold: a NUL
// would cut "rpc_auth.txt\x00.jpg" short on the device, and must not name
// a different file here.
func validName(name string) bool { return !strings.ContainsRune(name, 0) }

func listDir(fsys afero.Fs, req *Request) ([]os.FileInfo, error) {
	var a struct {
		Path string `json:"path"`
	}
	json.Unmarshal(req.Params, &a)
	if a.Path == "" {
		a.Path = "/"
	}
	if !validName(a.Path) {
		return nil, Errorf(400, "invalid filename")
	}
	d, err := fsys.Open(a.Path)
	if err != nil {
		return nil, Errorf(500, "failed to open directory %q", a.Path)
	}
	defer d.Close()
	infos, err := d.Readdir(-1)
	if err != nil {
		return nil, Errorf(500, "failed to read directory %q", a.Path)
	}
	return infos, nil
}
