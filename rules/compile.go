package rules

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// maxExprNodes bounds the size of one expression: rules are meant to be
// short, and a runaway expression would slow every reading of its kind.
const maxExprNodes = 500

// aggSpec is one windowed aggregate a kind's rules use; identical aggregates
// across rules share one memo slot, so they are computed once per reading.
type aggSpec struct {
	op     aggOp
	field  int
	window int64 // ns
}

// kindSet is the compiled rules of one kind.
type kindSet struct {
	kind     string
	schema   *devices.Schema
	rules    []*compiledRule // evaluated on each reading (when-rules)
	absence  []*compiledRule // absent: rules, evaluated on Tick
	ageRules []*compiledRule // when-rules using age(), also evaluated on Tick
	aggs     []aggSpec
	aggIdx   map[aggSpec]int
	keep     []int64        // per field: how long history must be kept (0 = none)
	usesPrev bool           // a rule reads prev(): assets keep their previous reading
	props    []assetPropRef // asset properties the rules read, by memo slot
	subs     []subExpr      // shared arithmetic sub-expressions, by memo slot
	assets   []*devices.Asset
	slow     atomic.Bool // a reading of the kind went over the rule budget: time the next rule by rule
}

// assetPropRef is an asset property a kind's rules read (asset.*): a
// built-in one (id, district, lat, ...) or an attribute.
type assetPropRef struct {
	name    string
	builtin bool
}

// propSlot returns the memo slot of an asset property, adding it.
func (ks *kindSet) propSlot(name string, builtin bool) int {
	for i, p := range ks.props {
		if p.name == name && p.builtin == builtin {
			return i
		}
	}
	ks.props = append(ks.props, assetPropRef{name, builtin})
	return len(ks.props) - 1
}

// probeKind says where a captured value comes from.
type probeKind uint8

const (
	probeField probeKind = iota
	probeAgg
	probeAttr
	probeFunc
)

// probe is a value shown in an episode's evidence: a field, an aggregate or
// an asset attribute the expression reads.
type probe struct {
	name string
	kind probeKind
	idx  int
	attr string
	fn   func(*evalCtx) (any, error)
}

// compiledRule is a rule ready to run.
type compiledRule struct {
	// What every evaluation reads, together at the start (one cache line).
	prog *vm.Program
	st   *ruleState
	quar quarantine // cleared by a reload: a new compiledRule

	spec        *RuleSpec
	file        string
	line, col   int
	kind        string
	absent      time.Duration
	forD        time.Duration
	keep        time.Duration
	usesAge     bool
	probes      []probe
	thresholds  map[string]any
	fingerprint string
	title, desc *template.Template
	labels      map[string]string // rule labels (with severity)
	groupBy     []string
	grouped     bool              // group_by other than the asset
	groups      *groupIndex       // group keys and sizes, nil when per asset
	inhibits    map[string]string // inhibit: target property -> this rule's label
	inhibitedBy []*compiledRule
	m           ruleMetrics
}

func (cr *compiledRule) id() string { return cr.spec.ID }

// need is how many assets of the group must meet the condition.
func (cr *compiledRule) need(key string) int {
	g := cr.spec.Group
	if g == nil {
		return 1
	}
	n := max(g.AtLeast, 1)
	if g.Percent > 0 {
		size := 1
		if cr.groups != nil {
			size = cr.groups.size[key]
		}
		n = max(n, int(math.Ceil(g.Percent*float64(size)/100-1e-9)))
	}
	return n
}

// groupIndex is the group key of every asset of a kind for one group_by
// list, and how many assets each group has.
type groupIndex struct {
	keys   []string // by asset Seq; "" for assets of other kinds
	labels map[string]map[string]string
	size   map[string]int
}

// assetProp returns a group_by property of an asset.
func assetProp(a *devices.Asset, name string) string {
	switch name {
	case "asset", "id":
		return a.ID
	case "district":
		return a.District
	case "grid":
		return a.Grid
	case "model":
		return a.Model
	case "code":
		return a.Code
	case "kind":
		return a.Kind
	}
	return a.Attr(name)
}

