package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/orchard-msp/orchard/ent/viewer"
	"github.com/orchard-msp/orchard/graph/domain"
)

// The generated executor calls these helpers where gqlgen's templates call
// graphql.NewDeferredGroup, graphql.MarshalSliceConcurrently and
// graphql.CollectFields, and where an object marshaller returns its
// *graphql.FieldSet (ent/gqlgen.go rewrites the calls after every generate). gqlgen's code costs on every object and
// every list element whether or not the operation needs it: the first
// builds the object's full path for @defer bookkeeping, the second starts a
// goroutine per element, and a FieldSet writes itself through a map and a
// copy of each field. See issue 15 and docs/benchmarks.md for what they
// cost in P2.

// gqlgenOriginal makes the helpers, and the plain scalar fields' direct
// paths (ent/gqlgen.go), run gqlgen's own code unchanged. Only the
// equivalence test sets it, to compare whole responses with and without
// the rewrite in one process.
var gqlgenOriginal bool

// executorField is one field of a GraphQL type as executorTypes
// (executor_gen.go) lists it.
type executorField struct {
	typ        string // the field's named type
	concurrent bool   // gqlgen resolves it on its own goroutine
}

// deferredGroupIfNeeded returns what graphql.NewDeferredGroup returns when one
// of fields carries @defer, and an empty group otherwise. The generated
// marshaller reads the group only for deferred fields (in
// FieldSet.ResolveConcurrently) and through len(group.Defers), which is 0 for
// both an empty and a fresh group.
func deferredGroupIfNeeded(ctx context.Context, fields []graphql.CollectedField) graphql.DeferredGroup {
	if gqlgenOriginal {
		return graphql.NewDeferredGroup(ctx)
	}
	for i := range fields {
		if fields[i].IsDeferred() {
			return graphql.NewDeferredGroup(ctx)
		}
	}
	return graphql.DeferredGroup{}
}

// marshalListElements marshals a list of elem values. When a concurrent field
// can be reached from sel, the elements run concurrently exactly as gqlgen
// runs them, because a dataloader batches only the calls that wait together:
// marshalled one by one, each element would wait out the loader on its own
// (a loader-backed list went from 4.6 to 20.4 ms that way). Otherwise nothing
// under an element can block, and a plain loop gives the same answer without
// a goroutine per element. Each element has its own FieldContext with its
// index (made when something below asks for it), and a panic is recovered
// per element, as in graphql.MarshalSliceConcurrently.
//
// result(i) is what gqlgen's element closure sets as its FieldContext's
// Result.
func marshalListElements(ctx context.Context, elem string, sel ast.SelectionSet, n int, workerLimit int64, omitPanicHandler bool, result func(i int) any, marshal func(ctx context.Context, i int) graphql.Marshaler) graphql.Array {
	if gqlgenOriginal || n < 2 || reachesConcurrent(elem, sel, 0) {
		return graphql.MarshalSliceConcurrently(ctx, n, workerLimit, omitPanicHandler, func(ctx context.Context, i int) graphql.Marshaler {
			graphql.GetFieldContext(ctx).Result = result(i)
			return marshal(ctx, i)
		})
	}
	ret := make(graphql.Array, n)
	// Every element collects the same fields from the same selections, and
	// its objects come from one slab.
	ctx = context.WithValue(ctx, fieldsMemoKey{}, &fieldsMemo{slab: min(n, maxSlab)})
	// The elements' contexts in one allocation, where
	// graphql.WithFieldContext would make a context and a FieldContext for
	// each; the FieldContexts are made only if something asks for one.
	list := &elementList{parent: graphql.GetFieldContext(ctx), n: n, result: result}
	elems := make([]elementContext, n)
	for i := range elems {
		elems[i] = elementContext{Context: ctx, list: list, index: i}
		ret[i] = marshalElement(&elems[i], i, omitPanicHandler, marshal)
	}
	return ret
}

