# Parley — see README.md. `make run` starts everything locally; `make test`
# runs every module's unit and integration tests.

SHELL      := /bin/bash
BIN        := $(CURDIR)/.bin
export PATH := $(BIN):$(PATH)
GO_TOOLS   := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/grpcurl
MODULES    := libs proto services/ingest services/lifecycle services/tagging services/reporting services/notification tools
PKGS       := $(addprefix ./,$(addsuffix /...,$(MODULES)))
TEST_FLAGS ?= -count=1 -timeout 15m

.PHONY: all build run test test-unit lint asyncapi fmt proto tools deps fuzz tidy clean help

help: ## Show targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

all: lint test ## Lint and test

build: ## Build the parley binary (every service: parley -target=all|ingest,...) and the tools into .bin/
	@for t in parley parley-stack parleyctl loadgen; do go build -o $(BIN)/$$t ./tools/cmd/$$t || exit 1; done

run: deps tools ## Start the whole stack locally (Ctrl-C stops it)
	@go build -o $(BIN)/parley-stack ./tools/cmd/parley-stack
	@go build -o $(BIN)/parleyctl ./tools/cmd/parleyctl
	@exec $(BIN)/parley-stack

test: deps tools ## Unit and integration tests of every module (real NATS, PostgreSQL, ClickHouse)
	go test $(TEST_FLAGS) $(PKGS)

test-unit: ## Only tests that need no servers
	go test -short -count=1 $(PKGS)

fuzz: ## Run each fuzz target briefly
	go test ./services/ingest/internal/validate -run '^$$' -fuzz FuzzEnvelope -fuzztime 20s
	go test ./libs/eventbus -run '^$$' -fuzz FuzzParseConvSubject -fuzztime 20s
	go test ./services/ingest/internal/rasa -run '^$$' -fuzz FuzzMap -fuzztime 20s -fuzzminimizetime 2s
	go test ./services/ingest/internal/enrich -run '^$$' -fuzz FuzzParseUserAgent -fuzztime 20s
	go test ./libs/localinfra/mailcatcher -run '^$$' -fuzz FuzzParse -fuzztime 20s
	go test ./services/ingest/internal/enrich -run '^$$' -fuzz FuzzClientIP -fuzztime 20s
	go test ./services/ingest/internal/mask -run '^$$' -fuzz FuzzDetectors -fuzztime 20s
	go test ./services/reporting/internal/filter -run '^$$' -fuzz FuzzBuild -fuzztime 20s
	go test ./services/reporting/internal/share -run '^$$' -fuzz FuzzVerify -fuzztime 20s
	go test ./services/reporting/internal/convstate -run '^$$' -fuzz FuzzUnmarshalBinary -fuzztime 20s
	go test ./services/tagging/internal/rules -run '^$$' -fuzz FuzzCompile -fuzztime 20s
	go test ./tools/loadgen/sgd -run '^$$' -fuzz FuzzParseDialogues -fuzztime 20s

lint: tools ## gofmt, go vet, buf lint and a current docs/asyncapi.yaml
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet $(PKGS)
	cd proto && buf lint
	@tmp=$$(mktemp); go run ./tools/cmd/asyncapi -o $$tmp && diff -u docs/asyncapi.yaml $$tmp > /dev/null; rc=$$?; rm -f $$tmp; \
		if [ $$rc -ne 0 ]; then echo "docs/asyncapi.yaml is stale: run make asyncapi"; exit 1; fi

asyncapi: ## Regenerate docs/asyncapi.yaml (the event stream's AsyncAPI document) from the protos
	go run ./tools/cmd/asyncapi -o docs/asyncapi.yaml

fmt: ## gofmt every module
	gofmt -w $(MODULES)

proto: tools ## Regenerate Go code from proto/
	cd proto && buf generate

tools: $(GO_TOOLS) ## Build the pinned code generators and grpcurl into .bin/

$(BIN)/%: tools/buildtools/go.mod tools/buildtools/go.sum
	@mkdir -p $(BIN)
	cd tools/buildtools && GOWORK=off go build -o $(BIN)/ $$(GOWORK=off go list -f '{{.ImportPath}}' tool | grep '/$*$$')

deps: ## Install ClickHouse and PostgreSQL from Debian packages if missing
	@tools/scripts/ensure-deps.sh

tidy: ## go mod tidy in every module
	@for m in $(MODULES) tools/buildtools; do (cd $$m && GOWORK=off GOFLAGS=-mod=mod go mod tidy) || exit 1; done

clean: ## Remove built tools (keeps .parley data)
	rm -rf $(BIN)

.PHONY: end-stale-conversations conversation-stats

end-stale-conversations: ## End conversations idle longer than HOURS hours, e.g. make end-stale-conversations HOURS=48 (stack running)
	@if [ -z "$(HOURS)" ]; then echo "usage: make end-stale-conversations HOURS=48" >&2; exit 2; fi
	@go build -o $(BIN)/parleyctl ./tools/cmd/parleyctl
	@f=$${PARLEY_STACK_DIR:-.parley}/demo-api-key; if [ -z "$$PARLEY_API_KEY" ] && [ ! -f "$$f" ]; then echo "no API key: set PARLEY_API_KEY or start the stack with make run (it writes $$f)" >&2; exit 2; fi; \
	PARLEY_API_KEY="$${PARLEY_API_KEY:-$$(cat "$$f")}" $(BIN)/parleyctl sessions end-stale --hours $(HOURS)

conversation-stats: ## Active and ended conversations by end reason and channel, oldest active (stack running)
	@go build -o $(BIN)/parleyctl ./tools/cmd/parleyctl
	@f=$${PARLEY_STACK_DIR:-.parley}/demo-api-key; if [ -z "$$PARLEY_API_KEY" ] && [ ! -f "$$f" ]; then echo "no API key: set PARLEY_API_KEY or start the stack with make run (it writes $$f)" >&2; exit 2; fi; \
	PARLEY_API_KEY="$${PARLEY_API_KEY:-$$(cat "$$f")}" $(BIN)/parleyctl sessions stats

.PHONY: loadgen

loadgen: ## Load the running stack (make run) with the demo key: ARGS="--conversations 5000 --ack-log acks.jsonl", SGD=DIR replays a Schema-Guided Dialogue corpus
	@go build -o $(BIN)/loadgen ./tools/cmd/loadgen
	@go build -o $(BIN)/parleyctl ./tools/cmd/parleyctl
	@f=$${PARLEY_STACK_DIR:-.parley}/demo-api-key; if [ -z "$$PARLEY_API_KEY" ] && [ ! -f "$$f" ]; then echo "no API key: set PARLEY_API_KEY or start the stack with make run (it writes $$f)" >&2; exit 2; fi; \
	sgd=; if [ -n "$(SGD)" ]; then sgd="--sgd $(SGD)"; fi; \
	PARLEY_API_KEY="$${PARLEY_API_KEY:-$$(cat "$$f")}" $(BIN)/loadgen $$sgd $(ARGS)

.PHONY: bench chaos

bench: deps tools ## Measure the whole suite on this machine and write BENCHMARKS.md (about 10 minutes; PARLEY_BENCH_PHASE, PARLEY_BENCH_SIZES, PARLEY_BENCH_ONLY, PARLEY_BENCH_PROFILE)
	go run ./tools/cmd/bench

chaos: deps tools ## Kill services, stores and the whole stack under load, then verify (about 20 minutes; ARGS="--kills 1 --clickhouse-outage 10s" for a shorter run)
	go run ./tools/cmd/chaos $(ARGS)