func groupKeyOf(a *devices.Asset, by []string) (string, map[string]string) {
	labels := make(map[string]string, len(by))
	parts := make([]string, len(by))
	for i, b := range by {
		v := assetProp(a, b)
		labels[b] = v
		if len(by) == 1 {
			parts[i] = v
		} else {
			parts[i] = b + "=" + v
		}
	}
	return strings.Join(parts, ","), labels
}

// key returns the group key of asset a for the rule.
func (cr *compiledRule) key(a *devices.Asset) string {
	if cr.groups == nil {
		return a.ID
	}
	if a.Seq < len(cr.groups.keys) {
		if k := cr.groups.keys[a.Seq]; k != "" {
			return k
		}
	}
	k, _ := groupKeyOf(a, cr.groupBy)
	return k
}

func (cr *compiledRule) groupLabels(key string, a *devices.Asset) map[string]string {
	if cr.groups == nil {
		return map[string]string{"asset": key}
	}
	if l, ok := cr.groups.labels[key]; ok {
		return l
	}
	_, l := groupKeyOf(a, cr.groupBy)
	return l
}

// compiler compiles a rule set.
type compiler struct {
	cat    *devices.Catalog
	inv    *devices.Inventory
	kinds  map[string]*kindSet
	groups map[string]*groupIndex
	errs   yamlconf.Errors
}

func newCompiler(cat *devices.Catalog, inv *devices.Inventory) *compiler {
	return &compiler{cat: cat, inv: inv, kinds: map[string]*kindSet{}, groups: map[string]*groupIndex{}}
}

func (c *compiler) kindSet(kind string) *kindSet {
	ks := c.kinds[kind]
	if ks == nil {
		s := c.cat.Kinds[kind]
		ks = &kindSet{kind: kind, schema: s, aggIdx: map[aggSpec]int{}, keep: make([]int64, len(s.Fields))}
		if c.inv != nil {
			for _, a := range c.inv.Assets {
				if a.Kind == kind {
					ks.assets = append(ks.assets, a)
				}
			}
		}
		c.kinds[kind] = ks
	}
	return ks
}

func (c *compiler) groupIndex(kind string, by []string) *groupIndex {
	sig := kind + "\x00" + strings.Join(by, "\x00")
	if g, ok := c.groups[sig]; ok {
		return g
	}
	g := &groupIndex{labels: map[string]map[string]string{}, size: map[string]int{}}
	if c.inv != nil {
		for _, a := range c.inv.Assets {
			if a.Kind != kind {
				continue
			}
			if g.keys == nil { // none for a kind without assets
				g.keys = make([]string, c.inv.Len())
			}
			k, l := groupKeyOf(a, by)
			g.keys[a.Seq] = k
			g.size[k]++
			if _, ok := g.labels[k]; !ok {
				g.labels[k] = l
			}
		}
	}
	c.groups[sig] = g
	return g
}

// compileFile compiles the rules of one parsed file; errors are collected.
func (c *compiler) compileFile(pf *parsedFile, seen map[string]string) []*compiledRule {
	var out []*compiledRule
	for i, spec := range pf.rules {
		at := fmt.Sprintf("$.rules[%d]", i)
		if spec == nil {
			c.errs = append(c.errs, pf.doc.Errorf(at, "rules", "empty rule"))
			continue
		}
		cr := c.compileRule(pf, at, spec)
		if spec.ID != "" {
			if prev, dup := seen[spec.ID]; dup {
				c.errs = append(c.errs, pf.doc.Errorf(at+".id", "rule "+spec.ID+".id", "duplicate rule id (first in %s)", prev))
				continue
			}
			line, _ := pf.doc.Pos(at + ".id")
			seen[spec.ID] = fmt.Sprintf("%s:%d", pf.name, line)
		}
		if cr != nil {
			out = append(out, cr)
		}
	}
	return out
}