// elementList is what a list's elementContexts share: their FieldContexts,
// made together the first time one is asked for. Usually none is: below
// an edge whose node selects only fields the object holds, nothing reads
// a path (see fieldsHeldOnly).
type elementList struct {
	parent *graphql.FieldContext
	n      int
	result func(i int) any
	once   sync.Once
	fcs    []graphql.FieldContext
	idx    []int
}

func (l *elementList) fieldContext(i int) *graphql.FieldContext {
	l.once.Do(func() {
		l.fcs = make([]graphql.FieldContext, l.n)
		l.idx = make([]int, l.n)
		for j := range l.fcs {
			l.idx[j] = j
			l.fcs[j].Index = &l.idx[j]
			l.fcs[j].Parent = l.parent
			l.fcs[j].Result = l.result(j)
		}
	})
	return &l.fcs[i]
}

// elementContext is what graphql.WithFieldContext(list, fc) returns for
// the list's element index, as a type of Orchard's own: the list's are
// allocated together, and graphql.GetFieldContext finds the element's
// FieldContext in it (made when first asked for) and every other value in
// the list's context.
type elementContext struct {
	context.Context
	list  *elementList
	index int
}

func (c *elementContext) Value(key any) any {
	if key == fieldContextKey {
		return c.list.fieldContext(c.index)
	}
	return c.Context.Value(key)
}

// fieldContextKey is the key graphql.WithFieldContext stores a
// FieldContext under. gqlgen does not export it, so it is learnt from the
// key graphql.GetFieldContext asks for; TestElementContext fails if the
// two ever part.
var fieldContextKey = func() any {
	var p keyProbe
	graphql.GetFieldContext(&p)
	return p.key
}()

// keyProbe is a context that records the key it was asked for.
type keyProbe struct {
	context.Context
	key any
}

func (p *keyProbe) Value(key any) any {
	p.key = key
	return nil
}

func marshalElement(ctx context.Context, i int, omitPanicHandler bool, marshal func(ctx context.Context, i int) graphql.Marshaler) (ret graphql.Marshaler) {
	if !omitPanicHandler {
		defer func() {
			if r := recover(); r != nil {
				graphql.AddError(ctx, graphql.Recover(ctx, r))
				ret = graphql.Null
			}
		}()
	}
	return marshal(ctx, i)
}

// maxSelectionDepth bounds the walk; deeper selections are treated as
// reaching a concurrent field, which is always a correct answer.
const maxSelectionDepth = 64

// reachesConcurrent reports whether sel, selected on typ, reaches a field
// that gqlgen resolves concurrently, at any depth and through fragments. An
// unknown type or field counts as concurrent.
func reachesConcurrent(typ string, sel ast.SelectionSet, depth int) bool {
	if len(sel) == 0 {
		return false
	}
	fields, ok := executorTypes[typ]
	if !ok || depth > maxSelectionDepth {
		return true
	}
	for _, s := range sel {
		switch s := s.(type) {
		case *ast.Field:
			if s.Name == "__typename" {
				continue
			}
			f, ok := fields[s.Name]
			if !ok || f.concurrent || reachesConcurrent(f.typ, s.SelectionSet, depth+1) {
				return true
			}
		case *ast.InlineFragment:
			on := s.TypeCondition
			if on == "" {
				on = typ
			}
			if reachesConcurrent(on, s.SelectionSet, depth+1) {
				return true
			}
		case *ast.FragmentSpread:
			if s.Definition == nil || reachesConcurrent(s.Definition.TypeCondition, s.Definition.SelectionSet, depth+1) {
				return true
			}
		default:
			return true
		}
	}
	return false
}

