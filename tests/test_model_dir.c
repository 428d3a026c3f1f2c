/* test_model_dir.c — model folders: config.json, shards and index, sidecar,
 * tokenizer files, quantization resolution, and the mlx-lm-converted fixture
 * folders against the values mlx-lm reported for them (reference.json). */
#include "io/json.h"
#include "io/model_dir.h"
#include "io/quant_config.h"
#include "io/safetensors.h"
#include "optiq.h"
#include "test.h"

#include <ftw.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- folder builders ---------------------------------------------------- */

static char root[256];
static int n_dirs;
static uint8_t ZERO[1 << 16]; /* tensor contents do not matter here */
static optiq_error e;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static const char *pj(const char *dir, const char *name) {
    static char buf[8][600];
    static int k;
    k = (k + 1) & 7;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static const char *newdir(void) {
    static char buf[8][300];
    static int k;
    k = (k + 1) & 7;
    snprintf(buf[k], sizeof buf[k], "%s/m%d", root, n_dirs++);
    mkdir(buf[k], 0755);
    return buf[k];
}

static void put(const char *dir, const char *name, const char *text) {
    FILE *f = fopen(pj(dir, name), "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void add(st_writer *w, const char *name, dtype dt, int ndim, int64_t a, int64_t b, int64_t c) {
    int64_t s[3] = {a, b, c};
    if (st_writer_add(w, name, dt, ndim, s, ZERO, &e) != OPTIQ_OK) fprintf(stderr, "add %s: %s\n", name, e.message);
}

/* X.weight / X.scales (/ X.biases for affine) of a quantized linear [O, K]
 * (or an expert stack [E, O, K] when E > 0). */
static void add_q(st_writer *w, const char *X, int E, int O, int K, int bits, int gs, qmode mode, dtype sdt) {
    char n[256];
    int nd = E ? 3 : 2;
    int64_t lead = E ? E : O, mid = E ? O : K * bits / 32, last = K * bits / 32;
    snprintf(n, sizeof n, "%s.weight", X);
    add(w, n, DT_U32, nd, lead, mid, last);
    snprintf(n, sizeof n, "%s.scales", X);
    add(w, n, sdt, nd, lead, E ? O : K / gs, K / gs);
    if (mode == QMODE_AFFINE) {
        snprintf(n, sizeof n, "%s.biases", X);
        add(w, n, sdt, nd, lead, E ? O : K / gs, K / gs);
    }
}

static void save(st_writer *w, const char *dir, const char *file) {
    if (st_writer_save(w, pj(dir, file), &e) != OPTIQ_OK) fprintf(stderr, "save: %s\n", e.message);
    st_writer_free(w);
}

static const char *CFG_PLAIN = "{\"model_type\": \"qwen3\", \"architectures\": [\"Qwen3ForCausalLM\"],"
                               " \"hidden_size\": 64, \"num_hidden_layers\": 2}";

/* A float-only tower: embed, one norm, one linear. */
static const char *plain_folder(void) {
    const char *d = newdir();
    put(d, "config.json", CFG_PLAIN);
    st_writer *w = st_writer_new();
    add(w, "model.embed_tokens.weight", DT_BF16, 2, 16, 8, 0);
    add(w, "model.norm.weight", DT_BF16, 1, 8, 0, 0);
    add(w, "lm_head.weight", DT_BF16, 2, 16, 8, 0);
    save(w, d, "model.safetensors");
    return d;
}

static optiq_status open_dir(const char *d, model_dir **md) {
    e.message[0] = 0;
    return model_dir_open(d, md, &e);
}

/* Open, parse the quantization object and resolve modules. */
static optiq_status resolve(const char *d, model_dir **md, quant_config *qc, quant_modules *qm) {
    memset(qc, 0, sizeof *qc);
    memset(qm, 0, sizeof *qm);
    optiq_status st = open_dir(d, md);
    if (st != OPTIQ_OK) return st;
    st = quant_config_parse(model_dir_config(*md), model_dir_config_path(*md), qc, &e);
    if (st != OPTIQ_OK) return st;
    return quant_resolve(*md, qc, qm, &e);
}

static void done(model_dir *md, quant_config *qc, quant_modules *qm) {
    quant_modules_free(qm);
    quant_config_free(qc);
    model_dir_close(md);
}

#define HAS(s) CHECKF(strstr(e.message, (s)) != NULL, "'%s' not in: %s", (s), e.message)

/* Folder with one quantized module X (O=8, K=64) and a config quantization object. */
static const char *q_folder(const char *quant_json, int E, int bits, int gs, qmode mode, dtype sdt) {
    const char *d = newdir();
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "{\"model_type\": \"qwen3\", \"quantization\": %s}", quant_json);
    put(d, "config.json", cfg);
    st_writer *w = st_writer_new();
    add_q(w, "model.layers.0.mlp.down_proj", E, 8, 64, bits, gs, mode, sdt);
    add(w, "model.norm.weight", DT_BF16, 1, 8, 0, 0);
    save(w, d, "model.safetensors");
    return d;
}

/* ---- reference.json comparison -------------------------------------------- */

static void check_reference(const char *rel) {
    const char *dir = test_path(rel);
    cJSON *ref = NULL;
    if (json_load_file(pj(dir, "reference.json"), NULL, 0, &ref, &e) != OPTIQ_OK) {
        CHECKF(0, "%s", e.message);
        return;
    }
    optiq_model_info *info = NULL;
    CHECKF(optiq_model_info_open(dir, &info, &e) == OPTIQ_OK, "%s", e.message);
    model_dir *md = NULL;
    quant_config qc;
    quant_modules qm;
    CHECKF(resolve(dir, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
    if (!info || !md) goto out;

    /* parameters and bits per weight exactly as mlx-lm computed them */
    int64_t params = 0;
    double bpw = 0;
    json_get_int(ref, "reference.json", "mlx_lm_total_parameters_unpacked", &params, &e);
    json_get_double(ref, "reference.json", "mlx_lm_bits_per_weight", &bpw, &e);
    CHECKF(optiq_model_info_parameters(info) == (uint64_t)params, "parameters %llu, mlx-lm %lld",
           (unsigned long long)optiq_model_info_parameters(info), (long long)params);
    CHECKF(optiq_model_info_bits_per_weight(info) == bpw, "bpw %.17g, mlx-lm %.17g",
           optiq_model_info_bits_per_weight(info), bpw);
    int64_t ts = 0;
    json_get_int(ref, "reference.json", "index_metadata.total_size", &ts, &e);
    CHECK(model_dir_tower_tensor_bytes(md) == (uint64_t)ts);

    /* every quantized module with mlx-lm's (bits, group size, mode) */
    const cJSON *qmods = json_path(ref, "quantized_modules");
    CHECK(cJSON_IsObject(qmods) && (size_t)cJSON_GetArraySize(qmods) == qm.n);
    for (const cJSON *m = qmods ? qmods->child : NULL; m; m = m->next) {
        const qmodule *q = quant_modules_find(&qm, m->string);
        CHECKF(q != NULL, "module %s not resolved as quantized", m->string);
        if (!q) continue;
        int64_t bits = 0, gs = 0, w = 0;
        const char *mode = "";
        json_get_int(m, "ref", "bits", &bits, &e);
        json_get_int(m, "ref", "group_size", &gs, &e);
        json_get_string(m, "ref", "mode", &mode, &e);
        json_get_int(m, "ref", "weight_elements_unpacked", &w, &e);
        CHECKF(q->q.fmt.bits == bits && q->q.fmt.group_size == gs && strcmp(qmode_name(q->q.fmt.mode), mode) == 0,
               "%s: %d/%d/%s, mlx-lm %lld/%lld/%s", m->string, q->q.fmt.bits, q->q.fmt.group_size,
               qmode_name(q->q.fmt.mode), (long long)bits, (long long)gs, mode);
        CHECKF(q->q.n_mats * q->q.rows * q->q.cols == w, "%s: %lld weights, mlx-lm %lld", m->string,
               (long long)(q->q.n_mats * q->q.rows * q->q.cols), (long long)w);
    }
    /* unquantized modules: same set */
    const cJSON *un = json_path(ref, "unquantized_modules");
    CHECKF((size_t)cJSON_GetArraySize(un) == qm.n_unquantized, "%zu unquantized, mlx-lm %d", qm.n_unquantized,
           cJSON_GetArraySize(un));
    for (const cJSON *u = un ? un->child : NULL; u; u = u->next) {
        const char *name = "";
        json_get_string(u, "ref", "module", &name, &e);
        int found = 0;
        for (size_t i = 0; i < qm.n_unquantized; i++) found |= strcmp(qm.unquantized[i], name) == 0;
        CHECKF(found, "unquantized module %s not listed", name);
    }
    /* the JSON summary carries the same histograms and totals */
    char *text = optiq_model_info_json(info);
    cJSON *sum = NULL;
    CHECK(text && json_parse(text, strlen(text), "summary", &sum, &e) == OPTIQ_OK);
    const char *hk[2] = {"histogram_bits_to_module_count", "histogram_bits_to_weight_count"};
    for (int h = 0; sum && h < 2; h++) {
        char p[128];
        snprintf(p, sizeof p, "quantization.%s", hk[h]);
        const cJSON *mine = json_path(sum, p), *theirs = json_path(ref, hk[h]);
        CHECKF(mine && theirs && cJSON_Compare(mine, theirs, 1), "%s differs", hk[h]);
    }
    int64_t v = 0;
    CHECK(sum && json_get_int(sum, "summary", "language.parameters", &v, &e) == OPTIQ_OK && v == params);
    CHECK(sum && json_get_int(sum, "summary", "language.index.total_parameters", &v, &e) == OPTIQ_OK && v == params);
    double sb = 0;
    CHECK(sum && json_get_double(sum, "summary", "language.bits_per_weight", &sb, &e) == OPTIQ_OK && sb == bpw);
    cJSON_Delete(sum);
    optiq_free(text);
out:
    done(md, &qc, &qm);
    optiq_model_info_free(info);
    cJSON_Delete(ref);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/optiq-test-md-XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    model_dir *md = NULL;
    quant_config qc;
    quant_modules qm;

    /* ---- folder structure ---- */
    for (TEST_CASE("plain folder: config, tower, lookups")) {
        const char *d = plain_folder();
        CHECKF(open_dir(d, &md) == OPTIQ_OK, "%s", e.message);
        if (md) {
            CHECK(strcmp(model_dir_model_type(md), "qwen3") == 0);
            CHECK(model_dir_text_model_type(md) == NULL && model_dir_vision_config(md) == NULL);
            CHECK(cJSON_GetArraySize(model_dir_architectures(md)) == 1);
            CHECK(model_dir_shard_count(md) == 1 && strcmp(model_dir_shard_name(md, 0), "model.safetensors") == 0);
            CHECK(model_dir_tensor_count(md) == 3);
            CHECK(model_dir_find(md, "model.norm.weight", NULL) != NULL);
            CHECK(model_dir_find(md, "model.norm", NULL) == NULL);
            CHECK(strcmp(model_dir_tensor_at(md, 0, NULL)->name, "lm_head.weight") == 0);
            CHECK(model_dir_index(md) == NULL && model_dir_sidecar(md) == NULL);
            CHECK(model_dir_chat_template_source(md) == NULL);
        }
        model_dir_close(md);
        md = NULL;
    }
    for (TEST_CASE("in-memory model dir: config text and one shard, no folder")) {
        /* the shard image: header length, the writer's header, zeroed data */
        uint8_t *img[2] = {NULL, NULL};
        size_t len = 0, data = (16 * 8 + 8) * 2;
        st_file *sf[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) {
            st_writer *w = st_writer_new();
            add(w, "model.embed_tokens.weight", DT_BF16, 2, 16, 8, 0);
            add(w, "model.norm.weight", DT_BF16, 1, 8, 0, 0);
            char *hdr = NULL;
            size_t hl = 0;
            CHECK(st_writer_header(w, &hdr, &hl, &e) == OPTIQ_OK);
            st_writer_free(w);
            len = 8 + hl + data;
            img[k] = calloc(1, len);
            if (!hdr || !img[k]) {
                free(hdr);
                break;
            }
            for (int b = 0; b < 8; b++) img[k][b] = (uint8_t)((uint64_t)hl >> (8 * b));
            memcpy(img[k] + 8, hdr, hl);
            free(hdr);
            CHECKF(st_open_memory(img[k], len, "<memory>", &sf[k], &e) == OPTIQ_OK, "%s", e.message);
        }
        CHECKF(model_dir_open_memory("{\"model_type\": \"qwen3_5\", \"text_config\": {\"hidden_size\": 8}}", sf[0],
                                     img[0], &md, &e) == OPTIQ_OK, "%s", e.message);
        if (md) {
            int64_t h = 0;
            CHECK(strcmp(model_dir_path(md), "<memory>") == 0);
            CHECK(strcmp(model_dir_model_type(md), "qwen3_5") == 0 && model_dir_text_config(md) != NULL);
            CHECK(model_dir_lang_int(md, "hidden_size", &h, &e) == OPTIQ_OK && h == 8);
            CHECK(model_dir_shard_count(md) == 1 && strcmp(model_dir_shard_name(md, 0), "model.safetensors") == 0);
            CHECK(model_dir_tensor_count(md) == 2);
            size_t shard = 9;
            const st_tensor *t = model_dir_find(md, "model.norm.weight", &shard);
            CHECK(t && shard == 0 && t->shape[0] == 8);
            CHECK(strcmp(model_dir_tensor_at(md, 0, NULL)->name, "model.embed_tokens.weight") == 0);
            CHECK(model_dir_tower_file_bytes(md) == len && model_dir_tower_tensor_bytes(md) == data);
            CHECK(model_dir_index(md) == NULL && model_dir_sidecar(md) == NULL && model_dir_other_count(md) == 0);
            CHECK(model_dir_file(md, MD_TOKENIZER_JSON) == NULL && model_dir_chat_template_source(md) == NULL);
        }
        model_dir_close(md); /* frees img[0] */
        md = NULL;
        /* a config that fails its checks: the shard and the buffer are released all the same */
        CHECK(model_dir_open_memory("{\"architectures\": []}", sf[1], img[1], &md, &e) == OPTIQ_ERR_FORMAT && !md);
        HAS("<memory>/config.json");
        CHECK(model_dir_open_memory("{\"model_type\": \"x\"}", NULL, NULL, &md, &e) == OPTIQ_ERR_FORMAT && !md);
        HAS("no language-tower weights");
    }
    for (TEST_CASE("missing config.json")) {
        const char *d = newdir();
        CHECK(open_dir(d, &md) == OPTIQ_ERR_IO && md == NULL);
        HAS("not a model folder: config.json is missing");
        CHECK(open_dir(pj(d, "nope"), &md) == OPTIQ_ERR_IO);
        HAS("nope: cannot open folder");
    }
    for (TEST_CASE("malformed config.json")) {
        const char *d = plain_folder();
        put(d, "config.json", "{\n  \"model_type\": \"qwen3\",\n  oops\n}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("config.json: not valid JSON (syntax error at line 3");
        put(d, "config.json", "[1, 2]");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("config.json: is an array, expected an object");
        put(d, "config.json", "{\"model_type\": \"qwen3\", \"text_config\": 5}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("config.json: text_config is a number, expected an object");
    }
    for (TEST_CASE("config without model_type")) {
        const char *d = plain_folder();
        put(d, "config.json", "{\"architectures\": [\"X\"]}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("config.json: model_type missing");
        put(d, "config.json", "{\"model_type\": 3}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("config.json: model_type is a number, expected a string");
    }
    for (TEST_CASE("folder without model*.safetensors")) {
        const char *d = newdir();
        put(d, "config.json", CFG_PLAIN);
        st_writer *w = st_writer_new();
        add(w, "x", DT_F32, 1, 4, 0, 0);
        save(w, d, "weights.safetensors");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("no language-tower weights (no model*.safetensors file)");
    }
    for (TEST_CASE("corrupt shard is reported with its path")) {
        const char *d = plain_folder();
        FILE *f = fopen(pj(d, "model.safetensors"), "wb");
        if (f) {
            fwrite("\x04\0\0\0\0\0\0\0{}xx", 1, 12, f);
            fclose(f);
        }
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("model.safetensors: header has stray bytes");
        CHECK(strstr(e.message, d) == e.message);
    }
    for (TEST_CASE("shards: sorted, global lookup, duplicates across shards")) {
        const char *d = newdir();
        put(d, "config.json", CFG_PLAIN);
        st_writer *w = st_writer_new();
        add(w, "b.weight", DT_BF16, 1, 4, 0, 0);
        add(w, "c.weight", DT_BF16, 1, 4, 0, 0);
        save(w, d, "model-00002-of-00002.safetensors");
        w = st_writer_new();
        add(w, "a.weight", DT_BF16, 1, 4, 0, 0);
        add(w, "d.weight", DT_F32, 1, 4, 0, 0);
        save(w, d, "model-00001-of-00002.safetensors");
        CHECKF(open_dir(d, &md) == OPTIQ_OK, "%s", e.message);
        if (md) {
            CHECK(model_dir_shard_count(md) == 2);
            CHECK(strcmp(model_dir_shard_name(md, 0), "model-00001-of-00002.safetensors") == 0);
            size_t s = 9;
            const st_tensor *t = model_dir_find(md, "c.weight", &s);
            CHECK(t && s == 1);
            t = model_dir_find(md, "d.weight", &s);
            CHECK(t && s == 0 && t->dtype == DT_F32);
            const char *want[4] = {"a.weight", "b.weight", "c.weight", "d.weight"};
            for (size_t i = 0; i < 4; i++) CHECK(strcmp(model_dir_tensor_at(md, i, NULL)->name, want[i]) == 0);
            CHECK(model_dir_tower_tensor_bytes(md) == 3 * 8 + 16);
        }
        model_dir_close(md);
        md = NULL;
        w = st_writer_new();
        add(w, "a.weight", DT_BF16, 1, 4, 0, 0);
        save(w, d, "model-extra.safetensors");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("tensor 'a.weight' is in both model-00001-of-00002.safetensors and model-extra.safetensors");
    }

    /* ---- index ---- */
    for (TEST_CASE("index consistent with the shards")) {
        const char *d = plain_folder();
        put(d, MD_INDEX_NAME,
            "{\"metadata\": {\"total_size\": 544, \"total_parameters\": 264}, \"weight_map\": {"
            "\"lm_head.weight\": \"model.safetensors\", \"model.embed_tokens.weight\": \"model.safetensors\","
            " \"model.norm.weight\": \"model.safetensors\"}}");
        CHECKF(open_dir(d, &md) == OPTIQ_OK, "%s", e.message);
        CHECK(md && model_dir_index(md) != NULL);
        model_dir_close(md);
        md = NULL;
    }
    for (TEST_CASE("index naming a missing shard")) {
        const char *d = plain_folder();
        put(d, MD_INDEX_NAME,
            "{\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\","
            " \"model.embed_tokens.weight\": \"model.safetensors\", \"model.norm.weight\": \"model.safetensors\"}}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("model.safetensors.index.json: weight_map puts tensor 'lm_head.weight' in "
            "model-00002-of-00002.safetensors, which does not exist");
    }
    for (TEST_CASE("index naming a missing tensor")) {
        const char *d = plain_folder();
        put(d, MD_INDEX_NAME,
            "{\"weight_map\": {\"lm_head.weight\": \"model.safetensors\", \"lm_head.bias\": \"model.safetensors\","
            " \"model.embed_tokens.weight\": \"model.safetensors\", \"model.norm.weight\": \"model.safetensors\"}}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("weight_map lists tensor 'lm_head.bias' in model.safetensors, but no shard has it");
    }
    for (TEST_CASE("index missing a tower tensor, a shard, or misplacing a tensor")) {
        const char *d = plain_folder();
        put(d, MD_INDEX_NAME,
            "{\"weight_map\": {\"lm_head.weight\": \"model.safetensors\", \"model.norm.weight\": "
            "\"model.safetensors\"}}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("tensor 'model.embed_tokens.weight' of model.safetensors is missing from the weight_map");
        st_writer *w = st_writer_new();
        add(w, "extra.weight", DT_BF16, 1, 4, 0, 0);
        save(w, d, "model-extra.safetensors");
        put(d, MD_INDEX_NAME,
            "{\"weight_map\": {\"lm_head.weight\": \"model.safetensors\", \"model.embed_tokens.weight\": "
            "\"model.safetensors\", \"model.norm.weight\": \"model.safetensors\"}}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("shard model-extra.safetensors is on disk but the weight_map names none of its tensors");
        put(d, MD_INDEX_NAME,
            "{\"weight_map\": {\"lm_head.weight\": \"model.safetensors\", \"model.embed_tokens.weight\": "
            "\"model.safetensors\", \"model.norm.weight\": \"model.safetensors\", \"extra.weight\": "
            "\"model.safetensors\"}}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("weight_map lists tensor 'extra.weight' in model.safetensors, but it is in model-extra.safetensors");
        put(d, MD_INDEX_NAME, "{\"weight_map\": {\"extra.weight\": \"optiq_vision.safetensors\"}}");
        w = st_writer_new();
        add(w, "v.weight", DT_BF16, 1, 4, 0, 0);
        save(w, d, MD_SIDECAR_NAME);
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("weight_map lists tensor 'extra.weight' in optiq_vision.safetensors, but the sidecar lacks it");
        put(d, MD_INDEX_NAME, "{\"weight_map\": {\"extra.weight\": \"mtp.safetensors\"}}");
        put(d, "mtp.safetensors", "x");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("in mtp.safetensors, which is not a language-tower shard");
        put(d, MD_INDEX_NAME, "{\"metadata\": {}}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("model.safetensors.index.json: weight_map missing");
    }

    for (TEST_CASE("sidecar in optiq/ wins over the root; index entries naming it (as mlx-optiq writes)")) {
        const char *d = plain_folder();
        st_writer *w = st_writer_new();
        add(w, "vision_tower.patch_embed.proj.weight", DT_BF16, 2, 8, 4, 0);
        save(w, d, MD_SIDECAR_NAME);
        char sub[1024];
        snprintf(sub, sizeof sub, "%s/%s", d, MD_SIDECAR_SUBDIR);
        mkdir(sub, 0755);
        w = st_writer_new();
        add(w, "vision_tower.patch_embed.proj.weight", DT_BF16, 2, 8, 4, 0);
        add(w, "vision_tower.pos_embed.weight", DT_BF16, 2, 4, 4, 0);
        save(w, sub, MD_SIDECAR_NAME);
        put(d, MD_INDEX_NAME,
            "{\"weight_map\": {\"lm_head.weight\": \"model.safetensors\", \"model.embed_tokens.weight\": "
            "\"model.safetensors\", \"model.norm.weight\": \"model.safetensors\", "
            "\"vision_tower.pos_embed.weight\": \"optiq/optiq_vision.safetensors\"}}");
        CHECKF(open_dir(d, &md) == OPTIQ_OK, "%s", e.message);
        CHECK(md && st_count(model_dir_sidecar(md)) == 2 &&
              strcmp(model_dir_sidecar_rel(md), "optiq/optiq_vision.safetensors") == 0);
        model_dir_close(md);
        md = NULL;
        /* an entry naming the root copy while optiq/ is the sidecar in force */
        put(d, MD_INDEX_NAME,
            "{\"weight_map\": {\"lm_head.weight\": \"model.safetensors\", \"model.embed_tokens.weight\": "
            "\"model.safetensors\", \"model.norm.weight\": \"model.safetensors\", "
            "\"vision_tower.patch_embed.proj.weight\": \"optiq_vision.safetensors\"}}");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("which is not a language-tower shard");
    }

    /* ---- sidecar, other files ---- */
    for (TEST_CASE("sidecar excluded from the tower; other safetensors listed, not opened")) {
        const char *d = plain_folder();
        st_writer *w = st_writer_new();
        add(w, "vision_tower.blocks.0.attn.qkv.weight", DT_BF16, 2, 12, 4, 0);
        add(w, "vision_tower.blocks.0.attn.qkv.bias", DT_BF16, 1, 12, 0, 0);
        add(w, "multi_modal_projector.linear.weight", DT_F32, 2, 4, 4, 0);
        add(w, "lm_head.weight", DT_BF16, 2, 16, 8, 0); /* same name as a tower tensor: no clash */
        st_writer_metadata(w, "format", "mlx", &e);
        save(w, d, MD_SIDECAR_NAME);
        put(d, "mtp.safetensors", "not a safetensors file at all");
        put(d, "adapters.safetensors", "");
        put(d, "tokenizer.json", "{}");
        put(d, "tokenizer_config.json", "{\"chat_template\": \"{{ messages }}\"}");
        put(d, "generation_config.json", "{}");
        put(d, "tokenizer.model", "x");
        CHECKF(open_dir(d, &md) == OPTIQ_OK, "%s", e.message);
        if (md) {
            CHECK(model_dir_tensor_count(md) == 3);
            CHECK(model_dir_find(md, "vision_tower.blocks.0.attn.qkv.weight", NULL) == NULL);
            const st_file *sc = model_dir_sidecar(md);
            CHECK(sc && st_count(sc) == 4 && st_find(sc, "multi_modal_projector.linear.weight"));
            CHECK(model_dir_other_count(md) == 2 && strcmp(model_dir_other(md, 0), "adapters.safetensors") == 0 &&
                  strcmp(model_dir_other(md, 1), "mtp.safetensors") == 0);
            CHECK(model_dir_file(md, MD_TOKENIZER_JSON) && model_dir_file(md, MD_TOKENIZER_MODEL));
            CHECK(model_dir_file(md, MD_SPECIAL_TOKENS_MAP) == NULL);
            CHECK(model_dir_chat_template_source(md) && strcmp(model_dir_chat_template_source(md), "tokenizer_config.json") == 0);
            model_dir_close(md);
            md = NULL;
        }
        put(d, "chat_template.json", "{\"chat_template\": \"x\"}");
        put(d, "chat_template.jinja", "x");
        CHECK(open_dir(d, &md) == OPTIQ_OK);
        CHECK(md && strcmp(model_dir_chat_template_source(md), "chat_template.jinja") == 0);
        model_dir_close(md);
        md = NULL;

        optiq_model_info *info = NULL;
        CHECKF(optiq_model_info_open(d, &info, &e) == OPTIQ_OK, "%s", e.message);
        char *text = info ? optiq_model_info_json(info) : NULL;
        cJSON *j = NULL;
        CHECK(text && json_parse(text, strlen(text), "summary", &j, &e) == OPTIQ_OK);
        int64_t v = 0;
        CHECK(json_get_int(j, "s", "vision.tensors", &v, &e) == OPTIQ_OK && v == 4);
        CHECK(json_get_int(j, "s", "vision.components.vision_tower", &v, &e) == OPTIQ_OK && v == 2);
        CHECK(json_get_int(j, "s", "vision.components.multi_modal_projector", &v, &e) == OPTIQ_OK && v == 1);
        CHECK(json_get_int(j, "s", "language.tensors", &v, &e) == OPTIQ_OK && v == 3);
        CHECK(cJSON_GetArraySize(json_path(j, "vision.dtypes")) == 2);
        CHECK(cJSON_GetArraySize(json_path(j, "other_safetensors")) == 2);
        CHECK(cJSON_IsTrue(json_path(j, "tokenizer_files.tokenizer.json")) == 0); /* dotted key: not a path */
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(json_path(j, "tokenizer_files"), "tokenizer.json")));
        int b = 1;
        CHECK(json_get_bool(j, "s", "quantization.present", &b, &e) == OPTIQ_OK && b == 0);
        cJSON_Delete(j);
        optiq_free(text);
        optiq_model_info_free(info);
    }
    for (TEST_CASE("malformed tokenizer_config.json is reported")) {
        const char *d = plain_folder();
        put(d, "tokenizer_config.json", "{\"chat_template\": ");
        CHECK(open_dir(d, &md) == OPTIQ_ERR_FORMAT);
        HAS("tokenizer_config.json: not valid JSON");
    }

    /* ---- language keys ---- */
    for (TEST_CASE("language keys: top level first, then text_config")) {
        const char *d = plain_folder();
        put(d, "config.json",
            "{\"model_type\": \"gemma3\", \"vocab_size\": 1000, \"vision_config\": {\"hidden_size\": 32},"
            " \"text_config\": {\"model_type\": \"gemma3_text\", \"vocab_size\": 5, \"num_hidden_layers\": 4,"
            " \"rope_theta\": 1e6, \"sliding\": true, \"act\": \"gelu\", \"bad\": \"x\"}}");
        CHECKF(open_dir(d, &md) == OPTIQ_OK, "%s", e.message);
        if (md) {
            int64_t v = 0;
            double dv = 0;
            int b = 0;
            const char *s = NULL, *where = NULL;
            CHECK(strcmp(model_dir_text_model_type(md), "gemma3_text") == 0);
            CHECK(model_dir_vision_config(md) != NULL);
            CHECK(model_dir_lang_int(md, "vocab_size", &v, &e) == OPTIQ_OK && v == 1000);
            CHECK(model_dir_lang_int(md, "num_hidden_layers", &v, &e) == OPTIQ_OK && v == 4);
            CHECK(model_dir_lang_item(md, "num_hidden_layers", &where) && strcmp(where, "text_config") == 0);
            CHECK(model_dir_lang_double_or(md, "rope_theta", 1.0, &dv, &e) == OPTIQ_OK && dv == 1e6);
            CHECK(model_dir_lang_bool_or(md, "sliding", 0, &b, &e) == OPTIQ_OK && b == 1);
            CHECK(model_dir_lang_string_or(md, "act", NULL, &s, &e) == OPTIQ_OK && strcmp(s, "gelu") == 0);
            CHECK(model_dir_lang_int_or(md, "head_dim", 64, &v, &e) == OPTIQ_OK && v == 64);
            CHECK(model_dir_lang_int(md, "head_dim", &v, &e) == OPTIQ_ERR_FORMAT);
            HAS("config.json: head_dim missing (looked at the top level and in text_config)");
            CHECK(model_dir_lang_int(md, "bad", &v, &e) == OPTIQ_ERR_FORMAT);
            HAS("config.json: text_config.bad is a string, expected an integer");
        }
        model_dir_close(md);
        md = NULL;
    }
    for (TEST_CASE("json helpers: paths and typed getters")) {
        cJSON *j = NULL;
        const char *t = "{\"a\": {\"b\": [10, 2.5, \"s\", true, null]}, \"n\": 3}";
        CHECK(json_parse(t, strlen(t), "x.json", &j, &e) == OPTIQ_OK);
        int64_t v = 0;
        double d = 0;
        int b = 0;
        const char *s = NULL;
        CHECK(json_get_int(j, "x.json", "a.b.0", &v, &e) == OPTIQ_OK && v == 10);
        CHECK(json_get_int(j, "x.json", "a.b.1", &v, &e) == OPTIQ_ERR_FORMAT);
        HAS("x.json: a.b.1 is 2.5, expected an integer");
        CHECK(json_get_double(j, "x.json", "a.b.1", &d, &e) == OPTIQ_OK && d == 2.5);
        CHECK(json_get_string(j, "x.json", "a.b.2", &s, &e) == OPTIQ_OK && strcmp(s, "s") == 0);
        CHECK(json_get_bool(j, "x.json", "a.b.3", &b, &e) == OPTIQ_OK && b == 1);
        CHECK(json_get_bool(j, "x.json", "a.b.2", &b, &e) == OPTIQ_ERR_FORMAT);
        HAS("x.json: a.b.2 is a string, expected true or false");
        CHECK(json_get_int_or(j, "x.json", "a.b.4", 7, &v, &e) == OPTIQ_OK && v == 7); /* null = absent */
        CHECK(json_get_int(j, "x.json", "a.c", &v, &e) == OPTIQ_ERR_FORMAT);
        HAS("x.json: a.c missing");
        CHECK(json_get_int(j, "x.json", "n.x", &v, &e) == OPTIQ_ERR_FORMAT);
        HAS("x.json: n.x missing (n is a number, not an object)");
        const cJSON *o = NULL;
        CHECK(json_get_object(j, "x.json", "a.b", &o, &e) == OPTIQ_ERR_FORMAT);
        HAS("a.b is an array, expected an object");
        CHECK(json_get_array_opt(j, "x.json", "zz", &o, &e) == OPTIQ_OK && o == NULL);
        cJSON_Delete(j);
        CHECK(json_parse("{} x", 4, "y.json", &j, &e) == OPTIQ_ERR_FORMAT);
        HAS("y.json: not valid JSON (extra text");
        char *buf = NULL;
        put(root, "big.json", "{\"a\": 1234567890}");
        CHECK(json_read_file(pj(root, "big.json"), 4, &buf, NULL, &e) == OPTIQ_ERR_FORMAT);
        HAS("larger than the 4-byte limit");
        CHECK(json_read_file(pj(root, "none.json"), 100, &buf, NULL, &e) == OPTIQ_ERR_IO);
    }

    /* ---- quantization ---- */
    for (TEST_CASE("quantization: global default, affine 4/64")) {
        const char *d = q_folder("{\"group_size\": 64, \"bits\": 4}", 0, 4, 64, QMODE_AFFINE, DT_BF16);
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qc.present && strcmp(qc.source, "quantization") == 0 && qm.n == 1);
        if (qm.n == 1) {
            const qmodule *m = &qm.mods[0];
            CHECK(strcmp(m->name, "model.layers.0.mlp.down_proj") == 0 && !m->from_entry);
            CHECK(m->q.fmt.mode == QMODE_AFFINE && m->q.fmt.bits == 4 && m->q.fmt.group_size == 64);
            CHECK(m->q.n_mats == 1 && m->q.rows == 8 && m->q.cols == 64);
            CHECK(m->q.w == m->weight->data && m->q.biases == m->biases->data && m->q.scale_dtype == DT_BF16);
            CHECK(m->params == 8 * 64);
        }
        CHECK(qm.n_unquantized == 1 && strcmp(qm.unquantized[0], "model.norm") == 0);
        uint64_t np = 0;
        CHECK(quant_parameter_count(md, &qm, &np, &e) == OPTIQ_OK && np == 8 * 64 + 8);
        done(md, &qc, &qm);
    }
    for (TEST_CASE("quantization: override dict without mode is affine, not the global mode")) {
        const char *d = q_folder("{\"group_size\": 32, \"bits\": 4, \"mode\": \"mxfp4\","
                                 " \"model.layers.0.mlp.down_proj\": {\"bits\": 8, \"group_size\": 64}}",
                                 0, 8, 64, QMODE_AFFINE, DT_BF16);
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qc.dflt.mode == QMODE_MXFP4 && qc.n_entries == 1);
        CHECK(qm.n == 1 && qm.mods[0].from_entry && qm.mods[0].q.fmt.mode == QMODE_AFFINE &&
              qm.mods[0].q.fmt.bits == 8 && qm.mods[0].q.fmt.group_size == 64);
        done(md, &qc, &qm);
    }
    for (TEST_CASE("quantization: missing bits / group_size take the mode's defaults")) {
        const char *d = q_folder("{\"group_size\": 128, \"bits\": 2, \"model.layers.0.mlp.down_proj\": {\"group_size\": 32}}",
                                 0, 4, 32, QMODE_AFFINE, DT_F16);
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qm.n == 1 && qm.mods[0].q.fmt.bits == 4 && qm.mods[0].q.fmt.group_size == 32);
        done(md, &qc, &qm);
        d = q_folder("{\"model.layers.0.mlp.down_proj\": {\"mode\": \"mxfp8\"}}", 0, 8, 32, QMODE_MXFP8, DT_U8);
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qc.dflt.mode == QMODE_AFFINE && qc.dflt.bits == 4 && qc.dflt.group_size == 64);
        CHECK(qm.n == 1 && qm.mods[0].q.fmt.mode == QMODE_MXFP8 && qm.mods[0].q.fmt.bits == 8 &&
              qm.mods[0].q.fmt.group_size == 32 && qm.mods[0].q.biases == NULL);
        done(md, &qc, &qm);
    }
    for (TEST_CASE("quantization: fp modes (mxfp4, nvfp4, mxfp8) with U8 scales")) {
        struct { const char *cfg; int bits, gs; qmode m; } c[3] = {
            {"{\"mode\": \"mxfp4\", \"bits\": 4, \"group_size\": 32}", 4, 32, QMODE_MXFP4},
            {"{\"mode\": \"nvfp4\"}", 4, 16, QMODE_NVFP4},
            {"{\"mode\": \"mxfp8\", \"group_size\": 32}", 8, 32, QMODE_MXFP8},
        };
        for (int i = 0; i < 3; i++) {
            const char *d = q_folder(c[i].cfg, 0, c[i].bits, c[i].gs, c[i].m, DT_U8);
            CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s: %s", c[i].cfg, e.message);
            CHECK(qm.n == 1 && qm.mods[0].q.fmt.mode == c[i].m && qm.mods[0].q.fmt.group_size == c[i].gs &&
                  qm.mods[0].q.scale_dtype == DT_U8 && qm.mods[0].q.cols == 64);
            done(md, &qc, &qm);
        }
    }
    for (TEST_CASE("quantization: false entries")) {
        const char *d = q_folder("{\"bits\": 4, \"group_size\": 64, \"model.norm\": false, \"lm_head\": false}", 0, 4,
                                 64, QMODE_AFFINE, DT_BF16);
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qc.n_entries == 2 && qc.n_false == 2 && qm.n == 1 && qm.n_unquantized == 1);
        done(md, &qc, &qm);
        d = q_folder("{\"bits\": 4, \"group_size\": 64, \"model.layers.0.mlp.down_proj\": false}", 0, 4, 64,
                     QMODE_AFFINE, DT_BF16);
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("quantization.model.layers.0.mlp.down_proj is false (not quantized) but "
            "'model.layers.0.mlp.down_proj.scales' exists");
        done(md, &qc, &qm);
    }
    for (TEST_CASE("quantization: shape and dtype mismatches")) {
        /* scales for group size 64 but config says 32 */
        const char *d = q_folder("{\"bits\": 4, \"group_size\": 32}", 0, 4, 64, QMODE_AFFINE, DT_BF16);
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("'model.layers.0.mlp.down_proj': weight [8, 8] holds 64 4-bit values per row but scales [8, 1] with "
            "group size 32 cover 32");
        done(md, &qc, &qm);
        /* packed for 4 bits, config says 8 */
        d = q_folder("{\"bits\": 8, \"group_size\": 64}", 0, 4, 64, QMODE_AFFINE, DT_BF16);
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("holds 32 8-bit values per row");
        done(md, &qc, &qm);
        /* affine with U8 scales */
        d = q_folder("{\"bits\": 4, \"group_size\": 64}", 0, 4, 64, QMODE_AFFINE, DT_U8);
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("'model.layers.0.mlp.down_proj.scales' is U8, expected BF16, F16 or F32 for affine");
        done(md, &qc, &qm);
        /* fp mode with bf16 scales */
        d = q_folder("{\"mode\": \"mxfp4\"}", 0, 4, 32, QMODE_MXFP4, DT_BF16);
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("'model.layers.0.mlp.down_proj.scales' is BF16, expected U8 for mxfp4");
        done(md, &qc, &qm);
        /* affine tensors read as an fp mode: biases present */
        d = q_folder("{\"mode\": \"mxfp8\"}", 0, 8, 32, QMODE_AFFINE, DT_U8);
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("is mxfp8-quantized, which has no biases, but 'model.layers.0.mlp.down_proj.biases' exists");
        done(md, &qc, &qm);
        /* fp tensors read as affine: biases missing */
        d = q_folder("{\"bits\": 4, \"group_size\": 32}", 0, 4, 32, QMODE_MXFP4, DT_BF16);
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("is affine-quantized but 'model.layers.0.mlp.down_proj.biases' is missing");
        done(md, &qc, &qm);
    }
    for (TEST_CASE("quantization: biases / bias / scales shape checks")) {
        const char *d = newdir();
        put(d, "config.json", "{\"model_type\": \"x\", \"quantization\": {\"bits\": 4, \"group_size\": 64}}");
        st_writer *w = st_writer_new();
        add(w, "l.weight", DT_U32, 2, 8, 8, 0);
        add(w, "l.scales", DT_BF16, 2, 8, 1, 0);
        add(w, "l.biases", DT_F16, 2, 8, 1, 0);
        save(w, d, "model.safetensors");
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("'l.biases' is F16 [8, 1] but 'l.scales' is BF16 [8, 1]");
        done(md, &qc, &qm);
        w = st_writer_new();
        add(w, "l.weight", DT_U32, 2, 8, 8, 0);
        add(w, "l.scales", DT_BF16, 2, 4, 1, 0);
        add(w, "l.biases", DT_BF16, 2, 4, 1, 0);
        save(w, d, "model.safetensors");
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("'l.scales' has shape [4, 1] but 'l.weight' has shape [8, 8]");
        done(md, &qc, &qm);
        w = st_writer_new();
        add(w, "l.weight", DT_U32, 2, 8, 8, 0);
        add(w, "l.scales", DT_BF16, 2, 8, 1, 0);
        add(w, "l.biases", DT_BF16, 2, 8, 1, 0);
        add(w, "l.bias", DT_BF16, 1, 7, 0, 0);
        save(w, d, "model.safetensors");
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("'l.bias' is BF16 [7], expected a float vector of shape [8, 8] minus its last axis");
        done(md, &qc, &qm);
        w = st_writer_new();
        add(w, "l.scales", DT_BF16, 2, 8, 1, 0);
        save(w, d, "model.safetensors");
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("tensor 'l.scales' has no 'l.weight' beside it");
        done(md, &qc, &qm);
    }
    for (TEST_CASE("quantization: layer bias counted as a parameter; non-leaf tensors are not")) {
        const char *d = newdir();
        put(d, "config.json", "{\"model_type\": \"x\", \"quantization\": {\"bits\": 4, \"group_size\": 64}}");
        st_writer *w = st_writer_new();
        add(w, "m.l.weight", DT_U32, 2, 8, 8, 0); /* 8 x 64 unpacked */
        add(w, "m.l.scales", DT_BF16, 2, 8, 1, 0);
        add(w, "m.l.biases", DT_BF16, 2, 8, 1, 0);
        add(w, "m.l.bias", DT_BF16, 1, 8, 0, 0);
        add(w, "m.A_log", DT_F32, 1, 4, 0, 0);    /* held by non-leaf "m": mlx-lm skips it */
        add(w, "m.norm.weight", DT_F32, 1, 8, 0, 0);
        add(w, "top", DT_F32, 1, 3, 0, 0);        /* held by the root */
        save(w, d, "model.safetensors");
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qm.n == 1 && qm.mods[0].bias && qm.mods[0].params == 8 * 64 + 8);
        uint64_t np = 0;
        CHECK(quant_parameter_count(md, &qm, &np, &e) == OPTIQ_OK);
        CHECKF(np == 8 * 64 + 8 + 8, "%llu", (unsigned long long)np);
        done(md, &qc, &qm);
    }
    for (TEST_CASE("quantization: 3-D expert stacks")) {
        const char *d = q_folder("{\"bits\": 4, \"group_size\": 64}", 4, 4, 64, QMODE_AFFINE, DT_BF16);
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qm.n == 1 && qm.mods[0].q.n_mats == 4 && qm.mods[0].q.rows == 8 && qm.mods[0].q.cols == 64 &&
              qm.mods[0].params == 4 * 8 * 64);
        done(md, &qc, &qm);
        /* SwitchLinear.to_quantized defaults to 64/4 whatever the mode */
        d = q_folder("{\"bits\": 8, \"group_size\": 32, \"model.layers.0.mlp.down_proj\": {\"mode\": \"affine\"}}", 4,
                     4, 64, QMODE_AFFINE, DT_BF16);
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qm.n == 1 && qm.mods[0].q.fmt.bits == 4 && qm.mods[0].q.fmt.group_size == 64);
        done(md, &qc, &qm);
        d = q_folder("{\"model.layers.0.mlp.down_proj\": {\"mode\": \"mxfp4\"}}", 2, 4, 32, QMODE_MXFP4, DT_U8);
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("module 'model.layers.0.mlp.down_proj': mxfp4 with 4 bits and group size 64 is not a format MLX supports");
        done(md, &qc, &qm);
        /* experts disagreeing between weight and scales */
        d = newdir();
        put(d, "config.json", "{\"model_type\": \"x\", \"quantization\": {\"bits\": 4, \"group_size\": 64}}");
        st_writer *w = st_writer_new();
        add(w, "e.weight", DT_U32, 3, 4, 8, 8);
        add(w, "e.scales", DT_BF16, 3, 3, 8, 1);
        add(w, "e.biases", DT_BF16, 3, 3, 8, 1);
        save(w, d, "model.safetensors");
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("'e.scales' has shape [3, 8, 1] but 'e.weight' has shape [4, 8, 8]");
        done(md, &qc, &qm);
    }
    for (TEST_CASE("quantization: where the object comes from")) {
        const char *d = q_folder("{}", 0, 4, 64, QMODE_AFFINE, DT_BF16);
        put(d, "config.json", "{\"model_type\": \"x\", \"quantization_config\": {\"bits\": 4, \"group_size\": 64}}");
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qc.present && strcmp(qc.source, "quantization_config") == 0);
        done(md, &qc, &qm);
        put(d, "config.json",
            "{\"model_type\": \"x\", \"text_config\": {\"quantization_config\": {\"bits\": 4, \"group_size\": 64}}}");
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message);
        CHECK(qc.present && strcmp(qc.source, "text_config.quantization_config") == 0);
        done(md, &qc, &qm);
        put(d, "config.json",
            "{\"model_type\": \"x\", \"quantization\": {\"bits\": 4, \"group_size\": 64},"
            " \"quantization_config\": {\"quant_method\": \"awq\"}}");
        CHECKF(resolve(d, &md, &qc, &qm) == OPTIQ_OK, "%s", e.message); /* "quantization" wins */
        done(md, &qc, &qm);
        put(d, "config.json", "{\"model_type\": \"x\", \"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}}");
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_UNSUPPORTED);
        HAS("quantization_config.quant_method is \"gptq\"");
        done(md, &qc, &qm);
        put(d, "config.json", "{\"model_type\": \"x\"}");
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("is quantized ('model.layers.0.mlp.down_proj.scales', U32 weight) but config.json has no quantization");
        done(md, &qc, &qm);
        put(d, "config.json", "{\"model_type\": \"x\", \"quantization\": [4]}");
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT);
        HAS("quantization is an array, expected an object");
        done(md, &qc, &qm);
    }
    for (TEST_CASE("quantization: bad entries")) {
        const char *d = plain_folder();
        const struct { const char *q; optiq_status st; const char *msg; } c[] = {
            {"{\"bits\": 7, \"group_size\": 64}", OPTIQ_ERR_FORMAT, "quantization: affine with 7 bits and group size 64"},
            {"{\"bits\": \"4\"}", OPTIQ_ERR_FORMAT, "quantization.bits is a string, expected a positive integer"},
            {"{\"mode\": \"int4\"}", OPTIQ_ERR_FORMAT, "quantization.mode is \"int4\", expected one of"},
            {"{\"m.x\": {\"bits\": 1, \"group_size\": 64}}", OPTIQ_ERR_UNSUPPORTED, "quantization.m.x: 1-bit affine"},
            {"{\"m.x\": {\"bits\": 3, \"group_size\": 16}}", OPTIQ_ERR_FORMAT, "quantization.m.x: affine with 3 bits and group size 16"},
            {"{\"m.x\": {\"mode\": 4}}", OPTIQ_ERR_FORMAT, "quantization.m.x.mode is a number"},
            {"{\"lm_head\": {\"bits\": 8}}", OPTIQ_ERR_FORMAT,
             "quantization.lm_head asks for 8-bit affine but 'lm_head.weight' is BF16 and 'lm_head.scales' is missing"},
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            char cfg[512];
            snprintf(cfg, sizeof cfg, "{\"model_type\": \"x\", \"quantization\": %s}", c[i].q);
            put(d, "config.json", cfg);
            CHECKF(resolve(d, &md, &qc, &qm) == c[i].st, "%s: %s", c[i].q, e.message);
            HAS(c[i].msg);
            done(md, &qc, &qm);
        }
        /* scalar keys mlx-lm ignores; true = the default format */
        put(d, "config.json", "{\"model_type\": \"x\", \"quantization\": {\"bits\": 4, \"group_size\": 64,"
                              " \"note\": \"x\", \"model.norm\": true}}");
        CHECK(resolve(d, &md, &qc, &qm) == OPTIQ_ERR_FORMAT); /* true asks for quantization of a float weight */
        HAS("quantization.model.norm asks for 4-bit affine");
        done(md, &qc, &qm);
    }

    /* ---- fixtures converted by mlx-lm ---- */
    for (TEST_CASE("fixture tiny-mixed (mixed_3_6) matches mlx-lm's reference.json")) check_reference("tests/fixtures/models/tiny-mixed");
    for (TEST_CASE("fixture tiny-q4 (4-bit gs32, tied, sidecar) matches mlx-lm's reference.json")) {
        check_reference("tests/fixtures/models/tiny-q4");
        CHECK(open_dir(test_path("tests/fixtures/models/tiny-q4"), &md) == OPTIQ_OK);
        if (md) {
            const st_file *sc = model_dir_sidecar(md);
            CHECK(sc && st_count(sc) == 9 && strcmp(st_metadata(sc, "format"), "mlx") == 0);
            CHECK(model_dir_find(md, "vision_tower.merger.ln_q.weight", NULL) == NULL);
            CHECK(model_dir_find(md, "lm_head.weight", NULL) == NULL); /* tied */
            CHECK(strcmp(model_dir_chat_template_source(md), "chat_template.jinja") == 0);
        }
        model_dir_close(md);
        md = NULL;
    }

    nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return test_finish();
}