func (c *compiler) compileRule(pf *parsedFile, at string, spec *RuleSpec) *compiledRule {
	nerr := len(c.errs)
	name := "rule " + spec.ID
	if spec.ID == "" {
		name = at[2:]
	}
	add := func(key, format string, args ...any) {
		c.errs = append(c.errs, pf.doc.Errorf(at+"."+key, name+"."+key, format, args...))
	}
	if !idRe.MatchString(spec.ID) {
		add("id", "want a dotted lower-case id such as streetlight.dark_at_night, got %q", spec.ID)
	}
	ks := (*kindSet)(nil)
	if c.cat.Kinds[spec.Kind] == nil {
		add("kind", "unknown kind %q (known: %s)", spec.Kind, strings.Join(c.cat.KindNames(), ", "))
	} else {
		ks = c.kindSet(spec.Kind)
	}
	if !severities[spec.Severity] {
		add("severity", "want one of critical, major, minor, warning, info; got %q", spec.Severity)
	}
	if (spec.When == "") == (spec.Absent == 0) {
		add("when", "give exactly one of when (a condition) or absent (a duration)")
	}
	if spec.Case.Service == "" && !spec.Shadow {
		add("case.service", "required (the service code in the city code table)")
	}
	if spec.Case.Title == "" {
		add("case.title", "required")
	}
	for _, g := range spec.GroupBy {
		if !builtinGroupProps[g] && !isIdent(g) {
			add("group_by", "%q is not an asset property or attribute name", g)
		}
	}
	if g := spec.Group; g != nil {
		if g.AtLeast <= 0 && g.Percent <= 0 {
			add("group", "give at_least (> 0), percent (0 < p <= 100) or both (both must hold)")
		}
		if g.AtLeast < 0 || g.Percent < 0 || g.Percent > 100 {
			add("group", "at_least must be positive and percent within 0..100")
		}
		if len(spec.GroupBy) == 0 {
			add("group", "a group rule needs group_by (the assets a group is made of)")
		}
	}
	for k := range spec.Labels {
		if !isIdent(k) {
			add("labels", "label name %q must be an identifier", k)
		}
	}
	cr := &compiledRule{spec: spec, file: pf.name, kind: spec.Kind, absent: spec.Absent.D(), forD: spec.For.D(),
		keep: spec.KeepFiringFor.D(), groupBy: spec.GroupBy}
	cr.line, cr.col = pf.doc.Pos(at + ".id")
	cr.labels = map[string]string{"severity": spec.Severity}
	for k, v := range spec.Labels {
		cr.labels[k] = v
	}
	if len(spec.GroupBy) > 0 && !(len(spec.GroupBy) == 1 && spec.GroupBy[0] == "asset") {
		cr.grouped = true
		if ks != nil {
			cr.groups = c.groupIndex(spec.Kind, spec.GroupBy)
		}
	}
	if in := spec.Inhibit; in != nil {
		if len(in.Rules) == 0 {
			add("inhibit.rules", "list the rule ids this rule's episodes explain")
		}
		cr.inhibits = map[string]string{}
		if len(in.Match) == 0 {
			for _, g := range spec.GroupBy {
				cr.inhibits[g] = g
			}
			if len(spec.GroupBy) == 0 {
				cr.inhibits["asset"] = "asset"
			}
		}
		for target, label := range in.Match {
			own := append([]string{"asset"}, spec.GroupBy...)
			found := false
			for _, g := range own {
				found = found || g == label
			}
			if !found {
				add("inhibit.match", "%q is not one of this rule's group labels (%s)", label, strings.Join(own, ", "))
			}
			cr.inhibits[target] = label
		}
	}
	var err error
	funcs := template.FuncMap{"fmt": fmtValue}
	if cr.title, err = template.New("title").Funcs(funcs).Option("missingkey=zero").Parse(spec.Case.Title); err != nil {
		add("case.title", "template: %v", err)
	}
	if cr.desc, err = template.New("description").Funcs(funcs).Option("missingkey=zero").Parse(spec.Case.Description); err != nil {
		add("case.description", "template: %v", err)
	}
	if spec.When != "" && ks != nil {
		c.compileWhen(pf, at, cr, ks)
	}
	if len(c.errs) > nerr {
		return nil
	}
	// Trial-render the templates so that a misspelt field (.Asset.Id) fails
	// the check, not the first episode.
	td := sampleTemplateData(cr, ks)
	if _, err := render(cr.title, td); err != nil {
		add("case.title", "template: %v", err)
	}
	if _, err := render(cr.desc, td); err != nil {
		add("case.description", "template: %v", err)
	}
	if len(c.errs) > nerr {
		return nil
	}
	cr.fingerprint = fingerprint(spec)
	switch {
	case cr.absent > 0:
		ks.absence = append(ks.absence, cr)
	default:
		ks.rules = append(ks.rules, cr)
		if cr.usesAge {
			ks.ageRules = append(ks.ageRules, cr)
		}
	}
	return cr
}

