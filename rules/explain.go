package rules

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// ExprNode is one sub-expression of a rule's condition with its value at
// the evaluation time, and its operands.
type ExprNode struct {
	Text  string `json:"text"`
	Value any    `json:"value"`
	// Error is why the sub-expression has no value: "no data" (empty
	// window, no previous reading), a missing field or attribute.
	Error string `json:"error,omitempty"`
	// NotReached marks an operand expr did not evaluate (the other side
	// of && or || already decided, the branch of ?: not taken); its value
	// is shown for the author's benefit.
	NotReached bool        `json:"not_reached,omitempty"`
	Children   []*ExprNode `json:"children,omitempty"`
}

// WindowSample is one sample of a field's history.
type WindowSample struct {
	Time  time.Time `json:"time"`
	Value any       `json:"value"`
}

// WindowUse is a window function of the condition with the samples it
// aggregated.
type WindowUse struct {
	Expr    string         `json:"expr"`
	Field   string         `json:"field"`
	Window  string         `json:"window"`
	From    time.Time      `json:"from"` // exclusive
	To      time.Time      `json:"to"`   // inclusive
	Samples []WindowSample `json:"samples"`
	Value   any            `json:"value"`
	Error   string         `json:"error,omitempty"`
}

// TimelineEvent is a change of the explained series' state during the
// replay (muted changes included: they are what the state machine did).
type TimelineEvent struct {
	Time  time.Time `json:"time"`
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"` // the episode start, for pending and firing
}

// Verdict is the state machine's view at the explanation time.
type Verdict struct {
	State      string    `json:"state"`                // inactive, pending or firing
	Since      time.Time `json:"since,omitzero"`       // episode start
	FiresAt    time.Time `json:"fires_at,omitzero"`    // pending: when it fires if the condition keeps holding
	FiredAt    time.Time `json:"fired_at,omitzero"`    // firing: when it fired
	FalseSince time.Time `json:"false_since,omitzero"` // firing: the condition has been false since
	ClearsAt   time.Time `json:"clears_at,omitzero"`   // firing: when it clears if the condition stays false
	Muted      string    `json:"muted,omitempty"`
	Members    int       `json:"members"` // assets of the group meeting the condition
	Need       int       `json:"need"`    // how many must
	GroupSize  int       `json:"group_size,omitempty"`
	Summary    string    `json:"summary"` // one sentence for a person
}

// Explanation says why a rule did or did not fire for an asset.
type Explanation struct {
	Rule       string          `json:"rule"`
	Asset      string          `json:"asset"`
	Group      string          `json:"group"`
	When       string          `json:"when,omitempty"`
	Absent     string          `json:"absent,omitempty"`
	For        string          `json:"for"`
	KeepFiring string          `json:"keep_firing_for"`
	At         time.Time       `json:"at"`                  // the explanation time (end of the replay)
	From       time.Time       `json:"from"`                // start of the replayed range
	Readings   int             `json:"readings"`            // readings replayed (the group's, for group rules)
	AssetLast  time.Time       `json:"asset_last,omitzero"` // the asset's last reading: when the tree was evaluated
	Values     map[string]any  `json:"values,omitempty"`    // the asset's last reading
	Result     *bool           `json:"result,omitempty"`    // the condition at AssetLast
	Tree       *ExprNode       `json:"tree,omitempty"`
	Windows    []WindowUse     `json:"windows,omitempty"`
	Timeline   []TimelineEvent `json:"timeline"`
	Verdict    Verdict         `json:"verdict"`
}

// ExplainOptions say what to explain.
type ExplainOptions struct {
	Rule, Asset string
	At          time.Time     // end of the replay; zero: now
	Lookback    time.Duration // how much history to replay; 0: the rule's longest window + for + keep_firing_for (at least 15m)
	Location    *time.Location
	Tick        time.Duration // engine tick during the replay; default 10s
	Silences    []Silence
}

