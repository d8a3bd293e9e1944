// Package expr owns the `when` conditions of routes (SPEC.md 13): CEL
// expressions compiled and type-checked once at load, with every error at
// its place inside the expression, and evaluated per request over a lazy
// view of the request, the route's regex captures and the verified claims.
// It imports cel-go and the standard library only; never net/http, policy
// or any other gatehouse package (policy imports it).
package expr

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
)

// Limits of evaluation. CostLimit is in CEL cost units (about one per
// operation, a tenth per byte a string operation reads): 100,000 units are
// a few hundred microseconds at most. An expression whose worst case, with
// every input string, list and map of MaxInputSize, stays within the limit
// needs no meter at run time; the others are metered and stop at the limit.
const (
	CostLimit    = 100_000
	MaxInputSize = 64 << 10
)

// Claims reads a verified token's claims by claim path (policy.Claims has
// the same method): values as encoding/json decodes them.
type Claims interface {
	Claim(path string) (any, bool)
}

// Input is what a condition sees of one request. The caller fills it
// (usually on its stack); Eval reads it and keeps nothing.
type Input struct {
	Method string
	Path   string // canonical (policy.Normalize)
	Host   string
	// Header is the request's header after stripping, keyed as net/http
	// keys it (canonical names); request.headers looks names up
	// case-insensitively and gives the first value.
	Header   map[string][]string
	RawQuery string // parsed only when request.query is read
	ClientIP string // filled when Program.Needs(NeedClientIP)
	Now      time.Time
	Claims   Claims // nil: no token (claims is an empty map)
}

// Need says which expensive inputs a program reads, so the caller fills
// only those.
type Need uint8

const (
	NeedClientIP Need = 1 << iota
	NeedNow
)

// Error is a compile error at a place inside the expression: Line is
// 1-based, Col 0-based in characters (runes), as CEL counts.
type Error struct {
	Line, Col int
	Msg       string
}

func (e *Error) Error() string { return fmt.Sprintf("%d:%d: %s", e.Line, e.Col+1, e.Msg) }

// Program is a compiled condition. It is immutable and safe for concurrent
// use.
type Program struct {
	Source  string
	prog    cel.Program
	re      *regexp.Regexp // the route's location regex, for route.captures; may be nil
	needs   Need
	claims  []string // the top-level claims the expression reads
	metered bool
	// CostMax is the static worst-case estimate (at MaxInputSize inputs).
	CostMax uint64
}

var (
	envOnce sync.Once
	baseEnv *cel.Env
	envErr  error
)

func env() (*cel.Env, error) {
	envOnce.Do(func() {
		baseEnv, envErr = cel.NewEnv(
			cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
			cel.Variable("request.method", cel.StringType),
			cel.Variable("request.path", cel.StringType),
			cel.Variable("request.host", cel.StringType),
			cel.Variable("request.headers", cel.MapType(cel.StringType, cel.StringType)),
			cel.Variable("request.query", cel.MapType(cel.StringType, cel.ListType(cel.StringType))),
			cel.Variable("route.captures", cel.MapType(cel.StringType, cel.StringType)),
			cel.Variable("client_ip", cel.StringType),
			cel.Variable("now", cel.TimestampType),
			cel.CrossTypeNumericComparisons(true),
			ext.Strings(),
			ext.Network(),
		)
	})
	return baseEnv, envErr
}