// fingerprint identifies what decides a rule's series: a rule whose
// fingerprint is unchanged keeps its state across a reload.
func fingerprint(s *RuleSpec) string {
	g := ""
	if s.Group != nil {
		g = fmt.Sprintf("%d/%g", s.Group.AtLeast, s.Group.Percent)
	}
	return strings.Join([]string{s.Kind, s.When, s.Absent.String(), strings.Join(s.GroupBy, ","), g}, "\x00")
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// exprError maps an expression error at expr's line/column to the file.
func (c *compiler) exprError(pf *parsedFile, at string, cr *compiledRule, exprLine, exprCol int, msg string) {
	line, col, block := pf.exprStart(at + ".when")
	if exprLine > 1 {
		line += exprLine - 1
		if !block {
			col = 1
		}
	}
	col += exprCol
	c.errs = append(c.errs, &yamlconf.Error{File: pf.name, Line: line, Column: col, Field: "rule " + cr.spec.ID + ".when", Msg: msg})
}

func (c *compiler) compileWhen(pf *parsedFile, at string, cr *compiledRule, ks *kindSet) {
	// Pass 1 checks: every internal function is a typed expr.Function, so
	// the checker knows each field's type and reports type errors.
	p := &patcher{c: c, ks: ks, cr: cr, names: map[ast.Node]string{}, thresholds: map[string]any{}}
	opts := append(checkFunctions(), expr.Env(map[string]any{}), expr.AsBool(), expr.Patch(p),
		sandboxOption())
	_, err := expr.Compile(cr.spec.When, opts...)
	if len(p.errs) > 0 {
		e := p.errs[0]
		l, col := locate(cr.spec.When, e.loc.From)
		c.exprError(pf, at, cr, l, col, e.msg)
		return
	}
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			msg := fe.Message
			if strings.HasPrefix(msg, "unknown name ") {
				msg += fmt.Sprintf(" (not a field of kind %s, a function or asset.*)", ks.kind)
			}
			c.exprError(pf, at, cr, fe.Line, fe.Column, msg)
		} else {
			c.exprError(pf, at, cr, 1, 0, err.Error())
		}
		return
	}
	// Pass 2 compiles the program that runs: internal functions are
	// constants of the program (fastFuncs) receiving the evaluation context
	// (the run's env) and a small integer, with signatures expr calls
	// without reflection or an argument slice (OpCallTyped), returning
	// values the context boxed once per reading.
	compileFast := func(src string) (*vm.Program, error) {
		fp := &patcher{fast: true, c: c, ks: ks, cr: cr, names: map[ast.Node]string{}, thresholds: map[string]any{}}
		opts := append(placeholderFunctions(), expr.Env(map[string]any{}), expr.AsBool(), expr.Patch(fp),
			sandboxOption())
		prog, err := expr.Compile(src, opts...)
		if err == nil && len(fp.errs) > 0 {
			err = errors.New(fp.errs[0].msg)
		}
		return prog, err
	}
	var prog *vm.Program
	// Shared arithmetic sub-expressions (see shareSubexprs); should the
	// rewritten condition not compile, the condition as written does.
	if src, serr := c.shareSubexprs(ks, cr, cr.spec.When); serr == nil && src != cr.spec.When {
		prog, err = compileFast(src)
	}
	if prog == nil {
		prog, err = compileFast(cr.spec.When)
	}
	if err != nil {
		c.exprError(pf, at, cr, 1, 0, "internal: compiling the checked expression failed: "+err.Error())
		return
	}
	cr.prog = prog
	cr.probes = p.probes
	cr.thresholds = p.thresholds
	cr.usesAge = p.usesAge
}