// Explain replays the asset's recent readings (the whole group's, for a
// group rule) from src through an engine running the rule files, then
// evaluates every sub-expression of the rule's condition at the asset's
// last reading and reports the window contents the functions used and the
// state machine's verdict at opts.At.
func Explain(ctx context.Context, cat *devices.Catalog, inv *devices.Inventory, files []string, src Source, opts ExplainOptions) (*Explanation, error) {
	set, err := compileFiles(cat, inv, files)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRules, err)
	}
	cr := set.byID[opts.Rule]
	if cr == nil {
		return nil, fmt.Errorf("%w: no rule %q in the rule files", ErrArgs, opts.Rule)
	}
	a := inv.Lookup(opts.Asset)
	if a == nil {
		return nil, fmt.Errorf("%w: asset %s is not in the inventory", ErrArgs, opts.Asset)
	}
	if a.Kind != cr.kind {
		return nil, fmt.Errorf("%w: rule %s watches kind %s, asset %s is a %s", ErrArgs, cr.id(), cr.kind, a.ID, a.Kind)
	}
	if opts.At.IsZero() {
		opts.At = time.Now()
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	opts.At = opts.At.In(opts.Location)
	look := opts.Lookback
	if look <= 0 {
		look = ruleLookback(cr, set.kinds[cr.kind])
	}
	// The asset, the other assets of its group (a group rule) and of the
	// groups of same-kind rules that may inhibit it: they decide its
	// verdict. The engine's inventory holds only these, so the rest of the
	// city neither counts as silent nor costs ticks.
	key := cr.key(a)
	ids := replayedAssets(inv, cr, a)
	sub, err := subInventory(cat, inv, []string{a.Kind}, ids)
	if err != nil {
		return nil, err
	}
	from := opts.At.Add(-look)
	e, err := newReplayEngine(cat, sub, files, opts.Location, opts.Silences, nil, from)
	if err != nil {
		return nil, err
	}
	ecr := e.set.Load().byID[cr.id()]
	ea := sub.Lookup(a.ID)
	ex := &Explanation{Rule: cr.id(), Asset: a.ID, Group: key, When: cr.spec.When, For: cr.forD.String(),
		KeepFiring: cr.keep.String(), At: opts.At, From: from, Timeline: []TimelineEvent{}}
	if cr.absent > 0 {
		ex.Absent = cr.absent.String()
	}
	last := TimelineEvent{State: Inactive.String()}
	track := func(t time.Time) {
		ecr.st.mu.Lock()
		ev := TimelineEvent{Time: t, State: Inactive.String()}
		if s := ecr.st.series[key]; s != nil && s.state != Inactive {
			ev.State, ev.Since = s.state.String(), s.activeAt
		}
		ecr.st.mu.Unlock()
		if ev.State != last.State || !ev.Since.Equal(last.Since) {
			ex.Timeline = append(ex.Timeline, ev)
			last = ev
		}
	}
	q := Query{Inventory: sub, Kinds: []string{a.Kind}, Assets: ids, From: from, To: opts.At.Add(1)}
	n, err := e.replay(ctx, src, q, opts.Tick, track, nil)
	if err != nil {
		return nil, err
	}
	ex.Readings = n
	st := &e.assets[ea.Seq]
	ks := e.set.Load().kinds[a.Kind]
	if last := st.lastValues(nil); st.lastNs != 0 && len(last) == len(ks.schema.Fields) {
		ex.AssetLast = time.Unix(0, st.lastNs).In(opts.Location)
		ex.Values = map[string]any{}
		for i, f := range ks.schema.Fields {
			if last[i].Valid() {
				ex.Values[f.Name] = box(last[i])
			}
		}
		if ecr.prog != nil {
			c := newEvalCtx(opts.Location)
			c.reset(ks, ea, st, last, ex.AssetLast, opts.Location)
			ex.Tree, err = explainTree(ks, ecr, c)
			if err != nil {
				return nil, err
			}
			if b, ok := ex.Tree.Value.(bool); ok && ex.Tree.Error == "" {
				ex.Result = &b
			}
			ex.Windows = windowUses(ks, ecr, c)
		}
	}
	ex.Verdict = verdict(e, ecr, ea, key, opts.At, ex)
	return ex, nil
}

