package yamlconf

import (
	"fmt"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// Duration is a time.Duration written in YAML as a Go duration string such as
// "1m30s". A bad value fails decoding with its position.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML implements yaml.NodeUnmarshaler so that errors keep the node's position.
func (d *Duration) UnmarshalYAML(n ast.Node) error {
	s, ok := n.(*ast.StringNode)
	var text string
	if ok {
		text = s.Value
	} else {
		text = n.String()
	}
	v, err := time.ParseDuration(text)
	if err != nil || v < 0 {
		e := &Error{Msg: fmt.Sprintf("invalid duration %q (use a positive Go duration such as 500ms, 10s, 5m, 1h)", text)}
		if tk := n.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
		return e
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d Duration) String() string { return time.Duration(d).String() }