// locate converts a rune offset in src to a 1-based line and 0-based column.
func locate(src string, off int) (line, col int) {
	line = 1
	i := 0
	for _, r := range src {
		if i == off {
			break
		}
		if r == '\n' {
			line++
			col = 0
		} else {
			col++
		}
		i++
	}
	return line, col
}

type patchErr struct {
	loc file.Location
	msg string
}

// patcher rewrites a rule expression after parsing and before type checking:
// field names become calls reading the field by its schema index, window
// functions become calls reading a memo slot, and time/sun helpers receive
// the evaluation context. Nothing is looked up by name at run time.
type patcher struct {
	fast       bool // run-time pass: untyped function values of the context
	c          *compiler
	ks         *kindSet
	cr         *compiledRule
	errs       []patchErr
	probes     []probe
	names      map[ast.Node]string
	thresholds map[string]any
	usesAge    bool
	seen       map[string]bool
	fields     map[*ast.CallNode]int // calls reading a field: its schema index
}

func (p *patcher) fail(n ast.Node, format string, args ...any) {
	p.errs = append(p.errs, patchErr{n.Location(), fmt.Sprintf(format, args...)})
}

func (p *patcher) addProbe(pr probe) {
	if p.seen == nil {
		p.seen = map[string]bool{}
	}
	if !p.seen[pr.name] {
		p.seen[pr.name] = true
		p.probes = append(p.probes, pr)
	}
}

var typeFuncs = [...]string{devices.Bool: "__fb", devices.Int: "__fi", devices.Float: "__ff", devices.String: "__fs"}
var prevFuncs = [...]string{devices.Bool: "__pb", devices.Int: "__pi", devices.Float: "__pf", devices.String: "__ps"}

func envNode() ast.Node { return &ast.IdentifierNode{Value: "$env"} }

// call builds a call of an internal function: in the checking pass a typed
// expr.Function receiving $env first, in the run-time pass a function value
// of the context's environment map without it (see fastEnv).
func (p *patcher) call(name string, args ...ast.Node) *ast.CallNode {
	if p.fast {
		switch {
		case name == "__fb":
			// bool fields: typed to return bool, no interface to dereference
		case len(name) == 4 && strings.HasPrefix(name, "__") && (name[2] == 'f' || name[2] == 'p'):
			name = name[:3] // __fi, __ff, __fs -> __f; __pb, ... -> __p
		}
		gen, ok := fastFuncs[name]
		var arg ast.Node
		if len(args) == 1 {
			arg = args[0]
		}
		in, isInt := arg.(*ast.IntegerNode)
		if !ok || !isInt {
			p.errs = append(p.errs, patchErr{msg: "internal: no run-time function " + name})
			return &ast.CallNode{Callee: &ast.IdentifierNode{Value: name}, Arguments: args}
		}
		// The function, bound to its integer argument, is a constant of
		// the program (pushed, not looked up by name) and receives the
		// evaluation context, the run's env.
		return &ast.CallNode{Callee: &ast.ConstantNode{Value: gen(in.Value)}, Arguments: []ast.Node{envNode()}}
	}
	return &ast.CallNode{Callee: &ast.IdentifierNode{Value: name}, Arguments: append([]ast.Node{envNode()}, args...)}
}

// fieldOf returns the schema index of an argument that was a field name.
func (p *patcher) fieldOf(n ast.Node) (int, bool) {
	c, ok := n.(*ast.CallNode)
	if !ok {
		return 0, false
	}
	i, ok := p.fields[c]
	return i, ok
}

// timeFuncs are the context functions without arguments.
var timeFuncs = map[string]string{
	"age": "__age", "sun_elevation": "__sun", "is_dark": "__dark", "is_day": "__day",
	"hour": "__hour", "minute": "__minute", "weekday": "__weekday", "time_of_day": "__tod", "is_weekend": "__weekend",
}

