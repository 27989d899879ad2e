# bpfd — see README.md. Every target works on a fresh Debian 12 machine with
# Go 1.26 at /usr/local/go; `fixtures` also needs clang-16 (apt-get install
# clang-16 libbpf-dev).

export PATH := /usr/local/go/bin:$(PATH)
GO       ?= go
BIN      ?= bin
PREFIX   ?= /usr/local
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/bpfd-project/bpfd/internal/version.Version=$(VERSION)
CLANG    ?= clang-16
BENCHTIME ?= 1s

.PHONY: all build run test test-short bench fixtures lint fuzz install clean man completions

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# Start bpfd on its default socket: /run/bpfd/bpfd.sock as root,
# $XDG_RUNTIME_DIR/bpfd/bpfd.sock otherwise. ARGS passes flags.
run: build
	$(BIN)/bpfd $(ARGS)

# The full test suite, with the race detector. Kernel-oracle tests run as
# root and skip with a reason otherwise.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -count=1 -short ./...

# Benchmarks with their in-process baselines (kernel, raw socket echo).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 1 ./...

# Short coverage-guided fuzz runs of every fuzz target (FUZZTIME each).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Rebuild the committed eBPF object fixtures from their C sources.
fixtures:
	@for c in $$(find . -path ./vendor -prune -o -name '*.bpf.c' -print); do \
	  o=$${c%.c}.o; echo "CC $$o"; \
	  $(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_x86 -I/usr/include/x86_64-linux-gnu -c $$c -o $$o || exit 1; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Man pages (bpfd.8, bpfctl*.1) generated from the programs' own flags.
man:
	$(GO) run -ldflags '$(LDFLAGS)' ./internal/mangen $(BIN)/man

# Shell completion scripts of bpfctl.
completions: build
	mkdir -p $(BIN)/completions
	$(BIN)/bpfctl completion bash > $(BIN)/completions/bpfctl
	$(BIN)/bpfctl completion zsh > $(BIN)/completions/_bpfctl
	$(BIN)/bpfctl completion fish > $(BIN)/completions/bpfctl.fish

# Install every built binary (bpfd, bpfctl, ...), the systemd units, the
# man pages, bpfctl's shell completions, the docs and a sample
# /etc/bpfd/bpfd.conf (never over an existing one) under
# $(DESTDIR)$(PREFIX); units go to $(DESTDIR)/lib/systemd/system with
# ExecStart pointing at $(PREFIX)/bin/bpfd.
UNITDIR    ?= /lib/systemd/system
DOCDIR     ?= $(PREFIX)/share/doc/bpfd
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
install: build man completions
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR) \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
	  $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR) $(DESTDIR)$(SYSCONFDIR)/bpfd
	@for b in $(BIN)/*; do \
	  [ -f "$$b" ] && [ -x "$$b" ] || continue; \
	  echo "install $$b"; install -m 0755 "$$b" $(DESTDIR)$(PREFIX)/bin/ || exit 1; \
	done
	for u in systemd/bpfd.socket systemd/bpfd.service; do \
	  sed 's#/usr/local/bin/bpfd#$(PREFIX)/bin/bpfd#g; s#/usr/local/share/doc/bpfd#$(DOCDIR)#g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u) && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u) || exit 1; \
	done
	install -m 0644 $(BIN)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BIN)/man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 $(BIN)/completions/bpfctl $(DESTDIR)$(BASHCOMPDIR)/bpfctl
	install -m 0644 $(BIN)/completions/_bpfctl $(DESTDIR)$(ZSHCOMPDIR)/_bpfctl
	install -m 0644 $(BIN)/completions/bpfctl.fish $(DESTDIR)$(FISHCOMPDIR)/bpfctl.fish
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 etc/bpfd/bpfd.conf $(DESTDIR)$(DOCDIR)/bpfd.conf.sample
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/bpfd/bpfd.conf ]; then \
	  echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/bpfd/bpfd.conf (sample: $(DOCDIR)/bpfd.conf.sample)"; \
	else \
	  install -m 0644 etc/bpfd/bpfd.conf $(DESTDIR)$(SYSCONFDIR)/bpfd/bpfd.conf; \
	fi

clean:
	rm -rf $(BIN)
