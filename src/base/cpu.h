/*
 * cpu.h — run-time CPU feature detection and the kernel level in force.
 *
 * Kernels come in three levels, each a superset of the one below:
 *   CPU_PORTABLE  plain C (the reference the others are tested against)
 *   CPU_AVX2      AVX2 + FMA + F16C                  (files *_avx2.c)
 *   CPU_AVX512    AVX-512 F + BW + VL + DQ (+ the above) (files *_avx512.c)
 * cpu_level() is the level dispatchers use: the best the hardware and the OS
 * support (cpuid + xgetbv via __builtin_cpu_supports), lowered by the
 * environment variable OPTIQ_CPU=portable|avx2|avx512 (read once), and lowered
 * further by cpu_force_level(). A level can only be lowered, never raised past
 * what the hardware has: asking for avx512 on an AVX2 machine gives avx2. An
 * OPTIQ_CPU value that is not a level name is ignored (cpu_env_override_ok()
 * then returns 0, so a front end can say so).
 */
#ifndef OPTIQ_BASE_CPU_H
#define OPTIQ_BASE_CPU_H

typedef enum cpu_level { CPU_PORTABLE = 0, CPU_AVX2 = 1, CPU_AVX512 = 2, CPU_LEVEL_COUNT } cpu_level;

typedef struct cpu_features {
    int avx2, fma, f16c;                       /* CPU_AVX2 needs all three */
    int avx512f, avx512bw, avx512vl, avx512dq; /* CPU_AVX512 needs all four */
    int avx512vnni, avx512bf16;                /* informative, for later fast paths */
} cpu_features;

/* What the hardware supports (detected once, cached). */
const cpu_features *cpu_get_features(void);
/* 0 when OPTIQ_CPU is set to something other than a level name. */
int cpu_env_override_ok(void);
/* Highest level the hardware supports, ignoring overrides. */
cpu_level cpu_detected_level(void);
/* Level in force: min(detected, OPTIQ_CPU, forced). */
cpu_level cpu_level_current(void);
/* Cap the level (tests, benchmarks); CPU_LEVEL_COUNT removes the cap.
 * Returns the level now in force. Not meant to be called while kernels run. */
cpu_level cpu_force_level(cpu_level cap);
/* "portable", "avx2", "avx512". */
const char *cpu_level_name(cpu_level l);
/* Parse a level name; -1 when unknown. */
int cpu_level_from_name(const char *s);
/* Physical cores available to this process (SMT siblings counted once). */
int cpu_physical_cores(void);

#endif
