package rules

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// RuleFile is the content of one rule file: a list of rules.
type RuleFile struct {
	Rules []*RuleSpec `yaml:"rules"`
}

// RuleSpec is one rule as its author writes it.
type RuleSpec struct {
	ID          string `yaml:"id"`
	Kind        string `yaml:"kind"`
	Description string `yaml:"description,omitempty"`
	// When is the per-asset condition, an expr-lang expression over the
	// kind's fields, asset.* and the rule functions. Exactly one of When and
	// Absent is set.
	When string `yaml:"when,omitempty"`
	// Absent makes an absence rule: the asset's condition is "has not
	// reported for this long".
	Absent        yamlconf.Duration `yaml:"absent,omitempty"`
	For           yamlconf.Duration `yaml:"for,omitempty"`
	KeepFiringFor yamlconf.Duration `yaml:"keep_firing_for,omitempty"`
	Severity      string            `yaml:"severity"`
	// GroupBy names the asset properties (asset, district, grid, model,
	// code or an attribute) whose values make the group key; default: asset.
	GroupBy []string          `yaml:"group_by,omitempty"`
	Group   *GroupSpec        `yaml:"group,omitempty"`
	Labels  map[string]string `yaml:"labels,omitempty"`
	Case    CaseSpec          `yaml:"case"`
	Shadow  bool              `yaml:"shadow,omitempty"`
	Inhibit *InhibitSpec      `yaml:"inhibit,omitempty"`
}

// GroupSpec makes a group rule: the group's condition holds when at least
// AtLeast of its assets and at least Percent % of them (either may be left
// out) meet the per-asset condition. Without it a grouped rule holds when
// any asset of the group does.
type GroupSpec struct {
	AtLeast int     `yaml:"at_least,omitempty"`
	Percent float64 `yaml:"percent,omitempty"`
}

// InhibitSpec mutes episodes of other rules that a firing episode of this
// rule explains. Match maps a target asset property to this rule's group
// label; by default each of this rule's group_by labels must equal the same
// property of the target.
type InhibitSpec struct {
	Rules []string          `yaml:"rules"`
	Match map[string]string `yaml:"match,omitempty"`
}

// CaseSpec says which case to open: the service code (looked up in the city
// code table by the case client) and text/template templates.
type CaseSpec struct {
	Service     string `yaml:"service"`
	Title       string `yaml:"title"`
	Description string `yaml:"description,omitempty"`
}

// Silence mutes episodes during a maintenance window. Empty selectors match
// everything; a silence with no selector at all is rejected.
type Silence struct {
	ID      string            `yaml:"id"`
	Rules   []string          `yaml:"rules,omitempty"`  // rule ids; a trailing * matches a prefix
	Assets  []string          `yaml:"assets,omitempty"` // any involved asset
	Labels  map[string]string `yaml:"labels,omitempty"` // group labels and rule labels that must all be equal
	Start   time.Time         `yaml:"start"`
	End     time.Time         `yaml:"end"`
	Comment string            `yaml:"comment,omitempty"`
}

// Validate checks a silence.
func (s *Silence) Validate() error {
	if s.ID == "" {
		return fmt.Errorf("silence: id is required")
	}
	if len(s.Rules) == 0 && len(s.Assets) == 0 && len(s.Labels) == 0 {
		return fmt.Errorf("silence %s: give at least one of rules, assets, labels (a silence of everything is not allowed)", s.ID)
	}
	if s.Start.IsZero() || s.End.IsZero() || !s.End.After(s.Start) {
		return fmt.Errorf("silence %s: start and end are required and end must be after start", s.ID)
	}
	return nil
}

func (s *Silence) active(t time.Time) bool { return !t.Before(s.Start) && t.Before(s.End) }

// Severities a rule may have.
var severities = map[string]bool{"critical": true, "major": true, "minor": true, "warning": true, "info": true}

var idRe = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$`)

// builtinGroupProps are asset properties usable in group_by and inhibit.match
// besides attributes.
var builtinGroupProps = map[string]bool{"asset": true, "district": true, "grid": true, "model": true, "code": true, "kind": true}

// parsedFile is a decoded rule file with what is needed to position errors.
type parsedFile struct {
	name  string
	src   []byte
	doc   *yamlconf.Doc
	ast   *ast.File
	rules []*RuleSpec
}

func readRuleFile(name string) (*parsedFile, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading rule file: %w", err)
	}
	return parseRuleFile(name, data)
}

// parseRuleFile decodes one rule file strictly.
func parseRuleFile(name string, data []byte) (*parsedFile, error) {
	var rf RuleFile
	doc, err := yamlconf.Decode(name, data, &rf)
	if err != nil {
		return nil, err
	}
	af, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, &yamlconf.Error{File: name, Msg: err.Error()}
	}
	return &parsedFile{name: name, src: data, doc: doc, ast: af, rules: rf.Rules}, nil
}

// exprStart returns where the text of the string at path begins in the file
// (1-based line and column) and, for block scalars, the indentation of the
// following lines.
func (pf *parsedFile) exprStart(path string) (line, col int, block bool) {
	yp, err := yaml.PathString(path)
	if err != nil {
		return 0, 0, false
	}
	n, err := yp.FilterFile(pf.ast)
	if err != nil || n == nil {
		line, col = pf.doc.Pos(path)
		return line, col, false
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return 0, 0, false
	}
	line, col = tk.Position.Line, tk.Position.Column
	switch n.(type) {
	case *ast.LiteralNode:
		// "|" or ">" indicator; the text starts on the next line.
		lines := strings.Split(string(pf.src), "\n")
		if line < len(lines) {
			l := lines[line] // next line (0-based index = line)
			return line + 1, len(l) - len(strings.TrimLeft(l, " ")) + 1, true
		}
		return line + 1, 1, true
	case *ast.StringNode:
		if s := tk.Origin; strings.HasPrefix(strings.TrimLeft(s, " \n"), "\"") || strings.HasPrefix(strings.TrimLeft(s, " \n"), "'") {
			col++
		}
	}
	return line, col, false
}