func (p *patcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if p.fast && n.Value == "__sub" {
			return // a shared sub-expression (shareSubexprs), patched with its call
		}
		if strings.HasPrefix(n.Value, "__") || n.Value == "$env" {
			p.fail(n, "%s is reserved", n.Value)
			return
		}
		i, ok := p.ks.schema.Index(n.Value)
		if !ok {
			return
		}
		f := p.ks.schema.Fields[i]
		nn := p.call(typeFuncs[f.Type], &ast.IntegerNode{Value: i})
		if p.fields == nil {
			p.fields = map[*ast.CallNode]int{}
		}
		p.fields[nn] = i
		ast.Patch(node, nn)
		p.names[nn] = f.Name
		p.addProbe(probe{name: f.Name, kind: probeField, idx: i})
	case *ast.MemberNode:
		id, ok := n.Node.(*ast.IdentifierNode)
		if !ok || id.Value != "asset" {
			return
		}
		prop, ok := n.Property.(*ast.StringNode)
		if !ok {
			p.fail(n, "asset properties are accessed as asset.name")
			return
		}
		fn, builtin := "__attr", false
		switch prop.Value {
		case "id", "district", "grid", "code", "model", "kind":
			fn, builtin = "__as", true
		case "lat", "lon":
			fn, builtin = "__af", true
		default:
			if !isIdent(prop.Value) {
				p.fail(n, "bad attribute name %q", prop.Value)
				return
			}
			p.addProbe(probe{name: "asset." + prop.Value, kind: probeAttr, attr: prop.Value})
		}
		var nn *ast.CallNode
		if p.fast {
			// One memo slot per property of the kind: boxed once per reading.
			nn = p.call("__a", &ast.IntegerNode{Value: p.ks.propSlot(prop.Value, builtin)})
		} else {
			nn = p.call(fn, &ast.StringNode{Value: prop.Value})
		}
		ast.Patch(node, nn)
		p.names[nn] = "asset." + prop.Value
	case *ast.BinaryNode:
		switch n.Operator {
		case "<", "<=", ">", ">=", "==", "!=":
		default:
			return
		}
		if name, ok := p.names[n.Left]; ok {
			if v, ok := literal(n.Right); ok {
				p.thresholds[name+" "+n.Operator] = v
			}
		} else if name, ok := p.names[n.Right]; ok {
			if v, ok := literal(n.Left); ok {
				p.thresholds[name+" "+flip(n.Operator)] = v
			}
		}
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok {
			return
		}
		name := id.Value
		if op, ok := aggNames[name]; ok {
			p.visitAgg(node, n, name, op)
			return
		}
		if fn, ok := timeFuncs[name]; ok {
			if len(n.Arguments) != 0 {
				p.fail(n, "%s() takes no arguments", name)
				return
			}
			if name == "age" {
				p.usesAge = true
			}
			var nn *ast.CallNode
			if p.fast {
				tf := fastTime[fn]
				nn = p.call(tf.name, &ast.IntegerNode{Value: tf.code})
			} else {
				nn = p.call(fn)
			}
			ast.Patch(node, nn)
			p.names[nn] = name + "()"
			if name == "age" || name == "sun_elevation" {
				p.addProbe(probe{name: name + "()", kind: probeFunc, fn: ctxFuncs[fn]})
			}
			return
		}
		switch name {
		case "__sub":
			if p.fast && len(n.Arguments) == 1 {
				ast.Patch(node, p.call("__sub", n.Arguments[0]))
			}
		case "prev":
			if len(n.Arguments) != 1 {
				p.fail(n, "prev takes one argument, a field of kind %s", p.ks.kind)
				return
			}
			i, ok := p.fieldOf(n.Arguments[0])
			if !ok {
				p.fail(n.Arguments[0], "prev needs a field of kind %s", p.ks.kind)
				return
			}
			f := p.ks.schema.Fields[i]
			p.ks.usesPrev = true
			nn := p.call(prevFuncs[f.Type], &ast.IntegerNode{Value: i})
			ast.Patch(node, nn)
			p.names[nn] = "prev(" + f.Name + ")"
		case "between":
			if len(n.Arguments) != 2 {
				p.fail(n, `between takes two times of day, as in between("22:00", "06:00")`)
				return
			}
			var mins [2]int
			for k, a := range n.Arguments {
				s, ok := a.(*ast.StringNode)
				var t time.Time
				var err error
				if ok {
					t, err = time.Parse("15:04", s.Value)
				}
				if !ok || err != nil {
					p.fail(a, `want a time of day such as "22:00"`)
					return
				}
				mins[k] = t.Hour()*60 + t.Minute()
			}
			if p.fast {
				ast.Patch(node, p.call("__tb", &ast.IntegerNode{Value: tbBetween + mins[0]*1440 + mins[1]}))
			} else {
				ast.Patch(node, p.call("__between", &ast.IntegerNode{Value: mins[0]}, &ast.IntegerNode{Value: mins[1]}))
			}
		}
	}
}