// objectOut is what an object marshaller fills in with its fields' values,
// where gqlgen's template has a *graphql.FieldSet (ent/gqlgen.go points
// graphql.NewFieldSet(fields) at newObjectOut). It has the FieldSet's
// Values and Invalids, and makes a FieldSet only when the object schedules
// a field on its own goroutine or with @defer, which is all a FieldSet does
// beyond holding values; that one shares its Values array. Most objects,
// every node of a large list among them, schedule nothing: they then cost
// one allocation at most, their values included when they select few
// fields (inside a list marshalled in a plain loop, a share of the list's
// slab), where gqlgen's FieldSet, its values and objectFields cost three
// (a quarter of P2's allocations).
type objectOut struct {
	Values   []graphql.Marshaler
	Invalids uint32
	fields   []graphql.CollectedField
	fs       *graphql.FieldSet
	inline   [4]graphql.Marshaler
}

// newObjectOut returns an empty objectOut for fields, from the slab of the
// list it is in when there is one.
func newObjectOut(ctx context.Context, fields []graphql.CollectedField) *objectOut {
	var o *objectOut
	if m, _ := ctx.Value(fieldsMemoKey{}).(*fieldsMemo); m != nil && !gqlgenOriginal {
		o = m.objectOut()
	} else {
		o = new(objectOut)
	}
	o.fields = fields
	if n := len(fields); n <= len(o.inline) {
		o.Values = o.inline[:n:n]
	} else {
		o.Values = make([]graphql.Marshaler, n)
	}
	if gqlgenOriginal {
		o.fieldSet()
	}
	return o
}

// fieldSet is gqlgen's FieldSet for the object's fields, holding the same
// values.
func (o *objectOut) fieldSet() *graphql.FieldSet {
	if o.fs == nil {
		o.fs = graphql.NewFieldSet(o.fields)
		o.fs.Values = o.Values
	}
	return o.fs
}

// ResolveConcurrently is graphql.FieldSet.ResolveConcurrently.
func (o *objectOut) ResolveConcurrently(oc *graphql.OperationContext, deferred *graphql.DeferredGroup, i int, recoverFromPanic, nonNull bool, resolve func(ctx context.Context) graphql.Marshaler) {
	o.fieldSet().ResolveConcurrently(oc, deferred, i, recoverFromPanic, nonNull, resolve)
}

// ResolveRootConcurrently is graphql.FieldSet.ResolveRootConcurrently.
func (o *objectOut) ResolveRootConcurrently(ctx context.Context, oc *graphql.OperationContext, i int, recoverFromPanic, nonNull bool, resolve func(ctx context.Context) graphql.Marshaler) {
	o.fieldSet().ResolveRootConcurrently(ctx, oc, i, recoverFromPanic, nonNull, resolve)
}

// Dispatch runs the fields scheduled on their own goroutines, as
// graphql.FieldSet.Dispatch does, and counts the invalid ones with those
// the marshaller counted itself.
func (o *objectOut) Dispatch(ctx context.Context) {
	if o.fs == nil {
		return
	}
	o.fs.Dispatch(ctx)
	if n := atomic.LoadUint32(&o.fs.Invalids); n > 0 {
		atomic.AddUint32(&o.Invalids, n)
	}
}

// objectMarshaler returns what writes an object's fields once they are
// resolved. With deferred fragments it is gqlgen's FieldSet, whose views
// take their fields out of it; otherwise the objectOut itself, which writes
// the same bytes without a map of the aliases written and a copy of each
// field.
func objectMarshaler(out *objectOut, fields []graphql.CollectedField, deferred int) graphql.Marshaler {
	if gqlgenOriginal || deferred > 0 {
		return out.fieldSet()
	}
	return out
}

var (
	openBrace  = []byte{'{'}
	closeBrace = []byte{'}'}
	comma      = []byte{','}
	quoteColon = []byte{'"', ':'}
	quote      = []byte{'"'}
)

