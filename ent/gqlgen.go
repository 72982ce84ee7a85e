//go:build ignore

// gqlgen runs gqlgen's generator (as `gqlgen generate` does, with the same
// plugins) and then points two call sites of the generated executor at
// Orchard's helpers in graph/executor.go:
//
//   - graphql.NewDeferredGroup(ctx) in every object marshaller walks the
//     field's whole path even when the operation has no @defer; the helper
//     makes the group only when a collected field is deferred.
//   - graphql.MarshalSliceConcurrently starts a goroutine per list element;
//     the helper marshals in a plain loop when no concurrent field (a
//     resolver, or a method that takes a context, as gqlgen's codegen
//     decides) is reachable from the list's selection, and otherwise calls
//     gqlgen's function as before, so dataloader batching is kept.
//
// It also passes the marshaller of each subscription's events through
// sharedEvents, so that one event handed to many identical subscriptions is
// rendered once for all of them rather than once each.
//
// Each object marshaller fills in an objectOut instead of a
// graphql.FieldSet: one allocation where a FieldSet, its values and the
// writer cost three, with a FieldSet made only when a field of the object
// runs on its own goroutine or is deferred.
//
// It writes a query's answer into a pooled buffer (marshalResponseData),
// which the POST transport hands back once the answer is sent.
//
// And it gives each plain scalar field a direct path: a field read straight
// from a struct field (no resolver, method, arguments or directives) whose
// marshaller can neither fail nor report a null is marshalled without the
// FieldContext, context value, closures and panic guard graphql.ResolveField
// builds for it, which are most of the allocations of a large list. Those
// would only matter to a field interceptor, and httpapi refuses one.
//
// gqlgen.yml has no option for either. What is concurrent is read from
// gqlgen's own codegen data and written to graph/executor_gen.go, so the
// step works for any schema. If gqlgen's output changes shape, this fails
// instead of leaving a half-rewritten executor. Run it from the module root
// through `make generate`.
package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/99designs/gqlgen/api"
	"github.com/99designs/gqlgen/codegen"
	"github.com/99designs/gqlgen/codegen/config"
	gqlast "github.com/vektah/gqlparser/v2/ast"
)

const (
	// directSwitch is the variable that sends the direct paths back to
	// gqlgen's own code, for the equivalence test.
	directSwitch   = "gqlgenOriginal"
	deferredHelper = "deferredGroupIfNeeded"
	objectHelper   = "objectMarshaler"
	outHelper      = "newObjectOut"
	stringHelper   = "stringField"
	intHelper      = "intField"
	collectHelper  = "collectFields"
	listHelper     = "marshalListElements"
	streamHelper   = "sharedEvents"
	dataHelper     = "marshalResponseData"
	heldHelper     = "fieldsHeldOnly"
	tableFile      = "executor_gen.go"
	directFile     = "executor_direct_gen.go"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("ent/gqlgen.go: ")
	cfg, err := config.LoadConfigFromDefaultLocations()
	if err != nil {
		log.Fatalf("loading gqlgen.yml: %v", err)
	}
	p := &executorData{}
	if err := api.Generate(cfg, api.AddPlugin(p)); err != nil {
		log.Fatal(err)
	}
	if p.data == nil {
		log.Fatal("gqlgen ran without handing its codegen data to the plugin")
	}
	generated := cfg.Exec.Filename
	if err := rewrite(generated, p.listElems(), p.enumMarshallers(), p.fieldFuncs()); err != nil {
		log.Fatalf("rewriting %s: %v (gqlgen's generated code changed shape: review graph/executor.go and this file)", generated, err)
	}
	// gqlgen validated its own output; the rewritten one must build too.
	build := exec.Command("go", "build", filepath.Dir(generated))
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		log.Fatalf("the rewritten executor does not build: %v", err)
	}
}

// executorData is a gqlgen plugin that keeps the codegen data it is handed.
type executorData struct{ data *codegen.Data }

func (p *executorData) Name() string { return "orchard-executor" }

// GenerateCode keeps gqlgen's data and writes the table of concurrent
// fields, before gqlgen builds the package it belongs to.
func (p *executorData) GenerateCode(data *codegen.Data) error {
	p.data = data
	dir := filepath.Dir(data.Config.Exec.Filename)
	// fcFreeFields comes from the rewritten executor; until the rewrite
	// writes it, an empty table lets gqlgen build the package, and answers
	// "keep the FieldContext" everywhere.
	if err := writeFormatted(filepath.Join(dir, directFile), directTable(data.Config.Exec.Package, nil)); err != nil {
		return err
	}
	return writeFormatted(filepath.Join(dir, tableFile), p.table(data.Config.Exec.Package))
}