func (p *patcher) visitAgg(node *ast.Node, n *ast.CallNode, name string, op aggOp) {
	if len(n.Arguments) != 2 {
		p.fail(n, `%s takes a field and a window, as in %s(current_a, "10m")`, name, name)
		return
	}
	i, ok := p.fieldOf(n.Arguments[0])
	if !ok {
		p.fail(n.Arguments[0], "the first argument of %s must be a field of kind %s", name, p.ks.kind)
		return
	}
	f := p.ks.schema.Fields[i]
	if f.Type == devices.String && op != opChanges {
		p.fail(n.Arguments[0], "%s needs a numeric or boolean field; %s is a string", name, f.Name)
		return
	}
	s, ok := n.Arguments[1].(*ast.StringNode)
	if !ok {
		p.fail(n.Arguments[1], `the window of %s must be a duration string such as "10m"`, name)
		return
	}
	w, err := time.ParseDuration(s.Value)
	if err != nil || w <= 0 {
		p.fail(n.Arguments[1], `bad window %q: want a positive duration such as "30s", "10m", "2h"`, s.Value)
		return
	}
	if w > 7*24*time.Hour {
		p.fail(n.Arguments[1], "window %s is longer than the 7 days of history the engine keeps", w)
		return
	}
	spec := aggSpec{op: op, field: i, window: int64(w)}
	slot, ok := p.ks.aggIdx[spec]
	if !ok {
		slot = len(p.ks.aggs)
		p.ks.aggs = append(p.ks.aggs, spec)
		p.ks.aggIdx[spec] = slot
	}
	if int64(w) > p.ks.keep[i] {
		p.ks.keep[i] = int64(w)
	}
	nn := p.call("__agg", &ast.IntegerNode{Value: slot})
	ast.Patch(node, nn)
	label := fmt.Sprintf("%s(%s, %q)", name, f.Name, s.Value)
	p.names[nn] = label
	p.addProbe(probe{name: label, kind: probeAgg, idx: slot})
}

func literal(n ast.Node) (any, bool) {
	switch v := n.(type) {
	case *ast.IntegerNode:
		return v.Value, true
	case *ast.FloatNode:
		return v.Value, true
	case *ast.BoolNode:
		return v.Value, true
	case *ast.StringNode:
		return v.Value, true
	case *ast.UnaryNode:
		if v.Operator == "-" {
			switch x := v.Node.(type) {
			case *ast.IntegerNode:
				return -x.Value, true
			case *ast.FloatNode:
				return -x.Value, true
			}
		}
	}
	return nil, false
}

func flip(op string) string {
	switch op {
	case "<":
		return ">"
	case "<=":
		return ">="
	case ">":
		return "<"
	case ">=":
		return "<="
	}
	return op
}

// Function signatures the checker sees. The first argument of every
// internal function is the evaluation context ($env).
var (
	sigFieldB = new(func(any, int) bool)
	sigFieldI = new(func(any, int) int)
	sigFieldF = new(func(any, int) float64)
	sigFieldS = new(func(any, int) string)
	sigCtxF   = new(func(any) float64)
	sigCtxB   = new(func(any) bool)
	sigCtxI   = new(func(any) int)
)