// MarshalGQL writes the fields in order, each response name once, as
// graphql.FieldSet does. A response name is a GraphQL name, which JSON
// never needs to escape.
func (o *objectOut) MarshalGQL(w io.Writer) {
	_, _ = w.Write(openBrace)
	for i := range o.fields {
		alias := o.fields[i].Alias
		if written(o.fields[:i], alias) {
			continue
		}
		if i > 0 {
			_, _ = w.Write(comma)
		}
		_, _ = w.Write(quote)
		_, _ = io.WriteString(w, alias)
		_, _ = w.Write(quoteColon)
		o.Values[i].MarshalGQL(w)
	}
	_, _ = w.Write(closeBrace)
}

func written(before []graphql.CollectedField, alias string) bool {
	for i := range before {
		if before[i].Alias == alias {
			return true
		}
	}
	return false
}

// fieldsMemo remembers, for the elements of one list marshalled in a plain
// loop, the fields collected from each selection set below them: each
// element, and each object inside it, would otherwise ask
// graphql.CollectFields again, which builds and hashes a cache key every
// time. A deferred fragment below may read it from another goroutine,
// hence the lock.
type fieldsMemo struct {
	mu      sync.Mutex
	entries [8]fieldsMemoEntry
	used    int
	// objects is where the list's objectOuts come from, slab at a time
	// (the list's length, at most maxSlab), rather than one allocation
	// each; they all live until the answer is written.
	objects []objectOut
	slab    int
}

// maxSlab bounds the objectOuts allocated together.
const maxSlab = 256

// objectOut hands out the next objectOut of the memo's slab.
func (m *fieldsMemo) objectOut() *objectOut {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.objects) == 0 {
		m.objects = make([]objectOut, max(m.slab, 1))
	}
	o := &m.objects[0]
	m.objects = m.objects[1:]
	return o
}

type fieldsMemoEntry struct {
	sel       *ast.Selection
	n         int
	satisfies *string
	fields    []graphql.CollectedField
	heldOnly  int8 // fieldsHeldOnly's answer: 0 not asked yet, 1 yes, -1 no
}

type fieldsMemoKey struct{}

