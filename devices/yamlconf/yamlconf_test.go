package yamlconf

import (
	"strings"
	"testing"
)

type doc struct {
	Name  string   `yaml:"name"`
	Every Duration `yaml:"every"`
	Items []struct {
		ID  string   `yaml:"id"`
		Max Duration `yaml:"max,omitempty"`
	} `yaml:"items"`
}

func TestDecode(t *testing.T) {
	var d doc
	y, err := Decode("f.yaml", []byte("name: a\nevery: 1m30s\nitems:\n  - id: x\n  - id: y\n    max: 2s\n"), &d)
	if err != nil {
		t.Fatal(err)
	}
	if d.Every.D().Seconds() != 90 || d.Items[1].Max.D().Seconds() != 2 {
		t.Errorf("decoded %+v", d)
	}
	if line, col := y.Pos("$.items[1].max"); line != 6 || col != 10 {
		t.Errorf("Pos = %d:%d, want 6:10", line, col)
	}
	if line, _ := y.Pos("$.items[1].nothing"); line != 5 {
		t.Errorf("Pos of a missing key = line %d, want its parent's line 5", line)
	}
	e := y.Errorf("$.items[0].id", "items[0].id", "bad %s", "id")
	if got := e.Error(); got != "f.yaml:4:9: items[0].id: bad id" {
		t.Errorf("Errorf = %q", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct{ src, want string }{
		{"name: a\nnmae: b\n", `f.yaml:2:1: unknown field "nmae"`},
		{"name: a\nname: b\n", `f.yaml:2:1: mapping key "name" already defined`},
		{"every: soon\n", `f.yaml:1:8: invalid duration "soon"`},
		{"every: -5s\n", `f.yaml:1:8: invalid duration "-5s"`},
		{"items:\n  - id: x\n    max: 3 days\n", `f.yaml:3:10: invalid duration "3 days"`},
		{"name: [\n", "f.yaml:"},
		{"items: {id: x}\n", "f.yaml:1:"},
	}
	for _, tt := range tests {
		var d doc
		_, err := Decode("f.yaml", []byte(tt.src), &d)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Decode(%q) error %v, want it to contain %q", tt.src, err, tt.want)
		}
	}
}

func TestErrors(t *testing.T) {
	var es Errors
	if es.Err() != nil {
		t.Error("empty Errors is not nil")
	}
	es = append(es, &Error{File: "a", Line: 1, Msg: "x"}, &Error{File: "b", Msg: "y"})
	if got := es.Err().Error(); got != "a:1: x\nb: y" {
		t.Errorf("Errors = %q", got)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: a\nevery: 1s\nitems:\n  - id: x\n"))
	f.Add([]byte("assets:\n !0 #0000"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d doc
		if _, err := Decode("f.yaml", data, &d); err != nil && !strings.HasPrefix(err.Error(), "f.yaml") {
			t.Fatalf("error without the file name: %v", err)
		}
	})
}