// listElems maps each marshaller's function name to the GraphQL type it
// marshals, which for a list is its element's named type.
func (p *executorData) listElems() map[string]string {
	m := map[string]string{}
	for _, ref := range p.data.ReferencedTypes {
		if ref.Definition != nil {
			m[ref.MarshalFunc()] = ref.Definition.Name
		}
	}
	return m
}

// objectField names one field of one GraphQL object.
type objectField struct{ object, field string }

// fieldFuncs maps the name of each object field's generated function
// (gqlgen names it _Object_field) to the object and the field.
func (p *executorData) fieldFuncs() map[string]objectField {
	m := map[string]objectField{}
	for _, o := range p.data.Objects {
		for _, f := range o.Fields {
			m["_"+o.Name+"_"+f.Name] = objectField{o.Name, f.Name}
		}
	}
	return m
}

// enumMarshallers lists the marshallers of enums held by value, which
// return the value itself: it marshals itself and is never null.
func (p *executorData) enumMarshallers() map[string]bool {
	m := map[string]bool{}
	for _, ref := range p.data.ReferencedTypes {
		if ref.Definition != nil && ref.Definition.Kind == gqlast.Enum && !ref.IsPtr() && !ref.IsSlice() {
			m[ref.MarshalFunc()] = true
		}
	}
	return m
}

type fieldInfo struct {
	typ        string
	concurrent bool
}

