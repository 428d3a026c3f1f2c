# optiq build. Plain GNU make: the tree is small, every source file is found by
# wildcard, and the only configuration is the compiler flags, so a generator
# (CMake) would add a dependency without removing any work.
#
#   make            build/liboptiq.a, build/liboptiq.so, build/optiq
#   make test       build and run every test program (tests/test_*.c) + bounded fuzz run
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      build/optiq bench
#
# Sources named *_avx2.c / *_avx512.c get the matching -m flags; the code in them
# is only called after a run-time CPU check (src/base/cpu.c).

CC      ?= gcc
BUILD   ?= build
OPT     ?= -O2
# Project flags live in BASE_CFLAGS so that CFLAGS / LDFLAGS given on the
# command line (e.g. sanitizer flags) add to them instead of replacing them.
CFLAGS  ?=
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Werror -fPIC -pthread \
              -Iinclude -Isrc
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS)
LDLIBS  += -lcjson -lm -pthread
LDFLAGS ?=

AVX2_FLAGS   = -mavx2 -mfma -mf16c
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c

LIB_SRC  := $(sort $(shell find src -name '*.c'))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_SRC  := $(sort $(wildcard cli/*.c))
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test asan bench clean fuzz
all: $(BUILD)/liboptiq.a $(BUILD)/liboptiq.so $(BUILD)/optiq

$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(AVX2_FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(AVX512_FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/liboptiq.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(BUILD)/liboptiq.so: $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/optiq: $(CLI_OBJ) $(BUILD)/liboptiq.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/liboptiq.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/liboptiq.a $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -MMD -MP -o $@ $< $(BUILD)/liboptiq.a $(LDLIBS)

# Bounded libFuzzer run over the safetensors header parser (clang only; the
# fuzz harness is also built as a plain replay program by the tests).
FUZZ_CC ?= clang
$(BUILD)/fuzz/fuzz_safetensors: tests/fuzz/fuzz_safetensors.c src/io/safetensors.c src/base/error.c src/base/dtype.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all -o $@ $^ $(LDLIBS)
fuzz: $(BUILD)/fuzz/fuzz_safetensors
	@mkdir -p $(BUILD)/fuzz/corpus
	$(BUILD)/fuzz/fuzz_safetensors -runs=$${FUZZ_RUNS:-200000} -max_len=4096 -dict=tests/fuzz/safetensors.dict \
	    $(BUILD)/fuzz/corpus tests/fuzz/corpus_safetensors
	@echo "fuzz: 1 passed, 0 failed"

test: all $(TEST_BIN)
	@OPTIQ_ROOT=$(CURDIR) BUILD=$(BUILD) bash tests/run_tests.sh $(TEST_BIN) $(sort $(wildcard tests/test_*.sh))
ifneq ($(NO_FUZZ),1)
	@$(MAKE) --no-print-directory fuzz
endif

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer" \
	    CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" NO_FUZZ=1 test

bench: all
	$(BUILD)/optiq bench

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
