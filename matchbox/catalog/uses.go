package catalog

import (
	"text/template"
	"text/template/parse"
)

// requestUse says what of the request variables a template can read: any
// of them (request), or only request.host (host).
type requestUse struct{ request, host bool }

func (u requestUse) or(v requestUse) requestUse {
	return requestUse{request: u.request || v.request, host: u.host || v.host}
}

// usesOf walks templates' parse trees for the request variables. It is
// conservative: anything that hands the whole variable map to something
// ({{.}}, {{range $k, $v := .}}, {{template "x" .}}, $ alone) counts as
// reading all of the request, so a cache key that leaves the request out
// is only ever used for output that cannot depend on it.
func usesOf(ts ...*template.Template) requestUse {
	var u requestUse
	for _, t := range ts {
		if t == nil {
			continue
		}
		for _, tmpl := range t.Templates() {
			if tmpl.Tree != nil && tmpl.Tree.Root != nil {
				u = u.or(walk(tmpl.Tree.Root, true))
			}
		}
	}
	return u
}

var all = requestUse{request: true, host: true}

// walk reports the request use of n. atRoot is whether dot is the
// variable map itself (false inside range and with bodies).
func walk(n parse.Node, atRoot bool) requestUse {
	var u requestUse
	switch n := n.(type) {
	case nil:
	case *parse.ListNode:
		if n == nil {
			return u
		}
		for _, c := range n.Nodes {
			u = u.or(walk(c, atRoot))
		}
	case *parse.ActionNode:
		u = walk(n.Pipe, atRoot)
	case *parse.IfNode:
		u = walk(n.Pipe, atRoot).or(walk(n.List, atRoot)).or(walk(n.ElseList, atRoot))
	case *parse.RangeNode:
		u = walk(n.Pipe, atRoot).or(walk(n.List, false)).or(walk(n.ElseList, atRoot))
	case *parse.WithNode:
		u = walk(n.Pipe, atRoot).or(walk(n.List, false)).or(walk(n.ElseList, atRoot))
	case *parse.TemplateNode:
		return all // another template may read anything it is handed
	case *parse.PipeNode:
		if n == nil {
			return u
		}
		for _, d := range n.Decl {
			u = u.or(walk(d, atRoot))
		}
		for _, c := range n.Cmds {
			u = u.or(walk(c, atRoot))
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			u = u.or(walk(a, atRoot))
		}
	case *parse.ChainNode:
		u = walk(n.Node, atRoot)
	case *parse.DotNode:
		if atRoot {
			return all
		}
	case *parse.FieldNode:
		if atRoot {
			u = fieldUse(n.Ident)
		}
	case *parse.VariableNode:
		if n.Ident[0] == "$" {
			u = fieldUse(n.Ident[1:]) // $ is always the variable map
		}
	case *parse.TextNode, *parse.CommentNode, *parse.IdentifierNode, *parse.BoolNode,
		*parse.NumberNode, *parse.StringNode, *parse.NilNode, *parse.BreakNode, *parse.ContinueNode:
	default:
		return all // a node this walk does not know: assume the worst
	}
	return u
}

// fieldUse is the use of .a.b.c (idents a, b, c) from the variable map.
func fieldUse(idents []string) requestUse {
	switch {
	case len(idents) == 0:
		return all // the whole map
	case idents[0] != "request":
		return requestUse{}
	case len(idents) == 2 && idents[1] == "host":
		return requestUse{host: true}
	}
	return all
}
