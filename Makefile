# Orchard. `make help` lists the targets.
export CGO_ENABLED := 1   # mattn/go-sqlite3 and the race detector need cgo

BIN := bin/orchard
GO  ?= go

# `orchard --version` prints these. Go would record the commit by itself
# (vcs.revision), but not when GOFLAGS has -buildvcs=false or the tree is a
# copy without .git, so the build says it explicitly.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: help run build test test-short lint generate check-generate check-migrations migration demo fuzz clean bench bench-10k

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 18

run: build ## build and serve on 127.0.0.1:8080 with the defaults
	./$(BIN) serve

build: ## build bin/orchard, stamped with the version and commit
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./server

test: ## run every test with the race detector (and again on PostgreSQL when ORCHARD_TEST_DATABASE_URL is set)
	$(GO) test -race -count=1 ./...
	@if [ -n "$$ORCHARD_TEST_DATABASE_URL" ]; then \
		echo "== the server tests again, on PostgreSQL"; \
		ORCHARD_TEST_DB=postgres $(GO) test -race -count=1 ./server; \
	fi

test-short: ## run the fast tests only
	$(GO) test -short ./...

lint: ## go vet and gofmt (fails on any finding)
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The PostgreSQL migrations are generated against a scratch schema on a
# server: ORCHARD_DEV_DATABASE_URL, else ORCHARD_TEST_DATABASE_URL.
generate: ## regenerate ent, entgql and gqlgen code, and a migration file when ent/schema changed
	$(GO) generate .

migration: ## after a change to ent/schema: regenerate and name the new migration files NAME=what_changed
	@test -n "$(NAME)" || (echo "usage: make migration NAME=add_licences"; exit 1)
	$(GO) run -mod=mod ./ent/entc.go
	$(GO) run -mod=mod ./ent/migrategen.go -name $(NAME)
	$(GO) run -mod=mod ./ent/gqlgen.go

check-migrations: ## fail when ent/schema and the migration files in ent/migrations disagree (needs PostgreSQL)
	$(GO) run -mod=mod ./ent/migrategen.go -check

check-generate: generate ## fail when generated code is not up to date
	@git diff --exit-code -- ent graph gqlgen.yml go.mod go.sum || (echo "generated code is stale: run make generate and commit"; exit 1)
	@test -z "$$(git status --porcelain -- ent graph)" || (git status --porcelain -- ent graph; echo "make generate wrote untracked files"; exit 1)

demo: build ## serve with the Apple simulator, sample tokens and an admin key
	./$(BIN) demo

# Fuzzing is bounded by a number of inputs, not by time: with a duration,
# Go 1.26's fuzz coordinator can report its own deadline as a failure
# ("context deadline exceeded", golang/go#75804) on a loaded machine.
FUZZTIME ?= 20000x

fuzz: ## run each fuzz target on FUZZTIME inputs (default 20000x; FUZZTIME=200000x for longer)
	$(GO) test ./modules/tokenfile/vpptoken -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./modules/secrets/aesgcm -run '^$$' -fuzz FuzzOpen -fuzztime $(FUZZTIME)
	$(GO) test ./modules/apple/appsandbooks -run '^$$' -fuzz FuzzDecodePage -fuzztime $(FUZZTIME)
	$(GO) test ./server/httpapi -run '^$$' -fuzz FuzzGraphQLHandler -fuzztime $(FUZZTIME)
	$(GO) test ./server/httpapi -run '^$$' -fuzz FuzzMultipart -fuzztime $(FUZZTIME)

clean: ## remove the binary
	rm -rf bin

bench: ## run the benchmark suite and write docs/benchmarks.md (ORCHARD_BENCH_SUBSCRIBERS=10000 for the large fan-out)
	mkdir -p docs
	ORCHARD_BENCH=$(CURDIR)/docs/benchmarks.md $(GO) test ./server -run '^TestBenchmarkReport$$' -count=1 -v -timeout 20m

bench-10k: ## the benchmark suite with the fan-out to 10,000 subscribers, into docs/benchmarks-10000.md
	mkdir -p docs
	ORCHARD_BENCH_SUBSCRIBERS=10000 ORCHARD_BENCH=$(CURDIR)/docs/benchmarks-10000.md $(GO) test ./server -run '^TestBenchmarkReport$$' -count=1 -v -timeout 20m
