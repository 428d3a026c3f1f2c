/* cpu.c — see cpu.h. */
#include "base/cpu.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const LEVEL_NAMES[CPU_LEVEL_COUNT] = {"portable", "avx2", "avx512"};

static cpu_features g_feat;
static cpu_level g_detected, g_env_cap;
static int g_env_bad;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Atomic int g_forced_cap = CPU_LEVEL_COUNT;

const char *cpu_level_name(cpu_level l) { return (l >= 0 && l < CPU_LEVEL_COUNT) ? LEVEL_NAMES[l] : "unknown"; }

int cpu_level_from_name(const char *s) {
    for (int l = 0; l < CPU_LEVEL_COUNT; l++)
        if (strcmp(s, LEVEL_NAMES[l]) == 0) return l;
    return -1;
}

static void detect(void) {
#if defined(__x86_64__) || defined(__i386__)
    /* __builtin_cpu_supports checks cpuid and, for AVX/AVX-512, that the OS
     * saves the wider registers (xgetbv), so a "yes" is safe to execute. */
    __builtin_cpu_init();
    g_feat.avx2 = __builtin_cpu_supports("avx2") != 0;
    g_feat.fma = __builtin_cpu_supports("fma") != 0;
    g_feat.f16c = 0;
    {
        /* gcc 12 has no "f16c" name for __builtin_cpu_supports: cpuid leaf 1, ecx bit 29. */
        unsigned a = 1, b = 0, c = 0, d = 0;
        __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
        g_feat.f16c = (c >> 29) & 1u;
    }
    g_feat.avx512f = __builtin_cpu_supports("avx512f") != 0;
    g_feat.avx512bw = __builtin_cpu_supports("avx512bw") != 0;
    g_feat.avx512vl = __builtin_cpu_supports("avx512vl") != 0;
    g_feat.avx512dq = __builtin_cpu_supports("avx512dq") != 0;
    g_feat.avx512vnni = __builtin_cpu_supports("avx512vnni") != 0;
    g_feat.avx512bf16 = __builtin_cpu_supports("avx512bf16") != 0;
#endif
    g_detected = CPU_PORTABLE;
    if (g_feat.avx2 && g_feat.fma && g_feat.f16c) {
        g_detected = CPU_AVX2;
        if (g_feat.avx512f && g_feat.avx512bw && g_feat.avx512vl && g_feat.avx512dq) g_detected = CPU_AVX512;
    }
    g_env_cap = CPU_AVX512;
    const char *env = getenv("OPTIQ_CPU");
    if (env && *env) {
        int l = cpu_level_from_name(env);
        if (l >= 0)
            g_env_cap = (cpu_level)l;
        else
            g_env_bad = 1; /* the library does not print; callers can ask cpu_env_override_ok() */
    }
}

const cpu_features *cpu_get_features(void) {
    pthread_once(&g_once, detect);
    return &g_feat;
}

int cpu_env_override_ok(void) {
    pthread_once(&g_once, detect);
    return !g_env_bad;
}

cpu_level cpu_detected_level(void) {
    pthread_once(&g_once, detect);
    return g_detected;
}

cpu_level cpu_level_current(void) {
    pthread_once(&g_once, detect);
    int l = (int)g_detected;
    if ((int)g_env_cap < l) l = (int)g_env_cap;
    int f = atomic_load_explicit(&g_forced_cap, memory_order_relaxed);
    if (f < l) l = f;
    return (cpu_level)l;
}

cpu_level cpu_force_level(cpu_level cap) {
    if (cap < 0 || cap > CPU_LEVEL_COUNT) cap = CPU_LEVEL_COUNT;
    atomic_store(&g_forced_cap, (int)cap);
    return cpu_level_current();
}

/* Count distinct (package, core) pairs among the CPUs this process may run on. */
int cpu_physical_cores(void) {
    cpu_set_t set;
    int n_logical = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n_logical < 1) n_logical = 1;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return n_logical;
    enum { MAXC = 1024 };
    long keys[MAXC];
    int n_keys = 0, n_cpus = 0;
    for (int c = 0; c < CPU_SETSIZE && n_keys < MAXC; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        n_cpus++;
        char path[128];
        long core = -1, pkg = -1;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%ld", &core) != 1) core = -1;
            fclose(f);
        }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%ld", &pkg) != 1) pkg = -1;
            fclose(f);
        }
        if (core < 0) return n_cpus > 0 ? CPU_COUNT(&set) : n_logical; /* no topology: count logical */
        long key = pkg * 100000 + core;
        int seen = 0;
        for (int i = 0; i < n_keys; i++)
            if (keys[i] == key) {
                seen = 1;
                break;
            }
        if (!seen) keys[n_keys++] = key;
    }
    return n_keys > 0 ? n_keys : n_logical;
}
