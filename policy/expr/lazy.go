package expr

import (
	"net/url"
	"reflect"
	"strings"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// mapKind says which variable a lazyMap stands for.
type mapKind uint8

const (
	mapClaims mapKind = iota
	mapHeaders
	mapCaptures
	mapQuery
)

// lazyMap is a CEL map over the request that looks keys up on demand: the
// usual `claims.tenant` or `request.headers['x-tenant']` builds no map.
// Operations over the whole map (size, iteration, equality) build it once.
type lazyMap struct {
	a    *activation
	kind mapKind
}

var _ traits.Mapper = (*lazyMap)(nil)

func (m *lazyMap) find(key string) (ref.Val, bool) {
	a := m.a
	switch m.kind {
	case mapClaims:
		if a.in.Claims == nil {
			return nil, false
		}
		v, ok := a.in.Claims.Claim(key)
		if !ok {
			return nil, false
		}
		return types.DefaultTypeAdapter.NativeToValue(v), true
	case mapHeaders:
		if s, ok := a.header(key); ok {
			return types.String(s), true
		}
	case mapCaptures:
		if s, ok := a.capture(key); ok {
			return types.String(s), true
		}
	case mapQuery:
		if v, ok := a.queryValues()[key]; ok {
			return types.NewStringList(types.DefaultTypeAdapter, v), true
		}
	}
	return nil, false
}

// materialize builds the whole map, for the operations that need it.
func (m *lazyMap) materialize() ref.Val {
	a := m.a
	switch m.kind {
	case mapHeaders:
		out := make(map[string]string, len(a.in.Header))
		for k, v := range a.in.Header {
			if len(v) > 0 {
				out[strings.ToLower(k)] = v[0]
			}
		}
		return types.NewStringStringMap(types.DefaultTypeAdapter, out)
	case mapCaptures:
		out := map[string]string{}
		if re := a.p.re; re != nil {
			for _, n := range re.SubexpNames() {
				if s, ok := a.capture(n); ok && n != "" {
					out[n] = s
				}
			}
		}
		return types.NewStringStringMap(types.DefaultTypeAdapter, out)
	case mapQuery:
		return types.DefaultTypeAdapter.NativeToValue(map[string][]string(a.queryValues()))
	}
	// Compile refuses every use of claims but by name.
	return types.NewErr("claims can be read only by name")
}

func (a *activation) queryValues() url.Values {
	if !a.qDone {
		a.qDone = true
		// A malformed pair is skipped, as net/http's Request.URL.Query does.
		a.parsed, _ = url.ParseQuery(a.in.RawQuery)
	}
	return a.parsed
}

func (m *lazyMap) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return nil, false
	}
	return m.find(string(k))
}

func (m *lazyMap) Get(key ref.Val) ref.Val {
	if v, ok := m.Find(key); ok {
		return v
	}
	return types.NewErr("no such key: %v", key)
}

func (m *lazyMap) Contains(key ref.Val) ref.Val {
	_, ok := m.Find(key)
	return types.Bool(ok)
}

func (m *lazyMap) Iterator() traits.Iterator {
	if mm, ok := m.materialize().(traits.Mapper); ok {
		return mm.Iterator()
	}
	return types.NewStringList(types.DefaultTypeAdapter, nil).Iterator()
}

func (m *lazyMap) Size() ref.Val {
	if mm, ok := m.materialize().(traits.Mapper); ok {
		return mm.Size()
	}
	return types.NewErr("claims can be read only by name")
}

func (m *lazyMap) ConvertToNative(t reflect.Type) (any, error) {
	return m.materialize().ConvertToNative(t)
}

func (m *lazyMap) ConvertToType(t ref.Type) ref.Val {
	if t == types.MapType {
		return m
	}
	if t == types.TypeType {
		return types.MapType
	}
	return m.materialize().ConvertToType(t)
}

func (m *lazyMap) Equal(other ref.Val) ref.Val { return m.materialize().Equal(other) }
func (m *lazyMap) Type() ref.Type              { return types.MapType }
func (m *lazyMap) Value() any                  { return m.materialize().Value() }