// table writes, per object, interface and union, each field's named type
// and whether gqlgen resolves it concurrently. An abstract type's field is
// concurrent when it is on any of its possible types.
func (p *executorData) table(pkg string) []byte {
	types := map[string]map[string]fieldInfo{}
	objects := map[string]*codegen.Object{}
	for _, o := range p.data.Objects {
		objects[o.Name] = o
		fields := map[string]fieldInfo{}
		for _, f := range o.Fields {
			fields[f.Name] = fieldInfo{typ: f.TypeReference.Definition.Name, concurrent: f.IsConcurrent()}
		}
		types[o.Name] = fields
	}
	for _, def := range p.data.Schema.Types {
		if def.Kind != gqlast.Interface && def.Kind != gqlast.Union {
			continue
		}
		fields := map[string]fieldInfo{}
		for _, f := range def.Fields {
			info := fieldInfo{typ: f.Type.Name()}
			for _, impl := range p.data.Schema.GetPossibleTypes(def) {
				o, ok := objects[impl.Name]
				if !ok {
					// Not generated here: assume the worst.
					info.concurrent = true
					continue
				}
				for _, of := range o.Fields {
					if of.Name == f.Name && of.IsConcurrent() {
						info.concurrent = true
					}
				}
			}
			fields[f.Name] = info
		}
		types[def.Name] = fields
	}

	b := generatedFile(pkg, "gqlgen's codegen data",
		"// executorTypes lists, per GraphQL object, interface and union, each field's\n// named type and whether gqlgen resolves it concurrently.\n",
		"var executorTypes = map[string]map[string]executorField{\n")
	for _, name := range sortedKeys(types) {
		fmt.Fprintf(b, "\t%q: {\n", name)
		for _, fname := range sortedKeys(types[name]) {
			f := types[name][fname]
			fmt.Fprintf(b, "\t\t%q: {typ: %q, concurrent: %v},\n", fname, f.typ, f.concurrent)
		}
		b.WriteString("\t},\n")
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// rewrite replaces, in the generated executor, every
//
//	graphql.NewDeferredGroup(ctx)                       → deferredGroupIfNeeded(ctx, fields)
//	graphql.MarshalSliceConcurrently(ctx, n, w, p, fn)  → marshalListElements(ctx, "Elem", sel, n, w, p, result, fn)
//	graphql.CollectFields(ec.OperationContext, sel, x)  → collectFields(ctx, ec.OperationContext, sel, x)
//	var buf bytes.Buffer … response.Data = buf.Bytes()  → response.Data = marshalResponseData(data)
//
// checking each call's shape, has each object marshaller make its values
// with newObjectOut(fields) and return objectMarshaler(out, fields,
// len(deferred.Defers)), and gives each plain
// scalar field its direct path (directField), and each plain pointer to an
// object a path without a FieldContext when its selection holds only such
// fields (fieldsHeldOnly, with the table it writes to executor_direct_gen.go).
// It fails when a pattern is missing or an original call survives.
func rewrite(path string, elems map[string]string, enums map[string]bool, funcs map[string]objectField) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
	if err != nil {
		return err
	}
	type edit struct {
		start, end int
		text       string
	}
	var edits []edit
	var errs []string
	counts := map[string]int{}
	safe, held := neverNullMarshallers(file, enums)
	implementors := implementorsVars(file)
	// The fields written without a FieldContext of their own, by object:
	// an object field whose selection holds only these needs none either.
	fcFree := map[string]map[string]bool{}
	for _, decl := range file.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		if ret, out, ok := objectReturn(fn); ok {
			counts["object"]++
			edits = append(edits,
				edit{fset.Position(out.Pos()).Offset, fset.Position(out.End()).Offset, outHelper + "(ctx, fields)"},
				edit{fset.Position(ret.Pos()).Offset, fset.Position(ret.End()).Offset,
					"return " + objectHelper + "(out, fields, len(deferred.Defers))"})
		}
		if direct, free, ok := directField(fn, safe, held, elems, implementors); ok {
			counts["direct"]++
			if of, known := funcs[fn.Name.Name]; known && free {
				if fcFree[of.object] == nil {
					fcFree[of.object] = map[string]bool{}
				}
				fcFree[of.object][of.field] = true
			}
			if strings.Contains(direct, heldHelper+"(") {
				counts[heldHelper]++
			}
			// Before gqlgen's return, which stays for the equivalence test.
			at := fset.Position(fn.Body.List[0].Pos()).Offset
			edits = append(edits, edit{at, at, "if !" + directSwitch + " {\n" + direct + "}\n"})
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !isIdent(sel.X, "graphql") {
				return true
			}
			at := fset.Position(call.Pos())
			switch sel.Sel.Name {
			case "NewDeferredGroup":
				counts[sel.Sel.Name]++
				if len(call.Args) != 1 || !isIdent(call.Args[0], "ctx") || !declares(fn, "fields") {
					errs = append(errs, fmt.Sprintf("%s: %s: expected graphql.NewDeferredGroup(ctx) after fields := graphql.CollectFields(...)", at, fn.Name.Name))
					return true
				}
				edits = append(edits, edit{fset.Position(call.Pos()).Offset, fset.Position(call.End()).Offset, deferredHelper + "(ctx, fields)"})
			case "CollectFields":
				counts[sel.Sel.Name]++
				if len(call.Args) != 3 || exprString(call.Args[0]) != "ec.OperationContext" || !isIdent(call.Args[1], "sel") || !hasParam(fn, "ctx") {
					errs = append(errs, fmt.Sprintf("%s: %s: expected graphql.CollectFields(ec.OperationContext, sel, implementors) in a marshaller taking ctx", at, fn.Name.Name))
					return true
				}
				edits = append(edits, edit{fset.Position(call.Pos()).Offset, fset.Position(call.Args[0].Pos()).Offset, collectHelper + "(ctx, "})
			case "ResolveFieldStream":
				counts[sel.Sel.Name]++
				var marshal *ast.FuncLit
				if len(call.Args) == 9 {
					marshal, _ = call.Args[6].(*ast.FuncLit)
				}
				if marshal == nil || len(marshal.Type.Params.List) != 3 {
					errs = append(errs, fmt.Sprintf("%s: %s: expected graphql.ResolveFieldStream(ctx, oc, field, fieldContext, resolver, middleware, func(ctx, selections, v) graphql.Marshaler, recover, nonNull)", at, fn.Name.Name))
					return true
				}
				edits = append(edits,
					edit{fset.Position(marshal.End()).Offset, fset.Position(marshal.End()).Offset, ")"},
					edit{fset.Position(marshal.Pos()).Offset, fset.Position(marshal.Pos()).Offset, streamHelper + "(ctx, "})
			case "MarshalSliceConcurrently":
				counts[sel.Sel.Name]++
				elem, known := elems[fn.Name.Name]
				marshal, isFunc := lastArg(call).(*ast.FuncLit)
				result, ok := elementResult(marshal)
				if len(call.Args) != 5 || !isIdent(call.Args[0], "ctx") || !isFunc || !ok || !hasParam(fn, "sel") || !known {
					errs = append(errs, fmt.Sprintf("%s: %s: expected graphql.MarshalSliceConcurrently(ctx, len(v), workerLimit, omitPanicHandler, func(ctx, i) { fc := graphql.GetFieldContext(ctx); fc.Result = ...; ... }) in a marshaller of a known type taking sel", at, fn.Name.Name))
					return true
				}
				// Keep gqlgen's own arguments, from len(v) on, as they are,
				// but hand the element's Result over separately: setting it
				// in the closure would make every element's FieldContext,
				// which marshalListElements makes only when something asks.
				body := marshal.Body.List
				edits = append(edits,
					edit{fset.Position(call.Pos()).Offset, fset.Position(call.Args[1].Pos()).Offset,
						listHelper + "(ctx, " + strconv.Quote(elem) + ", sel, "},
					edit{fset.Position(marshal.Pos()).Offset, fset.Position(marshal.Pos()).Offset,
						"func(i int) any { return " + exprString(result) + " }, "},
					edit{fset.Position(body[0].Pos()).Offset, fset.Position(body[2].Pos()).Offset, ""})
			}
			return true
		})
	}
	for _, name := range []string{"NewDeferredGroup", "MarshalSliceConcurrently", "CollectFields", "ResolveFieldStream"} {
		if counts[name] == 0 {
			errs = append(errs, "no call of graphql."+name+" found")
		}
	}
	if counts["object"] == 0 {
		errs = append(errs, "no object marshaller found (out := graphql.NewFieldSet(fields) … return out)")
	}
	if counts["direct"] == 0 {
		errs = append(errs, "no plain scalar field found (graphql.ResolveField reading obj.Field with a never-null marshaller)")
	}
	if counts[heldHelper] == 0 || len(fcFree) == 0 {
		errs = append(errs, "no plain object field found (graphql.ResolveField reading obj.Field, a pointer to an object with its Implementors var)")
	}
	if len(errs) > 0 {
		return fmt.Errorf("\n\t%s", strings.Join(errs, "\n\t"))
	}
	slices.SortFunc(edits, func(a, b edit) int { return b.start - a.start })
	out := src
	for _, e := range edits {
		out = slices.Concat(out[:e.start], []byte(e.text), out[e.end:])
	}
	// A query's answer goes into a pooled buffer (marshalResponseData).
	if n := len(queryData.FindAllIndex(out, -1)); n != 1 {
		return fmt.Errorf("expected one query answer written as %q, found %d", queryData, n)
	}
	out = queryData.ReplaceAll(out, []byte("response.Data = "+dataHelper+"(data)"))
	for _, name := range []string{"graphql.NewDeferredGroup(", "graphql.MarshalSliceConcurrently(", "graphql.CollectFields(", "graphql.NewFieldSet("} {
		if bytes.Contains(out, []byte(name)) {
			return fmt.Errorf("%s survived the rewrite", name)
		}
	}
	if err := writeFormatted(filepath.Join(filepath.Dir(path), directFile), directTable(file.Name.Name, fcFree)); err != nil {
		return err
	}
	return writeFormatted(path, out)
}

