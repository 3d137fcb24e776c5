// Package yamlconf decodes citygw's YAML files (profiles, inventory, gateway
// config, rules) strictly: unknown and duplicate keys are errors, and every
// error names the file, line, column and field, so a typo fails loading with a
// message a person can act on.
package yamlconf

import (
	"errors"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Error is a problem at a place in a YAML file.
type Error struct {
	File   string
	Line   int // 1-based; 0 when unknown
	Column int // 1-based; 0 when unknown
	Field  string
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is a list of errors found in one or more files.
type Errors []error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Err returns es as an error, or nil when empty.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Doc is a parsed YAML document kept for looking up the position of fields
// found invalid after decoding.
type Doc struct {
	File string
	ast  *ast.File
}

// Decode parses data from file into v, rejecting unknown and duplicate keys.
// It returns the parsed document for Doc.Errorf.
func Decode(file string, data []byte, v any) (doc *Doc, err error) {
	// The YAML library has panicked on some malformed documents (found by
	// FuzzParseInventory); a bad file must be an error, never a crash.
	defer func() {
		if p := recover(); p != nil {
			doc, err = nil, &Error{File: file, Msg: fmt.Sprintf("malformed YAML (parser failed: %v)", p)}
		}
	}()
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, fromYAML(file, err)
	}
	// Decode from the tree just parsed: Unmarshal would parse the bytes a
	// second time (half the time of a big inventory).
	if len(f.Docs) > 0 && f.Docs[0].Body != nil {
		if err := yaml.NodeToValue(f.Docs[0].Body, v, yaml.DisallowUnknownField(), yaml.Strict()); err != nil {
			return nil, fromYAML(file, err)
		}
	}
	return &Doc{File: file, ast: f}, nil
}

func fromYAML(file string, err error) error {
	var own *Error
	if errors.As(err, &own) {
		e := *own
		e.File = file
		return &e
	}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{File: file, Msg: ye.GetMessage()}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
		return e
	}
	return &Error{File: file, Msg: err.Error()}
}

// Pos returns the line and column of the node at path, a YAMLPath such as
// "$.fields[3].order", or of its closest existing ancestor.
func (d *Doc) Pos(path string) (line, col int) {
	if d == nil || d.ast == nil {
		return 0, 0
	}
	for p := path; p != "" && p != "$"; p = parent(p) {
		yp, err := yaml.PathString(p)
		if err != nil {
			continue
		}
		n, err := yp.FilterFile(d.ast)
		if err != nil || n == nil {
			continue
		}
		if tk := n.GetToken(); tk != nil && tk.Position != nil {
			return tk.Position.Line, tk.Position.Column
		}
	}
	return 0, 0
}

// Errorf returns an Error positioned at path (see Pos), naming field.
func (d *Doc) Errorf(path, field, format string, args ...any) *Error {
	line, col := d.Pos(path)
	file := ""
	if d != nil {
		file = d.File
	}
	return &Error{File: file, Line: line, Column: col, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func parent(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i <= 0 {
		return ""
	}
	return p[:i]
}