// Compile compiles src, which must evaluate to a bool. re is the route's
// location regex (nil for other locations): route.captures.NAME must name
// one of its groups. Every problem found is returned, each at its place.
func Compile(src string, re *regexp.Regexp) (*Program, []*Error) {
	e, err := env()
	if err != nil {
		return nil, []*Error{{Line: 1, Msg: "cel environment: " + err.Error()}}
	}
	checked, iss := e.Compile(src)
	if iss != nil && iss.Err() != nil {
		var out []*Error
		for _, ce := range iss.Errors() {
			out = append(out, &Error{Line: max(ce.Location.Line(), 1), Col: max(ce.Location.Column(), 0), Msg: ce.Message})
		}
		return nil, out
	}
	if !checked.OutputType().IsExactType(types.BoolType) {
		return nil, []*Error{{Line: 1, Msg: fmt.Sprintf("when must evaluate to a bool, this evaluates to %s", checked.OutputType())}}
	}
	p := &Program{Source: src, re: re}
	if errs := p.scan(checked); len(errs) > 0 {
		return nil, errs
	}
	est, err := e.EstimateCost(checked, sizeBound{})
	if err != nil {
		return nil, []*Error{{Line: 1, Msg: "estimate cost: " + err.Error()}}
	}
	p.CostMax = est.Max
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	if est.Max > CostLimit {
		// Loops over inputs: meter every evaluation (costs a few
		// allocations), stopping at the limit.
		p.metered = true
		opts = append(opts, cel.CostLimit(CostLimit))
	}
	p.prog, err = e.Program(checked, opts...)
	if err != nil {
		return nil, []*Error{{Line: 1, Msg: "build program: " + err.Error()}}
	}
	return p, nil
}

// Needs reports which of the optional inputs the program reads.
func (p *Program) Needs() Need { return p.needs }

// Metered reports whether evaluations are metered (the static estimate
// exceeds CostLimit).
func (p *Program) Metered() bool { return p.metered }

// ClaimNames returns the top-level claim names the expression reads
// (claims may be read only by name, so this is all of them).
func (p *Program) ClaimNames() []string { return p.claims }

// scan walks the checked AST: claims may be read only by a constant name
// (so the claims a verifier must keep are known), route.captures names must
// be groups of the location regex, and it records which inputs are read.
func (p *Program) scan(a *cel.Ast) []*Error {
	native := a.NativeRep()
	refs := native.ReferenceMap()
	info := native.SourceInfo()
	var errs []*Error
	at := func(id int64, format string, args ...any) {
		loc := info.GetStartLocation(id)
		errs = append(errs, &Error{Line: max(loc.Line(), 1), Col: max(loc.Column(), 0), Msg: fmt.Sprintf(format, args...)})
	}
	varOf := func(e ast.Expr) string {
		if r, ok := refs[e.ID()]; ok && len(r.OverloadIDs) == 0 && r.Name != "" {
			return r.Name
		}
		return ""
	}
	constKey := func(e ast.Expr) (string, bool) {
		if e.Kind() != ast.LiteralKind {
			return "", false
		}
		s, ok := e.AsLiteral().(types.String)
		return string(s), ok
	}
	groups := map[string]bool{}
	if p.re != nil {
		for _, n := range p.re.SubexpNames() {
			if n != "" {
				groups[n] = true
			}
		}
	}
	useCapture := func(id int64, name string) {
		if !groups[name] {
			if p.re == nil {
				at(id, "route.captures.%s: the location is not a regex (~ or ~*), it has no named groups", name)
			} else {
				at(id, "route.captures.%s: the location regex has no group (?P<%s>...)", name, name)
			}
		}
	}
	var walk func(e ast.Expr)
	walk = func(e ast.Expr) {
		switch v := varOf(e); v {
		case "claims":
			at(e.ID(), "claims can be read only by name: claims.NAME, claims['NAME'], has(claims.NAME) or 'NAME' in claims")
			return
		case "client_ip":
			p.needs |= NeedClientIP
			return
		case "now":
			p.needs |= NeedNow
			return
		case "":
		default:
			return
		}
		switch e.Kind() {
		case ast.SelectKind:
			s := e.AsSelect()
			switch varOf(s.Operand()) {
			case "claims":
				p.claims = append(p.claims, s.FieldName())
				return
			case "route.captures":
				useCapture(e.ID(), s.FieldName())
				return
			}
			walk(s.Operand())
		case ast.CallKind:
			c := e.AsCall()
			args := c.Args()
			if len(args) == 2 {
				switch c.FunctionName() {
				case "_[_]", "_[?_]":
					if k, ok := constKey(args[1]); ok {
						switch varOf(args[0]) {
						case "claims":
							p.claims = append(p.claims, k)
							return
						case "route.captures":
							useCapture(args[1].ID(), k)
							return
						}
					}
				case "@in":
					if k, ok := constKey(args[0]); ok && varOf(args[1]) == "claims" {
						p.claims = append(p.claims, k)
						return
					}
				}
			}
			if c.IsMemberFunction() {
				walk(c.Target())
			}
			for _, a := range args {
				walk(a)
			}
		case ast.ListKind:
			for _, x := range e.AsList().Elements() {
				walk(x)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				me := en.AsMapEntry()
				walk(me.Key())
				walk(me.Value())
			}
		case ast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value())
			}
		case ast.ComprehensionKind:
			c := e.AsComprehension()
			walk(c.IterRange())
			walk(c.AccuInit())
			walk(c.LoopCondition())
			walk(c.LoopStep())
			walk(c.Result())
		}
	}
	walk(native.Expr())
	sort.Strings(p.claims)
	p.claims = slices.Compact(p.claims)
	sort.SliceStable(errs, func(i, j int) bool {
		if errs[i].Line != errs[j].Line {
			return errs[i].Line < errs[j].Line
		}
		return errs[i].Col < errs[j].Col
	})
	return errs
}

