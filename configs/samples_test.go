package configs

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSamplesLoad checks that every shipped sample is a valid conf9.json
// whose keys all exist in the schema.
func TestSamplesLoad(t *testing.T) {
	files, _ := filepath.Glob("samples/*.json")
	if len(files) == 0 {
		t.Fatal("no samples")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := New(NewSchema("esp32"))
		if err := c.Apply("", b, "*", nil); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if len(c.vals) == 0 {
			t.Errorf("%s sets nothing the schema knows", f)
		}
	}
}
