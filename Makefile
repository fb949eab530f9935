# sitegrid: every developer and CI entry point.
SHELL := /usr/bin/env bash -o pipefail
GO ?= go
BIN := $(CURDIR)/bin
TOOLS := $(BIN)/tools
CONTROLLER_GEN := $(TOOLS)/controller-gen
STATICCHECK := $(TOOLS)/staticcheck
GO_TEST_FLAGS ?= -count=1 -timeout 30m

.PHONY: all
all: build

##@ Build

.PHONY: build
build: ## Build sitegrid-manager, sitegrid-hub, sitegrid-tunnel, sitegrid-dns, sitegrid-ipam and sitegridctl into bin/ (static, as released).
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

.PHONY: kube-bin
kube-bin: ## Build the pinned Kubernetes, etcd and kwok binaries, SuperEdge's for the migration tests and metrics-server (once per pin).
	$(GO) run ./hack/kube-bin
	$(GO) run ./hack/kube-bin -kit superedge
	$(GO) run ./hack/kube-bin -kit metrics-server

$(TOOLS)/.stamp: hack/tools/dev/go.mod hack/tools/dev/go.sum
	cd hack/tools/dev && $(GO) build -o $(TOOLS)/ tool
	touch $@

.PHONY: tools
tools: $(TOOLS)/.stamp ## Build controller-gen and staticcheck.

##@ Generate

.PHONY: generate
generate: tools ## Generate deepcopy functions.
	$(CONTROLLER_GEN) object paths=./api/... paths=./internal/hub/selfclient/...

.PHONY: manifests
manifests: tools ## Generate CRDs and RBAC into config/.
	$(CONTROLLER_GEN) rbac:roleName=sitegrid-manager crd paths=./api/site/... paths=./internal/controller/... paths=./internal/manager/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@# The grids embed whole Deployment, StatefulSet and Service specs: with
	@# descriptions their CRDs would pass etcd's 1.5 MB object limit.
	$(CONTROLLER_GEN) crd:maxDescLen=0,generateEmbeddedObjectMeta=true paths=./api/superedge/... output:crd:artifacts:config=config/crd/bases

.PHONY: verify
verify: generate manifests ## Fail when generated files are stale.
	hack/verify-generated.sh

##@ Check

.PHONY: lint
lint: tools ## gofmt, go vet and staticcheck.
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

.PHONY: test
test: ## Run every check and test: what CI runs.
	@hack/timed.sh verify $(MAKE) --no-print-directory verify
	@hack/timed.sh lint $(MAKE) --no-print-directory lint
	@hack/timed.sh kube-bin $(MAKE) --no-print-directory kube-bin
	@hack/timed.sh go-test $(GO) test $(GO_TEST_FLAGS) ./...
	@hack/timed.sh leak-check hack/check-leaks.sh

.PHONY: test-unit
test-unit: ## Unit and envtest integration tests only.
	$(GO) test $(GO_TEST_FLAGS) $$($(GO) list ./... | grep -v /test/e2e)

.PHONY: test-e2e
test-e2e: kube-bin build ## End-to-end tests on a full local control plane.
	$(GO) test $(GO_TEST_FLAGS) -v ./test/e2e/...

##@ Lab

LAB_FLAGS ?=
.PHONY: lab
lab: build ## Run the local lab (Ctrl-C stops it); it builds the Kubernetes binaries it needs itself.
	$(BIN)/sitegridctl lab up $(LAB_FLAGS)

.PHONY: help
help:
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ { printf "  %-12s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