// sizeBound bounds every input string, list and map at MaxInputSize for the
// static cost estimate.
type sizeBound struct{}

func (sizeBound) EstimateSize(checker.AstNode) *checker.SizeEstimate {
	return &checker.SizeEstimate{Min: 0, Max: MaxInputSize}
}

func (sizeBound) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// ErrNotBool is returned when a program yields something else than a bool
// (cannot happen for a checked program; kept as a guard).
var ErrNotBool = errors.New("condition did not evaluate to a bool")

// Eval evaluates the condition for in and captures (the path the route's
// regex matched; only read when route.captures is). An error (a missing
// key, a failed conversion, the cost limit) is returned with false: the
// caller denies.
func (p *Program) Eval(in *Input) (bool, error) {
	a := activations.Get().(*activation)
	a.in = *in
	a.p = p
	a.capIdx = a.capIdx[:0]
	a.capDone = false
	a.parsed, a.qDone = nil, false
	out, _, err := p.prog.Eval(a)
	a.in, a.p, a.parsed = Input{}, nil, nil
	activations.Put(a)
	if err != nil {
		return false, fmt.Errorf("evaluate when: %w", err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, ErrNotBool
	}
	return bool(b), nil
}

var activations = sync.Pool{New: func() any {
	a := &activation{}
	a.claims = lazyMap{a, mapClaims}
	a.headers = lazyMap{a, mapHeaders}
	a.captures = lazyMap{a, mapCaptures}
	a.query = lazyMap{a, mapQuery}
	return a
}}

// activation resolves the variables over Input without building maps: the
// three map variables are lazy mappers that look a key up on demand.
type activation struct {
	in       Input // a copy: the caller's Input stays on its stack
	p        *Program
	claims   lazyMap
	headers  lazyMap
	captures lazyMap
	query    lazyMap
	capIdx   []int
	capDone  bool
	parsed   url.Values
	qDone    bool
}

var _ interpreter.Activation = (*activation)(nil)

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "claims":
		return &a.claims, true
	case "request.method":
		return types.String(a.in.Method), true
	case "request.path":
		return types.String(a.in.Path), true
	case "request.host":
		return types.String(a.in.Host), true
	case "request.headers":
		return &a.headers, true
	case "request.query":
		return &a.query, true
	case "route.captures":
		return &a.captures, true
	case "client_ip":
		return types.String(a.in.ClientIP), true
	case "now":
		return types.Timestamp{Time: a.in.Now}, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// capture returns the named group of the route regex in the path.
func (a *activation) capture(name string) (string, bool) {
	re := a.p.re
	if re == nil {
		return "", false
	}
	if !a.capDone {
		a.capDone = true
		a.capIdx = re.FindStringSubmatchIndex(a.in.Path)
	}
	i := re.SubexpIndex(name)
	if i < 0 || 2*i+1 >= len(a.capIdx) || a.capIdx[2*i] < 0 {
		return "", false
	}
	return a.in.Path[a.capIdx[2*i]:a.capIdx[2*i+1]], true
}

// header returns the first value of the header name, case-insensitively.
func (a *activation) header(name string) (string, bool) {
	for k, v := range a.in.Header {
		if len(v) > 0 && strings.EqualFold(k, name) {
			return v[0], true
		}
	}
	return "", false
}