// directTable writes fcFreeFields: per object, the fields the rewritten
// executor writes without a FieldContext of their own (see
// graph.fieldsHeldOnly).
func directTable(pkg string, fcFree map[string]map[string]bool) []byte {
	b := generatedFile(pkg, "the rewritten executor",
		"// fcFreeFields lists, per object, the fields written without a FieldContext\n// of their own: plain scalars read from the object.\n",
		"var fcFreeFields = map[string]map[string]bool{\n")
	for _, name := range sortedKeys(fcFree) {
		fmt.Fprintf(b, "\t%q: {", name)
		for i, f := range sortedKeys(fcFree[name]) {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(b, "%q: true", f)
		}
		b.WriteString("},\n")
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// generatedFile starts a Go file of package pkg that this program makes
// from source, with its one declaration's comment and opening line.
func generatedFile(pkg, source, doc, opening string) *bytes.Buffer {
	b := new(bytes.Buffer)
	fmt.Fprintf(b, "// Code generated by ent/gqlgen.go from %s. DO NOT EDIT.\n\npackage %s\n\n%s%s", source, pkg, doc, opening)
	return b
}

// implementorsVars maps each object to the variable gqlgen declares with
// the names it satisfies (var appImplementors = []string{"App", "Node"}).
func implementorsVars(file *ast.File) map[string]string {
	m := map[string]string{}
	for _, decl := range file.Decls {
		g, ok := decl.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, spec := range g.Specs {
			v, ok := spec.(*ast.ValueSpec)
			if !ok || len(v.Names) != 1 || len(v.Values) != 1 || !strings.HasSuffix(v.Names[0].Name, "Implementors") {
				continue
			}
			lit, ok := v.Values[0].(*ast.CompositeLit)
			if !ok || len(lit.Elts) == 0 {
				continue
			}
			first, ok := lit.Elts[0].(*ast.BasicLit)
			if !ok || first.Kind != token.STRING {
				continue
			}
			name, err := strconv.Unquote(first.Value)
			if err == nil {
				m[name] = v.Names[0].Name
			}
		}
	}
	return m
}

// elementResult finds the element's result in gqlgen's element closure,
// which begins
//
//	fc := graphql.GetFieldContext(ctx)
//	fc.Result = &v[i]
func elementResult(fn *ast.FuncLit) (ast.Expr, bool) {
	if fn == nil || len(fn.Body.List) < 3 {
		return nil, false
	}
	def, ok := fn.Body.List[0].(*ast.AssignStmt)
	if !ok || def.Tok != token.DEFINE || len(def.Lhs) != 1 || !isIdent(def.Lhs[0], "fc") || len(def.Rhs) != 1 || exprString(def.Rhs[0]) != "graphql.GetFieldContext(ctx)" {
		return nil, false
	}
	set, ok := fn.Body.List[1].(*ast.AssignStmt)
	if !ok || set.Tok != token.ASSIGN || len(set.Lhs) != 1 || exprString(set.Lhs[0]) != "fc.Result" || len(set.Rhs) != 1 {
		return nil, false
	}
	return set.Rhs[0], true
}

// queryData is how the generated Exec writes a query's answer.
var queryData = regexp.MustCompile(`var buf bytes\.Buffer\s+data\.MarshalGQL\(&buf\)\s+response\.Data = buf\.Bytes\(\)`)

// objectReturn finds, in an object marshaller, the call that makes its
// field set and its last statement:
//
//	fields := graphql.CollectFields(...)
//	out := graphql.NewFieldSet(fields)
//	deferred := deferredGroupIfNeeded(ctx, fields)
//	...
//	return out
func objectReturn(fn *ast.FuncDecl) (*ast.ReturnStmt, *ast.CallExpr, bool) {
	body := fn.Body.List
	if len(body) < 4 || !declares(fn, "fields") || !declares(fn, "deferred") {
		return nil, nil, false
	}
	ret, ok := body[len(body)-1].(*ast.ReturnStmt)
	if !ok || len(ret.Results) != 1 || !isIdent(ret.Results[0], "out") {
		return nil, nil, false
	}
	for _, st := range body {
		as, ok := st.(*ast.AssignStmt)
		if !ok || as.Tok != token.DEFINE || len(as.Lhs) != 1 || !isIdent(as.Lhs[0], "out") || len(as.Rhs) != 1 {
			continue
		}
		call, ok := as.Rhs[0].(*ast.CallExpr)
		if ok && exprString(call) == "graphql.NewFieldSet(fields)" {
			return ret, call, true
		}
	}
	return nil, nil, false
}

// neverNullMarshallers lists the generated marshallers that return a value
// for every input but a nil pointer, and never record an error: those of
// String, Int, Boolean and relay IDs (graphql.MarshalString and the like
// never return graphql.Null, so their null checks are dead), and enums
// held by value. Each is recognised by its whole body, so a marshaller
// gqlgen changes drops out of the list rather than being trusted.
//
// For the marshallers of String and Int it also gives the helper that
// writes the same value from where the object holds it (see directField),
// and whether it is handed the value's address (the marshaller takes v) or
// the pointer the object holds (it takes *v).
func neverNullMarshallers(file *ast.File, enums map[string]bool) (map[string]bool, map[string]heldScalar) {
	wrap := map[string]bool{"graphql.MarshalString": true, "graphql.MarshalInt": true, "graphql.MarshalBoolean": true, "relay.MarshalID": true}
	heldBy := map[string]string{"graphql.MarshalString": stringHelper, "graphql.MarshalInt": intHelper}
	safe := map[string]bool{}
	held := map[string]heldScalar{}
	for _, decl := range file.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Body == nil || fn.Recv == nil || !strings.HasPrefix(fn.Name.Name, "marshal") {
			continue
		}
		body := fn.Body.List
		if enums[fn.Name.Name] && len(body) == 1 && returns(body[0], "v") {
			safe[fn.Name.Name] = true
			continue
		}
		ok = len(body) > 0 && returns(body[len(body)-1], "res")
		wrapped := false
		var h heldScalar
		for _, st := range body[:max(len(body)-1, 0)] {
			switch st := st.(type) {
			case *ast.AssignStmt: // _ = sel, _ = ctx, or res := graphql.MarshalX(v)
				if st.Tok == token.ASSIGN && len(st.Lhs) == 1 && isIdent(st.Lhs[0], "_") {
					continue
				}
				call, isCall := st.Rhs[0].(*ast.CallExpr)
				if st.Tok != token.DEFINE || len(st.Lhs) != 1 || !isIdent(st.Lhs[0], "res") || !isCall || len(call.Args) != 1 ||
					!wrap[exprString(call.Fun)] || (exprString(call.Args[0]) != "v" && exprString(call.Args[0]) != "*v") {
					ok = false
				}
				wrapped = true
				if ok {
					h = heldScalar{helper: heldBy[exprString(call.Fun)], pointer: exprString(call.Args[0]) == "*v"}
				}
			case *ast.IfStmt: // if v == nil { return graphql.Null } or the dead null check
				cond := exprString(st.Cond)
				if cond != "v == nil" && cond != "res == graphql.Null" {
					ok = false
				}
			default:
				ok = false
			}
		}
		if ok && wrapped {
			safe[fn.Name.Name] = true
			if h.helper != "" {
				held[fn.Name.Name] = h
			}
		}
	}
	return safe, held
}

// heldScalar is how a String or Int field is written from the object.
type heldScalar struct {
	helper  string
	pointer bool // the object holds a pointer, nil for null
}

// directField recognises a plain field of the generated executor, one read
// straight from a struct field,
//
//	func (ec *executionContext) _T_f(ctx context.Context, field graphql.CollectedField, obj *X) (ret graphql.Marshaler) {
//		return graphql.ResolveField(ctx, ec.OperationContext, field,
//			func(ctx context.Context, field graphql.CollectedField) (*graphql.FieldContext, error) { return ec.fieldContext_T_f(ctx, field) },
//			func(ctx context.Context) (any, error) { return obj.F, nil },
//			nil, func(ctx, selections, v) graphql.Marshaler { return ec.marshalM(ctx, selections, v) }, true, nonNull)
//	}
//
// and returns its direct path. With marshalM in safe (a scalar that can
// neither fail nor report a null) that is ec.marshalM(ctx,
// field.Selections, obj.F) alone, or for a String or Int
// stringField(&obj.F) / intField(&obj.F) (obj.F when the object holds a
// pointer), which write the same bytes without the closure
// graphql.MarshalString and MarshalInt allocate. Otherwise (an object, a list, a Time)
// the field keeps its FieldContext, which the paths of errors below it and
// its own null check read, and the panic guard; what it loses is only
// graphql.ResolveField's closures and its call of the field middleware,
// which Orchard keeps empty. A pointer to an object skips the FieldContext
// too when the selection below it is written without any (graph.
// fieldsHeldOnly, checked at run time against fcFreeFields). The second
// result says whether the field itself is written without a FieldContext.
func directField(fn *ast.FuncDecl, safe map[string]bool, held map[string]heldScalar, elems, implementors map[string]string) (string, bool, bool) {
	if fn.Recv == nil || !strings.HasPrefix(fn.Name.Name, "_") || !hasParam(fn, "obj") || len(fn.Body.List) != 1 {
		return "", false, false
	}
	ret, ok := fn.Body.List[0].(*ast.ReturnStmt)
	if !ok || len(ret.Results) != 1 {
		return "", false, false
	}
	call, ok := ret.Results[0].(*ast.CallExpr)
	if !ok || exprString(call.Fun) != "graphql.ResolveField" || len(call.Args) != 9 || !isIdent(call.Args[5], "nil") {
		return "", false, false
	}
	fieldContext := onlyReturn(call.Args[3])
	if len(fieldContext) != 1 {
		return "", false, false
	}
	fc, ok := fieldContext[0].(*ast.CallExpr)
	if !ok || len(fc.Args) != 2 || exprString(fc.Args[0]) != "ctx" || exprString(fc.Args[1]) != "field" ||
		!strings.HasPrefix(exprString(fc.Fun), "ec.fieldContext_") || !isIdent(call.Args[7], "true") {
		return "", false, false
	}
	read := onlyReturn(call.Args[4])
	if len(read) != 2 || !isIdent(read[1], "nil") {
		return "", false, false
	}
	field, ok := read[0].(*ast.SelectorExpr)
	if !ok || !isIdent(field.X, "obj") {
		return "", false, false
	}
	marshal := onlyReturn(call.Args[6])
	if len(marshal) != 1 {
		return "", false, false
	}
	m, ok := marshal[0].(*ast.CallExpr)
	if !ok || len(m.Args) != 3 || exprString(m.Args[1]) != "selections" || exprString(m.Args[2]) != "v" {
		return "", false, false
	}
	name, ok := m.Fun.(*ast.SelectorExpr)
	if !ok || !isIdent(name.X, "ec") || !strings.HasPrefix(name.Sel.Name, "marshal") {
		return "", false, false
	}
	if h, ok := held[name.Sel.Name]; ok {
		if h.pointer {
			return "return " + h.helper + "(obj." + field.Sel.Name + ")\n", true, true
		}
		return "return " + h.helper + "(&obj." + field.Sel.Name + ")\n", true, true
	}
	value := "ec." + name.Sel.Name + "(ctx, field.Selections, obj." + field.Sel.Name + ")"
	if safe[name.Sel.Name] {
		return "return " + value + "\n", true, true
	}
	// A pointer to an object whose selection holds only fields written
	// without a FieldContext needs none either: nothing under it reads a
	// path, fails or panics (fieldsHeldOnly).
	skip := ""
	if typ, ok := elems[name.Sel.Name]; ok && implementors[typ] != "" && strings.Contains(name.Sel.Name, "2ᚖ") {
		skip = "if obj." + field.Sel.Name + " != nil && " + heldHelper + "(ctx, ec.OperationContext, field.Selections, " +
			implementors[typ] + ", " + strconv.Quote(typ) + ") {\n" + "return " + value + "\n}\n"
	}
	return skip + `fc, err := ` + exprString(fc) + `
		if err != nil {
			return graphql.Null
		}
		ctx = graphql.WithFieldContext(ctx, fc)
		defer func() {
			if r := recover(); r != nil {
				ec.OperationContext.Error(ctx, ec.OperationContext.Recover(ctx, r))
				ret = graphql.Null
			}
		}()
		return ` + value + "\n", false, true
}

// onlyReturn gives the results of a function literal whose body is one
// return statement.
func onlyReturn(e ast.Expr) []ast.Expr {
	lit, ok := e.(*ast.FuncLit)
	if !ok || len(lit.Body.List) != 1 {
		return nil
	}
	ret, ok := lit.Body.List[0].(*ast.ReturnStmt)
	if !ok {
		return nil
	}
	return ret.Results
}

func returns(st ast.Stmt, name string) bool {
	ret, ok := st.(*ast.ReturnStmt)
	return ok && len(ret.Results) == 1 && isIdent(ret.Results[0], name)
}

func exprString(e ast.Expr) string {
	var b bytes.Buffer
	_ = format.Node(&b, token.NewFileSet(), e)
	return b.String()
}

func writeFormatted(path string, src []byte) error {
	out, err := format.Source(src)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

func lastArg(call *ast.CallExpr) ast.Expr {
	if len(call.Args) == 0 {
		return nil
	}
	return call.Args[len(call.Args)-1]
}

func hasParam(fn *ast.FuncDecl, name string) bool {
	for _, f := range fn.Type.Params.List {
		for _, n := range f.Names {
			if n.Name == name {
				return true
			}
		}
	}
	return false
}

// declares reports whether fn's body assigns name with := at its top level.
func declares(fn *ast.FuncDecl, name string) bool {
	for _, st := range fn.Body.List {
		if as, ok := st.(*ast.AssignStmt); ok && as.Tok == token.DEFINE {
			for _, l := range as.Lhs {
				if isIdent(l, name) {
					return true
				}
			}
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