// replayedAssets lists the assets whose readings decide cr's verdict for
// asset a: a itself, its group's assets, and the groups of the same-kind
// rules that inhibit cr.
func replayedAssets(inv *devices.Inventory, cr *compiledRule, a *devices.Asset) []string {
	rs := []*compiledRule{cr}
	for _, src := range cr.inhibitedBy {
		if src.kind == cr.kind {
			rs = append(rs, src)
		}
	}
	ids := []string{a.ID}
	for _, b := range inv.Assets {
		if b == a || b.Kind != a.Kind {
			continue
		}
		for _, r := range rs {
			if r.grouped && r.key(b) == r.key(a) {
				ids = append(ids, b.ID)
				break
			}
		}
	}
	return ids
}

// ruleLookback is how much history decides a rule now: its longest window
// plus for and keep_firing_for, at least 15 minutes.
func ruleLookback(cr *compiledRule, ks *kindSet) time.Duration {
	var w time.Duration
	for _, p := range cr.probes {
		if p.kind == probeAgg && ks != nil {
			w = max(w, time.Duration(ks.aggs[p.idx].window))
		}
	}
	w = max(w, cr.absent)
	return max(w+cr.forD+cr.keep, 15*time.Minute)
}

// compileSub compiles a sub-expression of a rule's condition as the engine
// compiles conditions, for the rule's kind.
func compileSub(ks *kindSet, cr *compiledRule, src string) (*vm.Program, error) {
	fp := &patcher{fast: true, ks: ks, cr: cr, names: map[ast.Node]string{}, thresholds: map[string]any{}}
	naggs, nprops := len(ks.aggs), len(ks.props)
	opts := append(placeholderFunctions(), expr.Env(map[string]any{}), expr.Patch(fp),
		sandboxOption())
	prog, err := expr.Compile(src, opts...)
	if len(ks.aggs) != naggs || len(ks.props) != nprops {
		// A sub-expression of a compiled rule uses no new window or asset
		// property; this would grow the memos behind the context's back.
		return nil, errors.New("internal: sub-expression introduced a new window or asset property")
	}
	if err == nil && len(fp.errs) > 0 {
		err = errors.New(fp.errs[0].msg)
	}
	return prog, err
}

// explainTree evaluates every sub-expression of the rule's condition in c.
func explainTree(ks *kindSet, cr *compiledRule, c *evalCtx) (*ExprNode, error) {
	tree, err := parser.Parse(cr.spec.When)
	if err != nil {
		return nil, fmt.Errorf("parsing the condition of %s: %w", cr.id(), err)
	}
	x := &explainer{ks: ks, cr: cr, c: c}
	return x.node(tree.Node, true), nil
}

type explainer struct {
	ks *kindSet
	cr *compiledRule
	c  *evalCtx
}

