# magpie — build, run, test.  All outputs live under build/.
#
#   make          build/magpie
#   make run      build and start on the embedded default config
#   make test     unit + integration + fuzz, then the suite again under ASan+UBSan
#   make bench    tests/bench/run (magpie vs HAProxy vs nginx)
#   make deps     install the Debian packages the build and the tests need (only missing ones)

CC       ?= cc
BUILD    ?= build
SAN      ?=
OPT      ?= -O2 -g

# Debian packages: build, then the peers the tests and the benchmark drive.
DEB_BUILD := build-essential pkg-config clang libclang-rt-14-dev llvm libev-dev libnghttp2-dev \
             node-llhttp libssl-dev libc-ares-dev libcjson-dev libyaml-dev libprotobuf-c-dev \
             protobuf-c-compiler libprotobuf-dev libpcre2-dev
DEB_TEST  := curl nginx-light haproxy wrk nghttp2-client nghttp2-server python3 python3-h2 python3-grpcio python3-yaml \
             procps iproute2 openssl clang-format
DEB_ALL   := $(DEB_BUILD) $(DEB_TEST)

LLHTTP_DIR := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp
WKT_DIR    := /usr/include
WKT_PROTOS := google/protobuf/any.proto google/protobuf/duration.proto \
              google/protobuf/struct.proto google/protobuf/wrappers.proto \
              google/protobuf/empty.proto google/protobuf/timestamp.proto

PKGS     := libnghttp2 libcares libcjson yaml-0.1 libprotobuf-c libpcre2-8 libssl libcrypto
WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wpointer-arith -Wstrict-prototypes
CPPFLAGS += -D_GNU_SOURCE -Iinclude -I$(BUILD)/gen -I$(LLHTTP_INC)
CFLAGS   += -std=c11 $(OPT) $(WARN) -pthread $(SANFLAGS)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev -lm -pthread

ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif

# Link-time optimisation for the plain gcc build: inlining across files takes about a sixth off
# magpie's user-space CPU per request (tests/bench/run, docs/performance.md).  Sanitizer and
# clang builds go without (clang's LTO needs a linker plugin Debian installs separately).
ifeq ($(SAN),)
ifeq ($(findstring clang,$(shell $(CC) --version 2>/dev/null)),)
LTO ?= -flto=auto
endif
endif
CFLAGS   += $(LTO)

GEN_DIR    := $(BUILD)/gen
PROTOS     := $(shell find xds/proto -name '*.proto' 2>/dev/null | sort)
PROTO_C    := $(patsubst xds/proto/%.proto,$(GEN_DIR)/%.pb-c.c,$(PROTOS)) \
              $(patsubst %.proto,$(GEN_DIR)/%.pb-c.c,$(WKT_PROTOS))
PROTO_STAMP := $(GEN_DIR)/.protos

SRC      := $(sort $(wildcard proxy/*.c filters/*.c xds/*.c))
MAIN_SRC := proxy/main.c
LIB_SRC  := $(filter-out $(MAIN_SRC),$(SRC))
OBJ_DIR  := $(BUILD)/obj
LIB_OBJ  := $(patsubst %.c,$(OBJ_DIR)/%.o,$(LIB_SRC)) \
            $(patsubst $(GEN_DIR)/%.c,$(OBJ_DIR)/gen/%.o,$(PROTO_C)) \
            $(OBJ_DIR)/gen/pb_registry.o \
            $(OBJ_DIR)/llhttp/llhttp.o $(OBJ_DIR)/llhttp/api.o $(OBJ_DIR)/llhttp/http.o
LIB      := $(BUILD)/libmagpie.a

# magpie-cp, the control plane (xds/cp/, docs/control-plane.md): its own objects over libmagpie.a
# for the schema code.
CP_SRC   := $(sort $(wildcard xds/cp/*.c))
CP_OBJ   := $(patsubst %.c,$(OBJ_DIR)/%.o,$(CP_SRC))

UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all deps run test unit check-format format bench fuzz clean
all: $(BUILD)/magpie $(BUILD)/magpie-cp $(UNIT_BIN)

deps:
	@missing=""; for p in $(DEB_ALL); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(PROTO_STAMP): $(PROTOS)
	@mkdir -p $(GEN_DIR)
	protoc-c --c_out=$(GEN_DIR) -Ixds/proto -I$(WKT_DIR) $(PROTOS) $(WKT_PROTOS)
	@touch $@

$(PROTO_C): $(PROTO_STAMP)
	@test -f $@

$(GEN_DIR)/pb_registry.c: $(PROTO_STAMP) xds/gen_registry.sh
	sh xds/gen_registry.sh $(GEN_DIR) > $@

$(OBJ_DIR)/gen/%.o: $(GEN_DIR)/%.c $(PROTO_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=c11 $(OPT) -w $(SANFLAGS) -c $< -o $@

# llhttp is compiled from Debian's sources as they are: their own warnings are not ours.
$(OBJ_DIR)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) -I$(LLHTTP_INC) -std=c11 $(OPT) $(LTO) -w $(SANFLAGS) -c $< -o $@

$(OBJ_DIR)/%.o: %.c $(PROTO_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/magpie: $(OBJ_DIR)/$(MAIN_SRC:.c=.o) $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/magpie-cp: $(CP_OBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/unit.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

-include $(shell find $(OBJ_DIR) -name '*.d' 2>/dev/null)

run: deps $(BUILD)/magpie
	./$(BUILD)/magpie

unit: $(UNIT_BIN)
	@tests/run_unit.sh $(BUILD)

check-format:
	@tests/check_format.sh

format:
	clang-format -i $$(find proxy filters xds include tests/unit tests/fuzz -name '*.[ch]' 2>/dev/null)

fuzz: deps
	@tests/fuzz/run.sh

test: deps
	@tests/run_all.sh

bench: deps $(BUILD)/magpie
	tests/bench/run

clean:
	rm -rf $(BUILD)
