package rules

import (
	"errors"
	"fmt"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// subExpr is a pure arithmetic sub-expression shared by the rules of a
// kind (or repeated within one rule), such as the expected lamp current
// asset.rated_power_w * dim_level / 100 / voltage_v: compiled once, and
// evaluated at most once per reading into a memo slot, however many rules
// read it. expr boxes every arithmetic result (an allocation each), so
// sharing them also saves the garbage.
type subExpr struct {
	src  string
	prog *vm.Program
}

// subSlot returns the memo slot of a sub-expression of the kind, compiling
// it on first use.
func (c *compiler) subSlot(ks *kindSet, cr *compiledRule, src string) (int, error) {
	for i, s := range ks.subs {
		if s.src == src {
			return i, nil
		}
	}
	fp := &patcher{fast: true, c: c, ks: ks, cr: cr, names: map[ast.Node]string{}, thresholds: map[string]any{}}
	opts := append(placeholderFunctions(), expr.Env(map[string]any{}), expr.Patch(fp), sandboxOption())
	prog, err := expr.Compile(src, opts...)
	if err == nil && len(fp.errs) > 0 {
		err = errors.New(fp.errs[0].msg)
	}
	if err != nil {
		return 0, fmt.Errorf("compiling the shared sub-expression %s: %w", src, err)
	}
	ks.subs = append(ks.subs, subExpr{src: src, prog: prog})
	return len(ks.subs) - 1, nil
}

// arithOps are the binary operators of a shareable sub-expression.
var arithOps = map[string]bool{"+": true, "-": true, "*": true, "/": true, "%": true, "**": true, "^": true}

// arithBuiltins are the builtins of a shareable sub-expression (one
// numeric argument, no side effects).
var arithBuiltins = map[string]bool{"abs": true, "ceil": true, "floor": true, "round": true}

// shareSubexprs rewrites a checked condition so that each of its maximal
// pure arithmetic sub-expressions that reads the reading or the asset (made
// of fields, asset properties, numeric literals, arithmetic operators and
// abs/ceil/floor/round) is read from the kind's memo (__sub(slot)). It
// returns src unchanged when there is none. The rewritten expression
// computes the same values: the sub-expression is evaluated only when the
// rule reaches it, as before, and at most once per reading.
func (c *compiler) shareSubexprs(ks *kindSet, cr *compiledRule, src string) (string, error) {
	tree, err := parser.Parse(src)
	if err != nil {
		return "", err
	}
	type info struct{ pure, reads, op bool }
	infos := map[ast.Node]info{}
	var cands []*ast.Node
	drop := func(children ...ast.Node) {
		for _, ch := range children {
			for i, p := range cands {
				if *p == ch {
					cands = append(cands[:i], cands[i+1:]...)
					break
				}
			}
		}
	}
	ast.Walk(&tree.Node, visitFunc(func(node *ast.Node) {
		var in info
		var children []ast.Node
		switch n := (*node).(type) {
		case *ast.IntegerNode, *ast.FloatNode:
			in = info{pure: true}
		case *ast.IdentifierNode:
			if _, ok := ks.schema.Index(n.Value); ok {
				in = info{pure: true, reads: true}
			}
		case *ast.MemberNode:
			if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == "asset" {
				if _, ok := n.Property.(*ast.StringNode); ok {
					in = info{pure: true, reads: true}
				}
			}
		case *ast.UnaryNode:
			if ch := infos[n.Node]; ch.pure && n.Operator == "-" {
				in = info{pure: true, reads: ch.reads, op: true}
				children = []ast.Node{n.Node}
			}
		case *ast.BinaryNode:
			l, r := infos[n.Left], infos[n.Right]
			if arithOps[n.Operator] && l.pure && r.pure {
				in = info{pure: true, reads: l.reads || r.reads, op: true}
				children = []ast.Node{n.Left, n.Right}
			}
		case *ast.BuiltinNode:
			if len(n.Arguments) == 1 && arithBuiltins[n.Name] {
				if a := infos[n.Arguments[0]]; a.pure {
					in = info{pure: true, reads: a.reads, op: true}
					children = []ast.Node{n.Arguments[0]}
				}
			}
		}
		infos[*node] = in
		if in.pure && in.reads && in.op {
			drop(children...) // this one contains them
			cands = append(cands, node)
		}
	}))
	if len(cands) == 0 {
		return src, nil
	}
	for _, p := range cands {
		slot, err := c.subSlot(ks, cr, (*p).String())
		if err != nil {
			return "", err
		}
		ast.Patch(p, &ast.CallNode{Callee: &ast.IdentifierNode{Value: "__sub"}, Arguments: []ast.Node{&ast.IntegerNode{Value: slot}}})
	}
	return tree.Node.String(), nil
}

type visitFunc func(node *ast.Node)

func (f visitFunc) Visit(node *ast.Node) { f(node) }

// sub is the value of shared sub-expression slot i for the reading,
// computed on first use (with the context's second VM: the rule's run is
// in progress on the first).
func (c *evalCtx) sub(i int) (any, error) {
	memo := i < len(c.smemoOK)
	if memo && c.smemoOK[i] {
		return c.smemo[i], c.serr[i]
	}
	v, err := c.svm.Run(c.ks.subs[i].prog, c)
	if err != nil {
		v = nil
		var fe interface{ Unwrap() error }
		if errors.As(err, &fe) && fe.Unwrap() != nil {
			err = fe.Unwrap() // the cause (no data, a missing field), not the sub-program's position
		}
	}
	if memo {
		c.smemo[i], c.serr[i], c.smemoOK[i] = v, err, true
	}
	return v, err
}