func (x *explainer) eval(en *ExprNode) {
	prog, err := compileSub(x.ks, x.cr, en.Text)
	if err == nil {
		en.Value, err = x.c.vm.Run(prog, x.c)
	}
	switch {
	case err == nil:
	case errors.Is(err, errNoData):
		en.Value, en.Error = nil, "no data"
	case errors.Is(err, errIncomplete):
		en.Value, en.Error = nil, "not in this reading"
	default:
		en.Value, en.Error = nil, firstLine(err.Error())
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func isLiteral(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.StringNode, *ast.NilNode, *ast.ConstantNode:
		return true
	case *ast.UnaryNode:
		return isLiteral(n.Node)
	}
	return false
}

func (x *explainer) node(n ast.Node, reached bool) *ExprNode {
	en := &ExprNode{Text: n.String(), NotReached: !reached}
	x.eval(en)
	add := func(c ast.Node, reached bool) *ExprNode {
		if isLiteral(c) {
			return nil
		}
		ch := x.node(c, reached)
		en.Children = append(en.Children, ch)
		return ch
	}
	switch n := n.(type) {
	case *ast.UnaryNode:
		add(n.Node, reached)
	case *ast.BinaryNode:
		left := add(n.Left, reached)
		right := reached
		if left != nil {
			switch n.Operator {
			case "&&", "and":
				right = reached && left.Error == "" && left.Value == true
			case "||", "or":
				right = reached && left.Error == "" && left.Value == false
			case "??":
				right = reached && left.Value == nil
			default:
				right = reached && left.Error == ""
			}
		}
		add(n.Right, right)
	case *ast.ConditionalNode:
		cond := add(n.Cond, reached)
		t, f := reached, reached
		if cond != nil {
			t = reached && cond.Error == "" && cond.Value == true
			f = reached && cond.Error == "" && cond.Value == false
		}
		add(n.Exp1, t)
		add(n.Exp2, f)
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok {
			if _, agg := aggNames[id.Value]; agg || id.Value == "prev" || id.Value == "between" {
				return en // the window is listed separately
			}
		}
		for _, a := range n.Arguments {
			add(a, reached)
		}
	case *ast.BuiltinNode:
		for _, a := range n.Arguments {
			if _, closure := a.(*ast.PredicateNode); closure {
				return en
			}
		}
		for _, a := range n.Arguments {
			add(a, reached)
		}
	case *ast.ArrayNode:
		for _, a := range n.Nodes {
			add(a, reached)
		}
	}
	return en
}

// windowUses lists the window functions of the rule with their samples.
func windowUses(ks *kindSet, cr *compiledRule, c *evalCtx) []WindowUse {
	var out []WindowUse
	for _, p := range cr.probes {
		if p.kind != probeAgg {
			continue
		}
		spec := ks.aggs[p.idx]
		w := WindowUse{Expr: p.name, Field: ks.schema.Fields[spec.field].Name, Window: time.Duration(spec.window).String(),
			From: time.Unix(0, c.nowNs-spec.window).In(c.now.Location()), To: c.now, Samples: []WindowSample{}}
		var r *ring
		if c.st != nil {
			r = c.st.ringOf(spec.field)
		}
		if r != nil {
			for i := 0; i < int(r.n); i++ {
				t, v := r.at(i)
				if t > c.nowNs-spec.window && t <= c.nowNs {
					w.Samples = append(w.Samples, WindowSample{Time: time.Unix(0, t).In(c.now.Location()), Value: box(v)})
				}
			}
		}
		v, err := c.agg(p.idx)
		switch {
		case errors.Is(err, errNoData):
			w.Error = "no data"
		case err != nil:
			w.Error = err.Error()
		default:
			w.Value = v
		}
		out = append(out, w)
	}
	return out
}

func verdict(e *Engine, cr *compiledRule, a *devices.Asset, key string, at time.Time, ex *Explanation) Verdict {
	v := Verdict{State: Inactive.String(), Need: cr.need(key)}
	if cr.groups != nil {
		v.GroupSize = cr.groups.size[key]
	}
	cr.st.mu.Lock()
	s := cr.st.series[key]
	member := false
	if s != nil {
		v.State, v.Muted, v.Members = s.state.String(), s.muted, len(s.members)
		_, member = s.members[a.Seq]
		if s.state != Inactive {
			v.Since = s.activeAt
		}
		switch s.state {
		case Pending:
			v.FiresAt = s.activeAt.Add(cr.forD)
		case Firing:
			v.FiredAt = s.firedAt
			if !s.falseSince.IsZero() {
				v.FalseSince, v.ClearsAt = s.falseSince, s.falseSince.Add(cr.keep)
			}
		}
	}
	cr.st.mu.Unlock()
	v.Summary = summary(cr, a, key, at, ex, &v, member)
	return v
}

func ts(t time.Time) string { return t.Format(time.RFC3339) }

func summary(cr *compiledRule, a *devices.Asset, key string, at time.Time, ex *Explanation, v *Verdict, member bool) string {
	var b strings.Builder
	switch v.State {
	case "firing":
		fmt.Fprintf(&b, "FIRING since %s (pending from %s)", ts(v.FiredAt), ts(v.Since))
		if !v.FalseSince.IsZero() {
			fmt.Fprintf(&b, "; the condition has been false since %s, so it clears at %s if it stays false (keep_firing_for %s)",
				ts(v.FalseSince), ts(v.ClearsAt), cr.keep)
		} else {
			b.WriteString("; the condition still holds")
		}
	case "pending":
		fmt.Fprintf(&b, "PENDING since %s: it would fire at %s if the condition keeps holding (for %s)", ts(v.Since), ts(v.FiresAt), cr.forD)
	default:
		b.WriteString("NOT FIRING: ")
		switch {
		case cr.absent > 0 && ex.AssetLast.IsZero():
			fmt.Fprintf(&b, "no reading of %s since %s, but absence is counted from the start of the replay and %s have not passed", a.ID, ts(ex.From), cr.absent)
		case cr.absent > 0:
			fmt.Fprintf(&b, "%s last reported at %s, %s before %s; the rule needs %s of silence", a.ID, ts(ex.AssetLast), at.Sub(ex.AssetLast).Round(time.Second), ts(at), cr.absent)
		case ex.AssetLast.IsZero():
			fmt.Fprintf(&b, "no reading of %s between %s and %s, nothing to evaluate", a.ID, ts(ex.From), ts(at))
		case ex.Tree != nil && ex.Tree.Error != "":
			fmt.Fprintf(&b, "the condition could not be decided at %s (%s), which counts as false", ts(ex.AssetLast), ex.Tree.Error)
		case ex.Result != nil && !*ex.Result:
			fmt.Fprintf(&b, "the condition is false at %s (see which operand below)", ts(ex.AssetLast))
		case ex.Result != nil && *ex.Result && cr.grouped && v.Members < v.Need:
			fmt.Fprintf(&b, "%s meets the condition, but only %d of the %d assets needed in group %s do", a.ID, v.Members, v.Need, key)
		case ex.Result != nil && *ex.Result && !member:
			fmt.Fprintf(&b, "the condition holds at %s but the engine had not counted it (a later tick found it false)", ts(ex.AssetLast))
		default:
			b.WriteString("the condition does not hold")
		}
		// The last episode that never made it to firing.
		for i := len(ex.Timeline) - 1; i > 0; i-- {
			cur, prev := ex.Timeline[i], ex.Timeline[i-1]
			if cur.State == "inactive" && prev.State == "pending" && prev.Since.Equal(ex.From) {
				fmt.Fprintf(&b, "; it held from the start of the replay (%s) until %s: replay more history (-lookback) to see where it began", ts(ex.From), ts(cur.Time))
				break
			}
			if cur.State == "inactive" && prev.State == "pending" {
				fmt.Fprintf(&b, "; it last held from %s until %s (%s), shorter than for %s", ts(prev.Since), ts(cur.Time),
					cur.Time.Sub(prev.Since).Round(time.Second), cr.forD)
				break
			}
			if cur.State == "inactive" && prev.State == "firing" {
				fmt.Fprintf(&b, "; an episode that started at %s cleared at %s", ts(prev.Since), ts(cur.Time))
				break
			}
		}
	}
	if v.Muted != "" {
		fmt.Fprintf(&b, "; muted (%s): no case would be opened", v.Muted)
	}
	return b.String()
}

// FormatValue prints a value of an explanation for a person: floats with
// at most 6 significant digits, strings quoted.
func FormatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "–"
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return fmt.Sprint(x)
		}
		return strconv.FormatFloat(x, 'g', 6, 64)
	case string:
		return strconv.Quote(x)
	}
	return fmt.Sprint(v)
}