// checkFunctions returns the typed functions of the checking pass. The
// user-facing names (avg, prev, age, ...) are declared so the parser treats
// them as calls; the patcher replaces them before they could ever run.
func checkFunctions() []expr.Option {
	opts := []expr.Option{
		expr.Function("__fb", fnField, sigFieldB), expr.Function("__fi", fnField, sigFieldI),
		expr.Function("__ff", fnField, sigFieldF), expr.Function("__fs", fnField, sigFieldS),
		expr.Function("__pb", fnPrev, sigFieldB), expr.Function("__pi", fnPrev, sigFieldI),
		expr.Function("__pf", fnPrev, sigFieldF), expr.Function("__ps", fnPrev, sigFieldS),
		expr.Function("__agg", fnAgg, sigFieldF),
		expr.Function("__as", fnAssetString, new(func(any, string) string)),
		expr.Function("__af", fnAssetFloat, new(func(any, string) float64)),
		expr.Function("__attr", fnAttr, new(func(any, string) any)),
		expr.Function("__between", fnBetween, new(func(any, int, int) bool)),
	}
	for _, name := range sortedKeys(timeFuncs) {
		fn := timeFuncs[name]
		impl := ctxFuncs[fn]
		var sig any = sigCtxF
		switch fn {
		case "__dark", "__day", "__weekend":
			sig = sigCtxB
		case "__hour", "__minute", "__weekday":
			sig = sigCtxI
		}
		opts = append(opts, expr.Function(fn, func(params ...any) (any, error) { return impl(params[0].(*evalCtx)) }, sig))
	}
	return append(opts, placeholderFunctions()...)
}

// placeholderFunctions declares the user-facing function names.
func placeholderFunctions() []expr.Option {
	never := func(params ...any) (any, error) { return nil, errors.New("internal: unpatched rule function") }
	var opts []expr.Option
	for _, name := range sortedKeys(timeFuncs) {
		opts = append(opts, expr.Function(name, never, new(func() any)))
	}
	for name := range aggNames {
		opts = append(opts, expr.Function(name, never, new(func(any, string) float64)))
	}
	return append(opts, expr.Function("prev", never, new(func(any) any)),
		expr.Function("between", never, new(func(string, string) bool)))
}

// fastFuncs make the run-time pass's internal functions. Each takes a
// small integer known at compile time (a field's schema index, a window
// memo slot, an asset property slot (kindSet.propSlot) or a context
// function's code (fastTime)) and returns a function of it that is a
// constant of the compiled program (pushed, not looked up in an environment
// map by name at every call) and takes the evaluation context, which is the
// run's env. Those returning bool are typed so that the VM has no interface
// to dereference; the others return values the context boxed once per
// reading. Errors travel as panics, which expr's VM recovers into the run's
// error; they are rare (no data, a missing field).
var fastFuncs = map[string]func(int) any{
	"__f": func(i int) any { return func(c any) any { return must(c.(*evalCtx).field(i)) } },
	"__fb": func(i int) any {
		return func(c any) bool { return fieldBool(c.(*evalCtx), i) }
	},
	"__p":   func(i int) any { return func(c any) any { return must(c.(*evalCtx).prevField(i)) } },
	"__agg": func(i int) any { return func(c any) any { return must(c.(*evalCtx).agg(i)) } },
	"__a":   func(i int) any { return func(c any) any { return must(c.(*evalCtx).prop(i)) } },
	"__t":   func(i int) any { return func(c any) any { return must(c.(*evalCtx).timeFunc(i)) } },
	"__tb":  func(i int) any { return func(c any) bool { return c.(*evalCtx).timeBool(i) } },
	"__sub": func(i int) any { return func(c any) any { return must(c.(*evalCtx).sub(i)) } },
}

// Codes of the context functions in the run-time pass: __t(code) returns
// a value, __tb(code) a bool; __tb(tbBetween + from*1440 + to) is
// between(from, to) in minutes after midnight.
const (
	tAge = iota
	tSun
	tTod
	tHour
	tMinute
	tWeekday
)

const (
	tbDark = iota
	tbDay
	tbWeekend
	tbBetween
)

// fastTime maps the checking pass's context functions to the run-time
// pass's calls.
var fastTime = map[string]struct {
	name string
	code int
}{
	"__age": {"__t", tAge}, "__sun": {"__t", tSun}, "__tod": {"__t", tTod}, "__hour": {"__t", tHour},
	"__minute": {"__t", tMinute}, "__weekday": {"__t", tWeekday},
	"__dark": {"__tb", tbDark}, "__day": {"__tb", tbDay}, "__weekend": {"__tb", tbWeekend},
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
