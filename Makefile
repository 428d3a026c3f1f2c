# optiq build. Plain GNU make: the tree is small, every source file is found by
# wildcard, and the only configuration is the compiler flags, so a generator
# (CMake) would add a dependency without removing any work.
#
#   make            build/liboptiq.a, build/liboptiq.so, build/optiq
#   make test       build and run every test program (tests/test_*.c) + bounded fuzz run
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      build/optiq bench
#
# Sources named *_avx2.c / *_avx512.c / *_vnni.c get the matching -m flags; the
# code in them is only called after a run-time CPU check (src/base/cpu.c).

CC      ?= gcc
BUILD   ?= build
OPT     ?= -O2
# Project flags live in BASE_CFLAGS so that CFLAGS / LDFLAGS given on the
# command line (e.g. sanitizer flags) add to them instead of replacing them.
CFLAGS  ?=
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Werror -fPIC -pthread \
              -Iinclude -Isrc
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS)
LDLIBS  += -lmicrohttpd -lcurl -lcjson -lpcre2-8 -lutf8proc -ljpeg -lpng -lz -lwebpdemux -lwebp -lgif -lmvec -lm -pthread
LDFLAGS ?=

AVX2_FLAGS   = -mavx2 -mfma -mf16c
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c
VNNI_FLAGS   = $(AVX512_FLAGS) -mavx512vnni

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
$(BUILD)/%_vnni.o: %_vnni.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(VNNI_FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# src/server/lab.c embeds the Lab's files (web/lab/) with .incbin: editing one rebuilds it.
LAB_FILES := $(wildcard web/lab/*)
$(BUILD)/src/server/lab.o $(BUILD)/fuzz/obj/src/server/lab.o: $(LAB_FILES)

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

# libFuzzer targets: every tests/fuzz/fuzz_*.c is linked against a copy of the
# library built by clang with coverage instrumentation + ASan/UBSan. The
# bounded runs are done by tests/test_fuzz.sh as part of `make test`.
FUZZ_CC     ?= clang
FUZZ_CFLAGS  = -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc -fsanitize=fuzzer-no-link,address,undefined \
               -fno-sanitize-recover=all
FUZZ_SRC    := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN    := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_OBJ    := $(LIB_SRC:%.c=$(BUILD)/fuzz/obj/%.o)

# The SIMD kernel files are compiled without instrumentation: no fuzz target
# reaches them, and clang takes tens of minutes (and gigabytes) to put
# ASan/UBSan into their fully inlined kernel variants.
FUZZ_KERNEL_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc
$(BUILD)/fuzz/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_KERNEL_CFLAGS) $(AVX2_FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/fuzz/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_KERNEL_CFLAGS) $(AVX512_FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/fuzz/obj/%_vnni.o: %_vnni.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_KERNEL_CFLAGS) $(VNNI_FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/fuzz/liboptiq_fuzz.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/fuzz/liboptiq_fuzz.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(BUILD)/fuzz/liboptiq_fuzz.a $(LDLIBS)
fuzz: $(FUZZ_BIN)
	@BUILD=$(BUILD) bash tests/test_fuzz.sh

ifeq ($(NO_FUZZ),1)
TEST_DEPS := all $(TEST_BIN)
else
TEST_DEPS := all $(TEST_BIN) $(FUZZ_BIN)
endif

test: $(TEST_DEPS)
	@OPTIQ_ROOT=$(CURDIR) BUILD=$(BUILD) NO_FUZZ=$(NO_FUZZ) bash tests/run_tests.sh $(TEST_BIN) $(sort $(wildcard tests/test_*.sh))

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer" \
	    CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" NO_FUZZ=1 test

bench: all
	$(BUILD)/optiq bench

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