// collectFields is graphql.CollectFields, answered from the list's memo
// when there is one. A selection set and a type's implementors are the
// same slices for every element, so their addresses identify them.
func collectFields(ctx context.Context, oc *graphql.OperationContext, sel ast.SelectionSet, satisfies []string) []graphql.CollectedField {
	m, _ := ctx.Value(fieldsMemoKey{}).(*fieldsMemo)
	if gqlgenOriginal || m == nil || len(sel) == 0 || len(satisfies) == 0 {
		return graphql.CollectFields(oc, sel, satisfies)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entry(oc, sel, satisfies); e != nil {
		return e.fields
	}
	return graphql.CollectFields(oc, sel, satisfies)
}

// entry finds or makes the memo's entry for sel on satisfies; nil when
// the memo is full. The caller holds m.mu.
func (m *fieldsMemo) entry(oc *graphql.OperationContext, sel ast.SelectionSet, satisfies []string) *fieldsMemoEntry {
	for i := range m.used {
		if e := &m.entries[i]; e.sel == &sel[0] && e.n == len(sel) && e.satisfies == &satisfies[0] {
			return e
		}
	}
	if m.used == len(m.entries) {
		return nil
	}
	e := &m.entries[m.used]
	*e = fieldsMemoEntry{sel: &sel[0], n: len(sel), satisfies: &satisfies[0], fields: graphql.CollectFields(oc, sel, satisfies)}
	m.used++
	return e
}

// fieldsHeldOnly reports whether every field collected from sel on an
// object of type typ (satisfies is its implementors) is written without a
// FieldContext of its own (fcFreeFields: plain scalars the object holds, or
// __typename), and none is deferred. The object field that leads to such a
// selection needs no FieldContext either: below it nothing reads a path,
// records an error or panics, and the FieldContext of a field that does
// read one is made as before. Asked only inside a list marshalled in a
// plain loop, whose memo answers it once for all the elements; elsewhere
// the answer is no, and the field keeps gqlgen's way.
func fieldsHeldOnly(ctx context.Context, oc *graphql.OperationContext, sel ast.SelectionSet, satisfies []string, typ string) bool {
	if gqlgenOriginal || len(sel) == 0 || len(satisfies) == 0 {
		return false
	}
	m, _ := ctx.Value(fieldsMemoKey{}).(*fieldsMemo)
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entry(oc, sel, satisfies)
	if e == nil {
		return false
	}
	if e.heldOnly == 0 {
		e.heldOnly = -1
		if heldOnly(e.fields, fcFreeFields[typ]) {
			e.heldOnly = 1
		}
	}
	return e.heldOnly == 1
}

func heldOnly(fields []graphql.CollectedField, free map[string]bool) bool {
	if len(fields) == 0 {
		return false
	}
	for i := range fields {
		f := &fields[i]
		if f.IsDeferred() || (f.Name != "__typename" && !free[f.Name]) {
			return false
		}
	}
	return true
}

// sharedEvents wraps the marshaller of a subscription's events (the
// generated executor passes every graphql.ResolveFieldStream's marshal
// through it). An event that a hub handed to many subscribers at once
// carries a domain.Fanout; subscriptions of one shape, the same document,
// operation, variables and viewer, then render it once between them and
// each sends those bytes, where gqlgen would execute the selection again
// for every subscriber (issue 15, P6: about 45 µs each, ten thousand times
// for one warning). Bytes are shared only when rendering them reported no
// error: an error belongs to the response of the subscriber that met it,
// so the others then render for themselves, as they do for an operation
// with @defer and for an event without a Fanout.
//
// The subscription's shape is worked out when it starts (ctx is the
// subscription field's), not on its first shared event, which would add
// that work to every subscriber's share of a fan-out.
func sharedEvents[T any](ctx context.Context, marshal func(ctx context.Context, sel ast.SelectionSet, v T) graphql.Marshaler) func(ctx context.Context, sel ast.SelectionSet, v T) graphql.Marshaler {
	if gqlgenOriginal {
		return marshal
	}
	shape := subscriptionShape(ctx) // "" never shares
	return func(ctx context.Context, sel ast.SelectionSet, v T) graphql.Marshaler {
		e, ok := any(v).(interface{ Fanout() *domain.Fanout })
		if !ok || e.Fanout() == nil || shape == "" {
			return marshal(ctx, sel, v)
		}
		b, shared := e.Fanout().Render(shape, func() ([]byte, bool) {
			before := len(graphql.GetErrors(ctx))
			var buf bytes.Buffer
			marshal(ctx, sel, v).MarshalGQL(&buf)
			return buf.Bytes(), len(graphql.GetErrors(ctx)) == before
		})
		if !shared {
			return marshal(ctx, sel, v)
		}
		return rawJSON(b)
	}
}

// subscriptionShape is what decides a subscription's answer to one event
// besides the event: the document and operation, the variables, and who
// asks (key, role and customer scope, which decide what may be seen). It
// is "" when the answer must not be shared.
//
// The document is named by its address: the query cache hands every
// operation with the same text the same parsed document, and each
// subscription keeps its own alive, so two live subscriptions with
// different documents never share an address. (One parsed again after
// the cache let it go only shares less.)
func subscriptionShape(ctx context.Context) string {
	oc := graphql.GetOperationContext(ctx)
	v := viewer.FromContext(ctx)
	if v == nil || oc.Doc == nil || strings.Contains(oc.RawQuery, "@defer") {
		return ""
	}
	vars := []byte("{}")
	if len(oc.Variables) > 0 {
		var err error
		if vars, err = json.Marshal(oc.Variables); err != nil { // map keys sorted, so stable
			return ""
		}
	}
	return fmt.Sprintf("%p\x00%s\x00%s\x00%d\x00%s\x00%v", oc.Doc, oc.OperationName, vars, v.KeyID, v.Role, v.Customers)
}

// A query's answer is written into a buffer from responseBuffers, which
// jsonPOST hands back through ReleaseResponseData once it has written the
// answer out. Writing a large list's answer into a fresh bytes.Buffer grew
// it by doubling, about twice the answer's size in garbage for every
// request (a tenth of P2's allocated bytes, and so of its collections).
// An answer that no one hands back is simply collected.
var responseBuffers sync.Pool

// maxPooledResponse bounds the buffers kept: one unusually large answer
// should not stay in memory for the process's life.
const maxPooledResponse = 4 << 20

// marshalResponseData writes data, the selection set's resolved result,
// into a pooled buffer and returns it as the response's data.
func marshalResponseData(data graphql.Marshaler) []byte {
	if gqlgenOriginal {
		var buf bytes.Buffer
		data.MarshalGQL(&buf)
		return buf.Bytes()
	}
	var buf *bytes.Buffer
	if b, ok := responseBuffers.Get().(*[]byte); ok {
		buf = bytes.NewBuffer((*b)[:0])
	} else {
		buf = new(bytes.Buffer)
	}
	data.MarshalGQL(buf)
	return buf.Bytes()
}

// ReleaseResponseData gives the buffer of an answer's data back for the
// next answer. The caller must be done with data and everything sliced
// from it: it is overwritten by a later answer.
func ReleaseResponseData(data []byte) {
	if c := cap(data); c == 0 || c > maxPooledResponse {
		return
	}
	data = data[:0]
	responseBuffers.Put(&data)
}

// stringField and intField write a plain String or Int field (ent/gqlgen.go
// gives each its direct path through them) from where the object holds it,
// given its address, or the pointer the object holds for a nullable one. A
// struct of one pointer goes into an interface without an allocation,
// where graphql.MarshalString and MarshalInt each allocate a closure: about
// one allocation in eight of P2. The bytes are the same as theirs; the
// object is not changed between its fields' resolution and the answer's
// writing.
func stringField(p *string) graphql.Marshaler {
	if p == nil {
		return graphql.Null
	}
	return stringAt{p}
}

func intField(p *int) graphql.Marshaler {
	if p == nil {
		return graphql.Null
	}
	return intAt{p}
}

type stringAt struct{ p *string }

func (s stringAt) MarshalGQL(w io.Writer) { writeQuoted(w, *s.p) }

type intAt struct{ p *int }

func (n intAt) MarshalGQL(w io.Writer) {
	if b, ok := w.(*bytes.Buffer); ok {
		_, _ = b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(*n.p), 10))
		return
	}
	_, _ = io.WriteString(w, strconv.Itoa(*n.p))
}

const upperHex = "0123456789ABCDEF"

// writeQuoted writes s as a JSON string the way gqlgen's String marshaller
// does: quotes, backslashes and control characters escaped (tab, CR and
// newline by name, the others as \u00XX with upper-case hex), everything
// else, invalid UTF-8 included, as it is.
func writeQuoted(w io.Writer, s string) {
	_, _ = io.WriteString(w, `"`)
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		_, _ = io.WriteString(w, s[start:i])
		switch c {
		case '\t':
			_, _ = io.WriteString(w, `\t`)
		case '\r':
			_, _ = io.WriteString(w, `\r`)
		case '\n':
			_, _ = io.WriteString(w, `\n`)
		case '\\':
			_, _ = io.WriteString(w, `\\`)
		case '"':
			_, _ = io.WriteString(w, `\"`)
		default:
			_, _ = w.Write([]byte{'\\', 'u', '0', '0', upperHex[c>>4], upperHex[c&0xf]})
		}
		start = i + 1
	}
	_, _ = io.WriteString(w, s[start:])
	_, _ = io.WriteString(w, `"`)
}

// rawJSON writes bytes already rendered.
type rawJSON []byte

func (r rawJSON) MarshalGQL(w io.Writer) { _, _ = w.Write(r) }
