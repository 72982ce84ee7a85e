//go:build ignore

// entc generates the ent client and, through entgql, the GraphQL schema
// (graph/ent.graphqls). Run it from the module root through `make generate`:
// entgql compares these paths with the ones gqlgen.yml lists, so they must be
// relative to the directory that holds gqlgen.yml.
package main

import (
	"log"
	"slices"

	"entgo.io/contrib/entgql"
	"entgo.io/ent/entc"
	"entgo.io/ent/entc/gen"
)

func main() {
	ex, err := entgql.NewExtension(
		entgql.WithTemplates(templates()...),
		entgql.WithConfigPath("./gqlgen.yml"),
		entgql.WithSchemaGenerator(),
		entgql.WithSchemaPath("./graph/ent.graphqls"),
		entgql.WithWhereInputs(true),
	)
	if err != nil {
		log.Fatalf("creating entgql extension: %v", err)
	}
	cfg := &gen.Config{
		Features: []gen.Feature{
			gen.FeatureGlobalID,
			gen.FeaturePrivacy,
			gen.FeatureEntQL,
			gen.FeatureUpsert,
			gen.FeatureLock,
			gen.FeatureExecQuery,
		},
	}
	if err := entc.Generate("./ent/schema", cfg, entc.Extensions(ex)); err != nil {
		log.Fatalf("running ent codegen: %v", err)
	}
}

// templates are entgql's, with Orchard's field collection in place of
// entgql's (it lost the data of a field selected under a second alias, see
// ent/template/collection.tmpl), and Orchard's own additions. Later
// definitions replace earlier ones of the same name.
func templates() []*gen.Template {
	parse := func(path string) *gen.Template {
		return gen.MustParse(gen.NewTemplate(path).Funcs(entgql.TemplateFuncs).ParseFiles(path))
	}
	out := slices.DeleteFunc(slices.Clone(entgql.AllTemplates), func(t *gen.Template) bool {
		return t == entgql.CollectionTemplate
	})
	return append(out,
		parse("./ent/template/collection.tmpl"),
		parse("./ent/template/paginate.tmpl"),
		parse("./ent/template/detach.tmpl"),
		parse("./ent/template/scanners.tmpl"),
	)
}