// WriteTree prints an expression tree, one sub-expression a line, each
// with its value, operands indented below their operator.
func WriteTree(w io.Writer, n *ExprNode) {
	writeNode(w, n, "", "")
}

func writeNode(w io.Writer, n *ExprNode, first, rest string) {
	val := FormatValue(n.Value)
	if n.Error != "" {
		val = "(" + n.Error + ")"
	}
	note := ""
	if n.NotReached {
		note = "   [not evaluated by the rule: decided by the other operand]"
	}
	fmt.Fprintf(w, "%s%s = %s%s\n", first, n.Text, val, note)
	for i, c := range n.Children {
		if i == len(n.Children)-1 {
			writeNode(w, c, rest+"└─ ", rest+"   ")
		} else {
			writeNode(w, c, rest+"├─ ", rest+"│  ")
		}
	}
}

// WriteExplanation prints an explanation for a person.
func WriteExplanation(w io.Writer, ex *Explanation) {
	fmt.Fprintf(w, "rule %s for asset %s (group %s)\n", ex.Rule, ex.Asset, ex.Group)
	if ex.When != "" {
		fmt.Fprintf(w, "  when: %s\n", ex.When)
	} else {
		fmt.Fprintf(w, "  absent: %s\n", ex.Absent)
	}
	fmt.Fprintf(w, "  for: %s   keep_firing_for: %s\n", ex.For, ex.KeepFiring)
	fmt.Fprintf(w, "  replayed %d reading(s) from %s to %s\n\n", ex.Readings, ts(ex.From), ts(ex.At))
	fmt.Fprintf(w, "VERDICT at %s: %s\n", ts(ex.At), ex.Verdict.Summary)
	if !ex.Verdict.Since.IsZero() && ex.Verdict.Since.Equal(ex.From) {
		fmt.Fprintf(w, "  (the condition already held when the replay began, so the episode may have started earlier: use -lookback)\n")
	}
	if ex.Verdict.Need > 1 || ex.Verdict.GroupSize > 0 {
		fmt.Fprintf(w, "  group %s: %d asset(s) meet the condition, %d needed, %d in the group\n", ex.Group, ex.Verdict.Members, ex.Verdict.Need, ex.Verdict.GroupSize)
	}
	if ex.AssetLast.IsZero() {
		return
	}
	fmt.Fprintf(w, "\nCONDITION at the last reading of %s, %s:\n", ex.Asset, ts(ex.AssetLast))
	if ex.Tree != nil {
		WriteTree(w, ex.Tree)
	}
	if len(ex.Windows) > 0 {
		fmt.Fprintf(w, "\nWINDOWS:\n")
		for _, win := range ex.Windows {
			val := FormatValue(win.Value)
			if win.Error != "" {
				val = "(" + win.Error + ")"
			}
			fmt.Fprintf(w, "  %s = %s over (%s, %s], %d sample(s)\n", win.Expr, val, ts(win.From), ts(win.To), len(win.Samples))
			for _, s := range win.Samples {
				fmt.Fprintf(w, "    %s  %s\n", ts(s.Time), FormatValue(s.Value))
			}
		}
	}
	if len(ex.Timeline) > 0 {
		fmt.Fprintf(w, "\nSTATE over the replay:\n")
		for _, t := range ex.Timeline {
			if t.State == "inactive" {
				fmt.Fprintf(w, "  %s  inactive\n", ts(t.Time))
			} else {
				fmt.Fprintf(w, "  %s  %s (episode start %s)\n", ts(t.Time), t.State, ts(t.Since))
			}
		}
	}
}
