package graph

// SetGqlgenOriginal makes the rewritten call sites of the generated executor
// run gqlgen's own functions (see executor.go), for the equivalence test.
func SetGqlgenOriginal(on bool) { gqlgenOriginal = on }
